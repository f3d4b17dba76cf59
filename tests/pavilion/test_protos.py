"""The committed pavilion/v1/*_pb2.py(i) are what protos/pavilion/v1/*.proto compile to today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"
GENERATED = ROOT / "pavilion" / "v1"


def compile_into(out: Path) -> None:
    sources = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / "pavilion" / "v1").glob("*.proto"))
    plugin = Path(sys.executable).parent / "protoc-gen-mypy"
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", str(PROTOS), f"--plugin=protoc-gen-mypy={plugin}",
                    f"--python_out={out}", f"--mypy_out={out}", *sources],
                   check=True, capture_output=True, cwd=PROTOS)


def test_committed_code_is_current(tmp_path: Path) -> None:
    compile_into(tmp_path)
    fresh = {p.name: p.read_bytes() for p in (tmp_path / "pavilion" / "v1").iterdir()}
    committed = {p.name: p.read_bytes() for p in GENERATED.iterdir() if p.name.endswith((".py", ".pyi"))
                 and "_pb2" in p.name}
    assert fresh, "protoc produced nothing"
    assert sorted(committed) == sorted(fresh), "run `make protos`: generated files differ in name"
    stale = sorted(name for name in fresh if committed[name] != fresh[name])
    assert not stale, f"run `make protos`: {stale} are stale"


def test_type_urls_name_the_messages() -> None:
    from controlplane import resources as urls
    from pavilion.v1 import ratelimit_pb2, tenant_pb2

    assert f"type.googleapis.com/{tenant_pb2.TenantPolicy.DESCRIPTOR.full_name}" == urls.TENANT_POLICY
    assert f"type.googleapis.com/{ratelimit_pb2.RateLimitPolicy.DESCRIPTOR.full_name}" == urls.RATE_LIMIT_POLICY
