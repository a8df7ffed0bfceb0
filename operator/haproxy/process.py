"""HAProxy as a supervised child: the host's `haproxy` binary, in master-worker mode, with the
configuration `config.py` renders written to the proxy's directory.

- A master that exits (or is killed) is started again after a backoff (`tether.operator.retry`'s,
  reset after a stretch of running), from the files on disk: the map file holds the routes of the
  moment (the admin client rewrites it with every change).
- `reload()` is SIGUSR2 to the master: a new worker takes the listening sockets over (passed on
  through the admin socket, `expose-fd listeners`), the old one finishes what it serves
  (`idle-close-on-response`, `hard-stop-after`). Nothing is refused or cut.
- `stop()` is a soft stop (SIGUSR1) with a grace period, then SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator

import structlog

from tether.operator.haproxy.admin import HAProxy
from tether.operator.haproxy.config import ProxyConfig, render_config, render_lua, render_map
from tether.operator.retry import retry_delay
from tether.operator.routing import ProxyFault

log = structlog.get_logger("tether.proxy")

# A master that ran this long before it exited starts again without delay.
STABLE_S = 30.0
STOP_GRACE_S = 10.0
READY_WITHIN_S = 15.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class ProxyNotStarted(Exception):
    """HAProxy cannot run here (no binary, a configuration it refuses, a port range taken)."""


def find_binary(name: str) -> str:
    """`name` on PATH, else in /usr/sbin (Debian's, often off a non-root PATH)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/local/sbin:/usr/sbin:/sbin")
    if found is None:
        raise ProxyNotStarted(
            f"no HAProxy executable {name!r} (install Debian's haproxy: scripts/provision, or set "
            "TETHER_PROXY_BINARY)"
        )
    return found


def write_files(config: ProxyConfig) -> None:
    """The configuration and the Lua hold action, rewritten; the map file only when there is
    none (it holds the routes the operator set last)."""
    config.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    config.socket.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    rendered = ((config.config_file, render_config(config)), (config.lua_file, render_lua(config)))
    for path, text in rendered:
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(text)
        temporary.replace(path)
    if not config.map_file.exists():
        config.map_file.write_text(render_map({}))


class HAProxyProcess:
    """Runs and supervises one HAProxy master (and its workers) for `config`."""

    def __init__(self, config: ProxyConfig, *, binary: str = "haproxy") -> None:
        self.config = config
        self.binary = binary
        self.starts = 0  # masters started, the first included
        self._master: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._running = asyncio.Event()

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def pid(self) -> int | None:
        """The current master's process id (None between two of them)."""
        master = self._master
        return master.pid if master is not None and master.returncode is None else None

    async def check(self) -> None:
        """`haproxy -c` on the files written: `ProxyNotStarted` with HAProxy's words if it
        refuses them."""
        binary = find_binary(self.binary)
        await asyncio.to_thread(write_files, self.config)
        checked = await asyncio.create_subprocess_exec(
            binary, "-c", "-q", "-f", str(self.config.config_file),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await checked.communicate()
        if checked.returncode != 0:
            raise ProxyNotStarted(
                f"HAProxy refuses {self.config.config_file}: {output.decode(errors='replace')}"
            )

    async def start(self, *, ready_within_s: float = READY_WITHIN_S) -> None:
        """Check the configuration, start the master, supervise it; return once the admin
        socket answers (`ProxyNotStarted` if it does not within `ready_within_s`)."""
        await self.check()
        self._task = asyncio.create_task(self._supervise(), name="haproxy-supervisor")
        try:
            await self.wait_ready(ready_within_s)
        except BaseException:
            await self.stop()
            raise

    async def wait_ready(self, within_s: float) -> None:
        """Until the admin socket of a running master answers."""
        client = HAProxy(self.config, timeout_s=1.0, attempts=1)
        loop = asyncio.get_running_loop()
        until = loop.time() + within_s
        while True:
            if self._task is not None and self._task.done():
                self._task.result()  # the supervisor failed: say why
                raise ProxyNotStarted("the proxy's supervisor has stopped")
            pid = self.pid
            # The worker answers before the master has set up its signal handlers (a SIGUSR1 or
            # SIGUSR2 sent in between is lost): ready means both.
            if pid is not None and _handles_signals(pid):
                with contextlib.suppress(ProxyFault):
                    await client.ping()
                    return
            if loop.time() > until:
                raise ProxyNotStarted(
                    f"HAProxy's admin socket {self.config.socket} did not answer within "
                    f"{within_s:g} s"
                )
            await asyncio.sleep(0.05)

    async def reload(self) -> None:
        """Rewrite the configuration and reload it, hitless (SIGUSR2 to the master)."""
        await self.check()
        try:
            await self.wait_ready(READY_WITHIN_S)  # a master just re-executed loses a SIGUSR2
        except ProxyNotStarted as exc:
            raise ProxyFault("reload", f"HAProxy is not running: {exc}") from exc
        pid = self.pid
        if pid is None:
            raise ProxyFault("reload", "HAProxy is not running: nothing to reload")
        os.kill(pid, signal.SIGUSR2)
        log.info("proxy reloaded", pid=pid)

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Soft stop (open connections finish), SIGTERM after `grace_s`, then SIGKILL."""
        self._stopping = True
        master = self._master
        if master is not None and master.returncode is None:
            for sig, wait_s in ((signal.SIGUSR1, grace_s), (signal.SIGTERM, 5.0)):
                with contextlib.suppress(ProcessLookupError):
                    master.send_signal(sig)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait_s):
                        await master.wait()
                if _exited(master):
                    break
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _supervise(self) -> None:
        binary = find_binary(self.binary)
        failures = 0
        while not self._stopping:
            started = time.monotonic()
            code = await self._run_once(binary)
            if self.stopping:
                return
            failures = 1 if time.monotonic() - started >= STABLE_S else failures + 1
            delay = retry_delay(failures, 0.0) if failures > 1 else 0.0
            log.warning("proxy exited: starting it again", exit_code=code, delay_s=delay)
            await asyncio.sleep(delay)

    async def _run_once(self, binary: str) -> int:
        await asyncio.to_thread(write_files, self.config)
        # -W: master-worker; -db: in the foreground; its own session, so that workers left by
        # a master that died can be ended with it.
        master = await asyncio.create_subprocess_exec(
            binary, "-W", "-db", "-f", str(self.config.config_file),
            "-p", str(self.config.pid_file),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            preexec_fn=_end_with_parent,
        )  # fmt: skip
        self._master = master
        self.starts += 1
        log.info("proxy started", pid=master.pid, config=str(self.config.config_file))
        output = asyncio.create_task(_log_output(master))
        try:
            return await master.wait()
        finally:
            if master.returncode is None:  # cancelled: never leave a master behind
                with contextlib.suppress(ProcessLookupError):
                    master.kill()
                await master.wait()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(master.pid, signal.SIGKILL)  # its workers, if any outlived it
            await output
            self._master = None


def _end_with_parent() -> None:
    """In the child, before exec: SIGTERM when the supervising process dies, however it dies, so
    that no HAProxy outlives its supervisor (Linux; the setting survives HAProxy's re-exec on a
    reload)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _handles_signals(pid: int) -> bool:
    """Whether process `pid` catches SIGUSR1 and SIGUSR2 (Linux: /proc/PID/status)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            caught = next(line for line in status if line.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return False
    mask = int(caught.split()[1], 16)
    return all(mask & (1 << (sig - 1)) for sig in (signal.SIGUSR1, signal.SIGUSR2))


def _exited(process: asyncio.subprocess.Process) -> bool:
    return process.returncode is not None


async def _log_output(master: asyncio.subprocess.Process) -> None:
    assert master.stdout is not None
    async for line in _lines(master.stdout):
        log.info("haproxy", pid=master.pid, line=line)


async def _lines(stream: asyncio.StreamReader) -> AsyncIterator[str]:
    while raw := await stream.readline():
        yield raw.decode(errors="replace").rstrip()
