"""Several worker processes serving one port (SO_REUSEPORT), for the services on Envoy's request path.

Python runs one core per process; `--workers N` starts N copies of a service that all bind the same
port, and the kernel spreads connections across them. The parent only supervises: it forwards
SIGTERM/SIGINT (so each worker drains), and sets up prometheus-client's multiprocess directory so one
admin server in the parent reports the sum of all workers.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from pavilion.log import get_logger

log = get_logger(__name__)


def shared_directory() -> str | None:
    """The directory the workers and their parent share (metrics, statuses); None without --workers."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def prepare_multiprocess_metrics() -> str:
    """Create and export PROMETHEUS_MULTIPROC_DIR before any worker starts; returns the directory."""
    directory = tempfile.mkdtemp(prefix="pavilion-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    return directory


def run_workers(count: int, target: Callable[..., int | None], args: Sequence[Any] = (),
                on_started: Callable[[], None] | None = None) -> int:
    """Run `target(worker_index, *args)` in `count` spawned processes and wait for all of them.

    Returns 0 when every worker exited 0, else the first non-zero exit code.
    """
    metrics_dir = shared_directory() or prepare_multiprocess_metrics()
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker_main, args=(target, index, tuple(args)), daemon=False)
                 for index in range(count)]
    for process in processes:
        process.start()
    log.info("workers_started", count=count, pids=[p.pid for p in processes])

    def forward(signum: int, _frame: object) -> None:
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        if on_started is not None:
            on_started()
        for process in processes:
            process.join()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        shutil.rmtree(metrics_dir, ignore_errors=True)
    codes = [p.exitcode or 0 for p in processes]
    return next((code for code in codes if code), 0)


def _worker_main(target: Callable[..., int | None], index: int, args: tuple[Any, ...]) -> None:
    raise SystemExit(target(index, *args) or 0)
