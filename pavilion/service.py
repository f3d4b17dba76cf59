"""How a request-path service (ext_authz, ratelimit) runs as a process: its config from a file or
from the control plane over xDS, one process or N workers on one port, and its config file watch.

Each service keeps only what is its own: its settings fields, `serve(settings, stop, admin=...)`,
and a check of its config file run once in the parent so errors show before any worker starts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import watchfiles
from aiohttp import web

from pavilion import worker_status
from pavilion.admin import AdminServer
from pavilion.config_files import yaml_files
from pavilion.errors import ConfigError
from pavilion.lifecycle import cancel_and_wait, run_until_stopped
from pavilion.log import configure_logging, get_logger
from pavilion.metrics import any_worker_serving
from pavilion.server_tls import ServerTLS, load_server_tls
from pavilion.settings import Settings
from pavilion.workers import run_workers, shared_directory
from pavilion.xds_client import xds_credentials
from pavilion.xds_client_tls import XdsClientCredentials

log = get_logger(__name__)


@dataclasses.dataclass(frozen=True)
class ServiceSettings(Settings):
    config: str = ""      # a file or directory; or
    xds: str = ""         # HOST:PORT of the control plane, which then sends the config
    node_id: str = ""     # xDS node id; default <role>-<hostname>-<pid>
    region: str = ""      # xDS node locality region
    xds_ca: str = ""           # CA bundle (PEM) to reach the control plane over TLS; plaintext when empty
    xds_client_cert: str = ""  # with xds_ca: a client certificate, for a control plane requiring one (mTLS)
    xds_client_key: str = ""
    # PEM files of the gRPC port's own TLS (health included; the admin HTTP port stays plaintext);
    # a client CA makes it require client certificates (mTLS). Renewed files are served without a restart.
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    port: int = 0
    workers: int = 1

    def xds_node_id(self, role: str) -> str:
        return self.node_id or f"{role}-{socket.gethostname()}-{os.getpid()}"

    def xds_credentials(self) -> XdsClientCredentials | None:
        return xds_credentials(self.xds_ca, self.xds_client_cert, self.xds_client_key)

    def server_tls(self) -> ServerTLS | None:
        """The gRPC port's TLS (None: plaintext); ConfigError names the flag of a bad or unpaired file."""
        return load_server_tls(self.tls_cert, self.tls_key, self.tls_client_ca)


S = TypeVar("S", bound=ServiceSettings)
Serve = Callable[[S, asyncio.Event], Coroutine[Any, Any, None]]


def run_service(settings: S, serve: Callable[..., Coroutine[Any, Any, None]], *, role: str,
                check_config: Callable[[str], object],
                parent_routes: Callable[[S], Coroutine[Any, Any, list[web.RouteDef]]] | None = None) -> int:
    """Run `serve(settings, stop, admin=...)` in this process or in `settings.workers` processes.

    `check_config(path)` loads the config file once, here, so a bad file fails fast with file:line
    errors (exit 2) instead of in every worker. `serve` must be a module-level function (workers are
    spawned, and get it by reference). With workers, `parent_routes(settings)` adds service pages to the
    parent's admin server (made on its loop).
    """
    if bool(settings.config) == bool(settings.xds):
        log.error("choose_one_config_source", detail="give --config PATH or --xds HOST:PORT, not both")
        return 2
    try:
        settings.xds_credentials()  # a missing or unreadable file fails here, once, not in every worker
    except ConfigError as exc:
        log.error("xds_tls_rejected", detail=str(exc))
        return 2
    try:
        settings.server_tls()  # the same for the port's own TLS; each worker reads the files again
    except ConfigError as exc:
        log.error("server_tls_rejected", detail=str(exc))
        return 2
    if settings.config:
        settings = dataclasses.replace(settings, config=os.path.abspath(settings.config))
        try:
            check_config(settings.config)
        except ConfigError as exc:
            log.error("config_rejected", path=settings.config, errors=str(exc).splitlines())
            return 2
    if settings.workers <= 1:
        return run_until_stopped(lambda stop: serve(settings, stop))
    if settings.port == 0:
        log.error("workers_need_a_port", workers=settings.workers)
        return 2
    on_started = (lambda: serve_metrics_in_thread(settings, parent_routes)) if settings.metrics_port else None
    return run_workers(settings.workers, _worker, args=(settings, serve, role), on_started=on_started)


def _worker(index: int, settings: ServiceSettings, serve: Callable[..., Coroutine[Any, Any, None]],
            role: str) -> int:
    configure_logging(settings.log_level, settings.log_format)
    log.info("worker_starting", worker=index)
    if settings.xds:  # each worker runs its own xDS client, under its own node id
        base = settings.node_id or f"{role}-{socket.gethostname()}"
        settings = dataclasses.replace(settings, node_id=f"{base}-{os.getpid()}")
    # The parent serves the metrics of every worker, summed, and their statuses.
    directory = shared_directory()

    async def serve_and_publish(stop: asyncio.Event) -> None:
        publisher = asyncio.create_task(worker_status.publish(directory, stop)) if directory else None
        try:
            await serve(settings, stop, admin=False)
        finally:
            await cancel_and_wait(publisher)

    return run_until_stopped(serve_and_publish)


def serve_metrics_in_thread(settings: S, parent_routes: Callable[[S], Coroutine[Any, Any, list[web.RouteDef]]]
                            | None = None) -> None:
    """The parent's admin server on a daemon thread's own loop: the workers' metrics (multiprocess mode
    sums them), their statuses on /status (pavilion.worker_status), and /readyz once a worker's gRPC
    server is started. A worker starts it only when it can answer (with --xds, after the first rules or
    tenants arrived): what a single process's /readyz waits for. (Its port alone would not tell: it is
    bound, and accepts connections, before that.)"""

    directory = shared_directory()

    def run() -> None:
        async def main() -> None:
            routes = worker_status.routes(directory) if directory else []
            if parent_routes is not None:
                routes += await parent_routes(settings)
            await AdminServer(settings.metrics_host, settings.metrics_port, ready=any_worker_serving,
                              routes=routes).start()
            await asyncio.Event().wait()

        asyncio.run(main())

    threading.Thread(target=run, name="admin", daemon=True).start()


async def config_changes(path: Path, stop: asyncio.Event) -> AsyncIterator[None]:
    """Yields each time the config under `path` (a file, or a directory of YAML files) changes.

    A file is watched through its directory: editors, `mv` and Kubernetes' ConfigMap symlink swap
    replace the file, which ends a watch on the file itself. Touching without changing yields nothing.
    The content compared is that of the files the loaders read (`yaml_files`), so a folder that
    appears as a symlink (a ConfigMap key projected to `teams/a.yaml`) counts when it appears.
    """
    last = await asyncio.to_thread(_content, path)
    watched = path if await asyncio.to_thread(path.is_dir) else path.parent
    async for _changes in watchfiles.awatch(watched, stop_event=stop, debounce=200, step=50):
        content = await asyncio.to_thread(_content, path)
        if content != last:
            last = content
            yield


def _content(path: Path) -> tuple[tuple[str, bytes], ...] | None:
    try:
        if path.is_dir():
            return tuple((str(p), p.read_bytes()) for p in yaml_files(path))
        return ((str(path), path.read_bytes()),)
    except OSError:
        return None
