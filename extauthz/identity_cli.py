"""`pavilion identity-key`: make the key identity assertions are signed with, in a file or in an HSM.

    pavilion identity-key --out keys/identity.pem [--alg ES256]
    pavilion identity-key --pkcs11-module /usr/lib/softhsm/libsofthsm2.so --token pavilion \\
        --label identity-2026 --pin-file secrets/hsm-pin [--alg ES256]

A file key is written with mode 0600 (never over an existing file without --force). A token key pair
is generated inside the token with CKA_SENSITIVE true and CKA_EXTRACTABLE false: the private key never
leaves it. Either way the public JWK (with its kid) is printed, the private key never.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: `pavilion --help` loads this module
    from extauthz.identity_config import Pkcs11KeySource

__all__ = ["generate_in_token", "register", "write_key_file"]

_ALGS = ("ES256", "RS256", "PS256")


def write_key_file(path: str, alg: str, *, force: bool = False) -> dict[str, Any]:
    """Write a new private key to `path` (0600, created so: never readable by others, not even briefly)."""
    from extauthz.identity_keys import public_key_jwk
    from extauthz.signing import generate_key, private_key_pem

    private, _jwk = generate_key(alg, rsa_bits=3072)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    descriptor = os.open(path, flags, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        os.fchmod(out.fileno(), 0o600)  # an existing file (--force) keeps its mode otherwise
        out.write(private_key_pem(private))
    return public_key_jwk(private.public_key(), alg)


def generate_in_token(source: Pkcs11KeySource, alg: str) -> dict[str, Any]:
    """Generate a key pair labelled `source.key` inside the token; ConfigError when the label is taken."""
    from pkcs11 import Attribute, KeyType, ObjectClass
    from pkcs11 import exceptions as p11
    from pkcs11.util.ec import encode_named_curve_parameters

    from extauthz.pkcs11_signer import Pkcs11SigningKey, pkcs11_library, read_pin
    from pavilion.errors import ConfigError

    pin = read_pin(source.pin_file, "--pin-file")
    try:
        token = pkcs11_library(source.module).get_token(token_label=source.token)
    except (p11.NoSuchToken, p11.MultipleTokensReturned) as exc:
        raise ConfigError(f"no one token labelled {source.token!r} in {source.module}: {type(exc).__name__}") from None
    private_template = {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.SIGN: True,
                        Attribute.PRIVATE: True, Attribute.TOKEN: True}
    public_template = {Attribute.VERIFY: True, Attribute.TOKEN: True}
    with token.open(user_pin=pin, rw=True) as session:
        if list(session.get_objects({Attribute.LABEL: source.key, Attribute.CLASS: ObjectClass.PRIVATE_KEY})):
            raise ConfigError(f"the token {source.token!r} already holds a key labelled {source.key!r}")
        if alg == "ES256":
            parameters = session.create_domain_parameters(
                KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")}, local=True)
            parameters.generate_keypair(store=True, label=source.key, private_template=private_template,
                                        public_template=public_template)
        else:
            session.generate_keypair(KeyType.RSA, 3072, store=True, label=source.key,
                                     private_template=private_template, public_template=public_template)
    opened = Pkcs11SigningKey.open(source, alg if alg != "ES256" else None)
    try:
        return opened.jwk
    finally:
        opened.close()


def register(subparsers: Any) -> None:
    command = subparsers.add_parser("identity-key", help="make the key ext_authz signs identity assertions with "
                                    "(a PEM file, or a key pair inside a PKCS#11 token)")
    command.add_argument("--alg", choices=_ALGS, default="ES256", help="ES256 (P-256, default), RS256 or PS256 "
                         "(RSA 3072)")
    command.add_argument("--out", metavar="FILE", help="write a PEM private key here (mode 0600)")
    command.add_argument("--force", action="store_true", help="with --out: replace an existing file")
    command.add_argument("--pkcs11-module", metavar="PATH", help="generate inside a token of this PKCS#11 module")
    command.add_argument("--token", help="with --pkcs11-module: the token's label")
    command.add_argument("--label", help="with --pkcs11-module: the new key pair's label")
    command.add_argument("--pin-file", help="with --pkcs11-module: a file holding the user PIN")
    command.set_defaults(func=_identity_key)


def _identity_key(args: argparse.Namespace) -> int:
    from extauthz.identity_config import Pkcs11KeySource
    from pavilion.errors import ConfigError

    if bool(args.out) == bool(args.pkcs11_module):
        print("identity-key: give --out FILE, or --pkcs11-module with --token, --label and --pin-file",
              file=sys.stderr)
        return 2
    try:
        if args.out:
            jwk = write_key_file(args.out, args.alg, force=args.force)
        else:
            if not (args.token and args.label and args.pin_file):
                print("identity-key: --pkcs11-module needs --token, --label and --pin-file", file=sys.stderr)
                return 2
            source = Pkcs11KeySource(module=args.pkcs11_module, token=args.token, key=args.label,
                                     pin_file=args.pin_file)
            jwk = generate_in_token(source, args.alg)
    except FileExistsError:
        print(f"identity-key: {args.out} exists (give --force to replace it)", file=sys.stderr)
        return 2
    except (ConfigError, OSError) as exc:
        print(f"identity-key: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(jwk, indent=2))
    return 0
