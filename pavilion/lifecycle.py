"""Process lifecycle: run a service until a signal. The first SIGTERM/SIGINT drains, the second forces."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from pavilion.log import get_logger

log = get_logger(__name__)

ServiceMain = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel the tasks (None: nothing there) and wait until each has ended: background loops a service
    or store stops on its way out, so nothing of theirs runs after it."""
    running = [task for task in tasks if task is not None]
    for task in running:
        task.cancel()
    for task in running:
        with contextlib.suppress(asyncio.CancelledError):
            await task


def install_event_loop_policy() -> str:
    """Opt-in: make `asyncio.run` in this process use uvloop's event loop when uvloop is installed.

    grpc.aio runs on it, and a service's per-request loop work (callbacks, socket reads and writes)
    costs less there. Call it before `run_until_stopped`; returns the loop in use ("uvloop" or "asyncio").
    """
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def run_until_stopped(main: ServiceMain) -> int:
    """Run `main(stop)`; `stop` is set on the first signal so `main` can drain and return.

    A second signal cancels `main` outright. Returns a process exit code.
    """

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()

        def on_signal(signum: int) -> None:
            if stop.is_set():
                log.warning("forced_shutdown", signal=signal.Signals(signum).name)
                if task is not None:
                    task.cancel()
            else:
                log.info("draining", signal=signal.Signals(signum).name)
                stop.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        await main(stop)

    try:
        asyncio.run(runner())
    except (asyncio.CancelledError, KeyboardInterrupt):
        return 1
    return 0
