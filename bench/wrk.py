"""One wrk run against a loopback URL, read into numbers (wrk from the distribution: `make bench` installs it)."""

from __future__ import annotations

import re
import subprocess


def latency_ms(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"wrk printed a latency this script cannot read: {text!r}")
    return float(match.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}[match.group(2)]


def run_wrk(url: str, seconds: float, connections: int, token: str) -> dict[str, float]:
    """`wrk -t1 -cN -dS --latency` with a bearer token: rps, p50_ms, p99_ms, requests, non2xx, socket_errors."""
    done = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency",
                           "-H", f"Authorization: Bearer {token}", url],
                          capture_output=True, text=True, timeout=seconds + 60, check=False)
    out = done.stdout
    found = {name: re.search(pattern, out, re.M) for name, pattern in {
        "rps": r"Requests/sec:\s+([0-9.]+)", "p50": r"^\s*50%\s+(\S+)", "p99": r"^\s*99%\s+(\S+)",
        "requests": r"(\d+) requests in"}.items()}
    if done.returncode != 0 or any(match is None for match in found.values()):
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{out}\n{done.stderr}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"rps": float(found["rps"].group(1)),  # type: ignore[union-attr]
            "p50_ms": latency_ms(found["p50"].group(1)), "p99_ms": latency_ms(found["p99"].group(1)),  # type: ignore[union-attr]
            "requests": int(found["requests"].group(1)),  # type: ignore[union-attr]
            "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": sum(int(n) for n in socket_errors.groups()) if socket_errors else 0}
