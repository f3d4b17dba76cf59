"""Pavilion's xDS control plane: route YAML in, Envoy v3 resources out, served over ADS."""
