"""The proxy's server side: `tether proxy` (HAProxy in the foreground, for compose) and the
proxy `tether up` runs beside the API and the operator. Both run the host's `haproxy` binary
under `tether.operator.haproxy.process`'s supervisor, with its files in TETHER_PROXY_DIR.

Hooks (cli/main.py and cli/server.py, which this module does not edit):
- `tether proxy`: a server command calling `proxy(settings)` (settings from `load_settings`).
- `tether up`: `async with running_proxy(settings):` around the API and the operator, once
  Postgres is up (inside `_up`'s Stopper), so that the operator finds the admin socket answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import structlog

from tether.cli.errors import CliError

if TYPE_CHECKING:
    from tether.api.settings import Settings
    from tether.operator.haproxy.process import HAProxyProcess

log = structlog.get_logger("tether.cli")

READY_WITHIN_S = 15.0


@contextlib.asynccontextmanager
async def running_proxy(settings: Settings) -> AsyncIterator[HAProxyProcess]:
    """HAProxy started, supervised and answering on its admin socket, until the block ends;
    then stopped softly (connections in flight finish). `CliError` if it cannot start."""
    from tether.operator.haproxy import proxy_config
    from tether.operator.haproxy.process import HAProxyProcess, ProxyNotStarted

    config = proxy_config(settings)
    process = HAProxyProcess(config, binary=settings.proxy_binary)
    try:
        await process.start(ready_within_s=READY_WITHIN_S)
    except (ProxyNotStarted, OSError) as exc:
        raise CliError(
            f"the proxy did not start: {exc} (its files are in {config.directory}; "
            "TETHER_PROXY_DIR, TETHER_PROXY_BINARY and TETHER_PORT_RANGE configure it)"
        ) from exc
    log.info(
        f"proxy: HAProxy on {settings.publish_address}:{settings.port_range}, admin socket "
        f"{config.socket}"
    )
    try:
        yield process
    finally:
        await process.stop()


def proxy(settings: Settings) -> None:
    """`tether proxy`: HAProxy in the foreground until SIGINT or SIGTERM; SIGHUP reloads it
    (hitless)."""
    from tether.cli.settings import configure_logs

    configure_logs(settings)
    asyncio.run(_proxy(settings))


async def _proxy(settings: Settings) -> None:
    from tether.cli.signals import Stopper

    stopper = Stopper()
    loop = asyncio.get_running_loop()
    started: list[HAProxyProcess] = []
    reloads: set[asyncio.Task[None]] = set()

    def reload() -> None:
        if not started:
            log.warning("proxy not started yet: nothing to reload")
            return
        task = loop.create_task(_reload(started[0]))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    with stopper.installed():
        # Before HAProxy starts: a SIGHUP must never end the process.
        loop.add_signal_handler(signal.SIGHUP, reload)
        try:
            async with running_proxy(settings) as process:
                started.append(process)
                log.info("tether proxy: Ctrl-C stops it, SIGHUP reloads it")
                await stopper.event.wait()
                for task in list(reloads):
                    await task
        finally:
            loop.remove_signal_handler(signal.SIGHUP)
    log.info("tether proxy stopped")


async def _reload(process: HAProxyProcess) -> None:
    from tether.operator.haproxy.process import ProxyNotStarted
    from tether.operator.routing import ProxyFault

    try:
        await process.reload()
    except (ProxyFault, ProxyNotStarted) as exc:
        log.error("proxy not reloaded", problem=str(exc))
