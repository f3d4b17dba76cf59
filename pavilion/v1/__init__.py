"""Pavilion's own xDS resource types, generated from protos/pavilion/v1/*.proto (`make protos`).

    tenant_pb2.TenantPolicy          type.googleapis.com/pavilion.v1.TenantPolicy      (ext_authz)
    ratelimit_pb2.RateLimitPolicy    type.googleapis.com/pavilion.v1.RateLimitPolicy   (ratelimit)
"""
