"""Typed settings, read once from the environment and the command line, then passed down.

Every field has a default and an environment name (`PAVILION_` + the field name in upper case).
Nothing outside this module reads `os.environ`; services subclass `Settings` for their own fields.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from typing import Any, Self

ENV_PREFIX = "PAVILION_"


@dataclasses.dataclass(frozen=True)
class Settings:
    log_level: str = "info"
    log_format: str = "json"  # json | console
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0  # 0: no metrics HTTP server
    grpc_host: str = "127.0.0.1"
    drain_seconds: float = 5.0  # grace given to in-flight RPCs on the first SIGTERM

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        """Defaults, then `PAVILION_*` variables, then `overrides` that are not None (the CLI's flags)."""
        env = os.environ if env is None else env
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw = env.get(ENV_PREFIX + field.name.upper())
            if raw is not None:
                values[field.name] = _coerce(raw, hints[field.name], field.name)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _coerce(raw: str, hint: Any, name: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if raw == "":
            return None
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    try:
        if hint is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if hint in (int, float, str):
            return hint(raw)
    except ValueError as exc:
        raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {hint.__name__}") from exc
    raise TypeError(f"setting {name} has a type from_env cannot read: {hint}")
