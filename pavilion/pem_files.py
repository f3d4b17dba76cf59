"""Reading a PEM file named by config or a flag (a certificate, a key, a CA bundle): one reader for the
control plane's listener and xDS TLS files and the services' xDS client files."""

from __future__ import annotations

from pathlib import Path

__all__ = ["MAX_PEM_BYTES", "read_pem_file"]

MAX_PEM_BYTES = 1024 * 1024  # a chain or bundle is kilobytes; a larger file is not one


def read_pem_file(path: Path) -> bytes:
    """The bytes of a PEM file; ValueError (naming the path, never the content) when it is not a regular
    file (a FIFO would block the load for ever), cannot be read, or is too large to be PEM."""
    if path.exists() and not path.is_file():
        raise ValueError(f"{path} is not a regular file")
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    if len(data) > MAX_PEM_BYTES:
        raise ValueError(f"{path} is larger than {MAX_PEM_BYTES} bytes; not a PEM file")
    return data
