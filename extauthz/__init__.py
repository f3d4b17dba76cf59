"""ext_authz: Envoy's external authorization gRPC service (multi-tenant JWT validation)."""
