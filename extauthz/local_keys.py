"""Signing keys generated on this machine for a demo tenant, for `pavilion run` and `pavilion token`.

A tenant whose `jwks: {file: PATH}` lies in the local state directory (`.run/` by default) is a
local tenant: `pavilion run` creates its key pair when missing, the public half as the JWK Set at
PATH (which ext_authz reads like any key file) and the private half beside it as
`<tenant>-key.pem`, readable by its owner only. `pavilion token` signs with that private key. The
private key is never printed or logged.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from extauthz.signing import PrivateKey, generate_key, jwk_thumbprint, load_private_key, private_key_pem, public_jwk
from extauthz.tenant import Tenant

__all__ = ["DEFAULT_STATE_DIR", "ensure_local_key", "is_local", "load_local_key", "private_key_path",
           "signing_algorithm"]

DEFAULT_STATE_DIR = ".run"
# Preferred first: ES256 keys are generated in a millisecond and sign fast.
_GENERATED = ("ES256", "ES384", "EdDSA", "RS256", "PS256", "ES512", "RS384", "RS512", "PS384", "PS512")


def is_local(tenant: Tenant, state_dir: str | Path = DEFAULT_STATE_DIR) -> bool:
    """True when the tenant's key file lies in `state_dir`, so its keys are ours to generate."""
    if tenant.jwks.file is None:
        return False
    state = Path(state_dir).resolve()
    return Path(tenant.jwks.file).resolve().parent == state


def private_key_path(tenant: Tenant) -> Path:
    if tenant.jwks.file is None:
        raise ValueError(f"tenant {tenant.id} has no jwks file, so no local private key")
    return Path(tenant.jwks.file).parent / f"{tenant.id}-key.pem"


def signing_algorithm(tenant: Tenant) -> str:
    """The algorithm a generated key uses: the tenant's first allowed one in our order of preference."""
    return next((alg for alg in _GENERATED if tenant.allows_algorithm(alg)), tenant.algorithms[0])


def ensure_local_key(tenant: Tenant) -> bool:
    """Create the tenant's key pair unless both halves exist; True when a new key was made.

    An existing private key is kept and its JWK Set rewritten when missing, so tokens signed earlier
    stay valid across restarts.
    """
    key_path = private_key_path(tenant)
    jwks_path = Path(tenant.jwks.file or "")
    alg = signing_algorithm(tenant)
    created = False
    if key_path.exists():
        private = load_local_key(key_path)
    else:
        private, _jwk = generate_key(alg)
        key_path.parent.mkdir(parents=True, exist_ok=True)
        _write_private(key_path, private_key_pem(private))
        created = True
    if created or not jwks_path.exists():
        jwk = public_jwk(private, alg=alg)
        jwk["kid"] = jwk_thumbprint(jwk)
        _write_atomic(jwks_path, json.dumps({"keys": [jwk]}, indent=2) + "\n")
    return created


def load_local_key(path: Path) -> PrivateKey:
    return load_private_key(path.read_bytes())


def _write_private(path: Path, pem: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)


def _write_atomic(path: Path, text: str) -> None:
    """Readers (ext_authz polls the file) see the old or the new set, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
