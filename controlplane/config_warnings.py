"""What `pavilion validate` and `pavilion plan` warn about (on stderr, exit code unchanged): a config that
loads and is served, but fails clients soon (a certificate about to expire) or fails some of them now (a
route host its listener's certificate does not name)."""

from __future__ import annotations

from controlplane.cert_expiry import expiry_warnings
from controlplane.compression_warnings import compression_warnings
from controlplane.config.model import Config
from controlplane.fault_warnings import fault_warnings
from controlplane.local_limit_warnings import local_limit_warnings
from controlplane.tls_coverage import host_coverage_warnings

__all__ = ["config_warnings"]


def config_warnings(config: Config) -> list[str]:
    """Every warning line for `config`, each starting with the FILE:LINE:COL of the entry it is about."""
    return (expiry_warnings(config) + host_coverage_warnings(config) + local_limit_warnings(config)
            + compression_warnings(config) + fault_warnings(config))
