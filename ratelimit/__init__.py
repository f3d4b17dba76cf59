"""Envoy's global rate-limit gRPC service, compatible with envoyproxy/ratelimit."""
