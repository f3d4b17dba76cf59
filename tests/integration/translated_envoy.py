"""An Envoy running exactly what `translate` gives a node, from a static bootstrap (no control plane),
for tests of translation semantics in the real proxy."""

from __future__ import annotations

import tempfile

from google.protobuf import json_format

from controlplane.config.model import Config
from controlplane.envoy_check import static_bootstrap
from tests.procs import ENVOY, Proc


def start_envoy(config: Config, region: str) -> Proc:
    """Envoy for a node in `region`, listening on every listener of `config` when returned."""
    with tempfile.NamedTemporaryFile("w", prefix="envoy-translated-", suffix=".json", delete=False) as handle:
        handle.write(json_format.MessageToJson(static_bootstrap(config, region)))
    envoy = Proc([ENVOY, "-c", handle.name, "--disable-hot-restart", "--concurrency", "1", "--log-level", "warn"],
                 name="envoy-translated")
    try:
        for listener in config.listeners:
            envoy.wait_port(listener.port)
    except (RuntimeError, TimeoutError):
        envoy.stop()
        raise
    return envoy
