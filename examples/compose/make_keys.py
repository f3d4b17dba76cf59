"""Make the key pairs of the route YAML's local tenants on the compose volume `keys`, as `make run` does.

docker-compose.yml runs it once, as root (an empty named volume is root's), before ext_authz starts:

    python /etc/pavilion/compose/make_keys.py --config /etc/pavilion/routes \
        --state-dir /var/lib/pavilion/keys --owner 10001

A tenant is local when its `jwks: {file: ...}` lies in --state-dir (extauthz/local_keys.py). Existing
keys are kept, so tokens stay valid across `docker compose up`. The files are handed to --owner (the
image's user), which runs ext_authz and `pavilion token`; the private key stays readable by it only.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from controlplane.config.load import load_config
from extauthz.local_keys import ensure_local_key, is_local, private_key_path
from pavilion.errors import ConfigErrors


def make_keys(config_dir: str, state_dir: str, owner: int | None) -> list[str]:
    """One line per local tenant: its id and whether its key was made now or kept."""
    config = load_config(config_dir)
    lines = []
    for tenant in config.tenants:
        if not is_local(tenant, state_dir):
            continue
        made = ensure_local_key(tenant)
        if owner is not None:
            for path in (Path(tenant.jwks.file or ""), private_key_path(tenant)):
                os.chown(path, owner, owner)
        lines.append(f"tenant {tenant.id}: key {'made' if made else 'kept'} in {state_dir}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--config", required=True, help="the route YAML directory")
    parser.add_argument("--state-dir", required=True, help="where local tenants' key files lie")
    parser.add_argument("--owner", type=int, default=None, help="uid (and gid) to hand the key files to")
    args = parser.parse_args(argv)
    try:
        lines = make_keys(args.config, args.state_dir, args.owner)
    except ConfigErrors as exc:
        print("\n".join(str(error) for error in exc.errors), file=sys.stderr)
        return 1
    if not lines:
        print(f"no tenant's jwks file lies in {args.state_dir}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
