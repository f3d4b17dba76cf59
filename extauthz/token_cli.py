"""`pavilion token --tenant demo`: a signed token for a tenant whose key was generated on this machine.

The tenant (issuer, audiences, algorithms) is read from the route YAML directory, the private key
from beside the tenant's JWK Set file (see local_keys.py), or from `--key FILE`. Only the token is
printed, on stdout, so `TOKEN=$(pavilion token --tenant demo)` works.

DPoP (RFC 9449) for testing: `pavilion dpop-key KEY.pem` makes a client key, `pavilion token --dpop-key
KEY.pem` binds a token to it (cnf.jkt), and `pavilion dpop-proof --key KEY.pem --method GET --url URL
--token T` prints the proof for one request (each proof is accepted once).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = "examples/gateway"
DEFAULT_SUBJECT = "demo-user"


def register(subparsers: Any) -> None:
    token = subparsers.add_parser("token", help="print a signed token of a tenant whose key `pavilion run` made")
    token.add_argument("--tenant", required=True, help="tenant id in the route YAML")
    token.add_argument("--config", default=DEFAULT_CONFIG, help=f"route YAML directory (default {DEFAULT_CONFIG})")
    token.add_argument("--subject", default=DEFAULT_SUBJECT, help=f"the token's sub (default {DEFAULT_SUBJECT})")
    token.add_argument("--ttl", default="1h", help="lifetime, e.g. 10m or 1h (default 1h)")
    token.add_argument("--audience", default=None, help="the token's aud (default: the tenant's first audience)")
    token.add_argument("--claims", default=None, metavar="JSON", help='extra claims, e.g. \'{"email": "a@b.test"}\'')
    token.add_argument("--bind-certificate", default=None, metavar="PEM",
                       help="bind the token to this client certificate (RFC 8705 cnf x5t#S256)")
    token.add_argument("--dpop-key", default=None, metavar="PEM",
                       help="bind the token to this DPoP client key (RFC 9449 cnf jkt); see dpop-proof")
    token.add_argument("--key", default=None, metavar="FILE",
                       help="PEM private key (default: <tenant>-key.pem beside the tenant's JWK Set file)")
    token.set_defaults(func=_token)

    proof = subparsers.add_parser("dpop-proof", help="print a DPoP proof (RFC 9449) for one request, for testing")
    proof.add_argument("--key", required=True, metavar="PEM", help="the client's private key (see dpop-key)")
    proof.add_argument("--method", default="GET", help="the request method (default GET)")
    proof.add_argument("--url", required=True, help="the request URL, e.g. http://127.0.0.1:10000/orders")
    proof.add_argument("--token", default=None, help="the access token the proof goes with (sets ath)")
    proof.add_argument("--nonce", default=None, help="the DPoP-Nonce the server gave, for tenants asking for one")
    proof.set_defaults(func=_dpop_proof)

    key = subparsers.add_parser("dpop-key", help="write a new DPoP client key (ES256, PEM, owner-only)")
    key.add_argument("path", metavar="PEM", help="where to write it (must not exist)")
    key.set_defaults(func=_dpop_key)


def _fail(message: str, command: str = "token") -> int:
    print(f"pavilion {command}: {message}", file=sys.stderr)
    return 1


def _dpop_private(path: str) -> Any:
    """The private key at `path`; ValueError naming the file (never its content)."""
    from extauthz.dpop_sign import proof_algorithm
    from extauthz.signing import load_private_key

    try:
        private = load_private_key(Path(path).read_bytes())
        proof_algorithm(private)
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"{path}: not a usable PEM private key ({type(exc).__name__})") from None
    return private


def _dpop_proof(args: argparse.Namespace) -> int:
    from extauthz.dpop_proof import normalise_url
    from extauthz.dpop_sign import make_proof

    try:
        private = _dpop_private(args.key)
    except ValueError as exc:
        return _fail(f"--key {exc}", "dpop-proof")
    if normalise_url(args.url) is None:
        return _fail(f"--url {args.url!r} is not an http(s) URL", "dpop-proof")
    url = args.url.partition("#")[0].partition("?")[0]  # RFC 9449 4.2: htu without query and fragment
    claims = {"nonce": args.nonce} if args.nonce is not None else None
    print(make_proof(private, method=args.method, url=url, access_token=args.token, claims=claims))
    return 0


def _dpop_key(args: argparse.Namespace) -> int:
    import os

    from cryptography.hazmat.primitives.asymmetric import ec

    from extauthz.signing import private_key_pem

    try:
        fd = os.open(args.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        return _fail(f"cannot create {args.path}: {exc.strerror}", "dpop-key")
    with os.fdopen(fd, "wb") as out:
        out.write(private_key_pem(ec.generate_private_key(ec.SECP256R1())))
    return 0


def _token(args: argparse.Namespace) -> int:
    from controlplane.config.load import load_config
    from extauthz.local_keys import load_local_key, private_key_path, signing_algorithm
    from extauthz.signing import jwk_thumbprint, public_jwk, sign_token
    from pavilion.durations import parse_duration
    from pavilion.errors import ConfigErrors

    try:
        ttl = parse_duration(args.ttl)
    except ValueError as exc:
        return _fail(f"--ttl: {exc}")
    extra: dict[str, Any] = {}
    if args.claims is not None:
        try:
            extra = json.loads(args.claims)
        except ValueError as exc:
            return _fail(f"--claims is not JSON: {exc}")
        if not isinstance(extra, dict):
            return _fail("--claims must be a JSON object")
    if args.bind_certificate is not None:
        from extauthz.cert_binding import THUMBPRINT_MEMBER, pem_thumbprint

        try:
            extra["cnf"] = {THUMBPRINT_MEMBER: pem_thumbprint(Path(args.bind_certificate).read_bytes())}
        except (OSError, ValueError) as exc:
            return _fail(f"--bind-certificate {args.bind_certificate}: not a PEM certificate ({type(exc).__name__})")
    if args.dpop_key is not None:
        from extauthz.dpop_sign import key_thumbprint

        try:
            jkt = key_thumbprint(_dpop_private(args.dpop_key))
        except ValueError as exc:
            return _fail(f"--dpop-key {exc}")
        extra["cnf"] = {**extra.get("cnf", {}), "jkt": jkt}
    try:
        config = load_config(args.config)
    except ConfigErrors as exc:
        return _fail(f"{args.config} does not load:\n" + "\n".join(str(e) for e in exc.errors))
    tenant = next((t for t in config.tenants if t.id == args.tenant), None)
    if tenant is None:
        known = ", ".join(t.id for t in config.tenants) or "none"
        return _fail(f"no tenant {args.tenant!r} in {args.config} (tenants: {known})")
    if ttl > tenant.max_lifetime:
        return _fail(f"--ttl {args.ttl} is above tenant {tenant.id}'s max_lifetime ({tenant.max_lifetime:g} s)")
    if args.key is not None:
        key_path = Path(args.key)
    elif tenant.jwks.file is not None:
        key_path = private_key_path(tenant)
    else:
        return _fail(f"tenant {tenant.id} has no jwks file, so no local key: give --key FILE")
    if not key_path.exists():
        return _fail(f"no private key at {key_path}; `pavilion run --config {args.config}` creates it")
    try:
        private = load_local_key(key_path)
    except (OSError, ValueError, TypeError) as exc:
        return _fail(f"cannot read the private key {key_path}: {type(exc).__name__}")
    alg = signing_algorithm(tenant)
    jwk = public_jwk(private, alg=alg)
    now = int(time.time())
    claims: dict[str, Any] = {"iss": tenant.issuer, "aud": args.audience or tenant.audiences[0],
                              "sub": args.subject, "iat": now, "exp": now + int(ttl), "jti": uuid.uuid4().hex}
    claims.update(extra)
    try:
        token = sign_token(claims, private, alg, jwk_thumbprint(jwk))
    except ValueError as exc:
        return _fail(f"{exc} (tenant {tenant.id} allows {', '.join(tenant.algorithms)})")
    print(token)
    return 0
