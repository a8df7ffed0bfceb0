"""The world one benchmark run lives in: its id, its host ports, its Postgres, its child processes
and the cleanup of every container it created, even when it fails.

Everything a run starts carries its id: tether's containers through a per-scenario
TETHER_INSTALLATION_ID (`bench-<id>-<scenario>`), every other container (the baselines', the
docker-compose services', Postgres) through the label `dev.tether.bench=<id>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiodocker
import asyncpg

from tether.api.migrator import migrate
from tether.api.store import PortRange
from tether.operator.labels import LABEL_INSTALLATION

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
PYTHON = sys.executable
BENCH_LABEL = "dev.tether.bench"
IMAGE = "tether-test/workload:latest"
# Host ports published by a run: above the blocks tests pick (20000-59999) and above Linux's
# ephemeral range (32768-60999), so neither a test nor an outgoing connection takes one of ours.
PORT_FLOOR, PORT_CEILING = 61000, 65000
PASSWORD = "bench"
# Each party connects to Postgres as a role of its own, so that pg_stat_statements counts the
# statements of each separately.
OPERATOR_ROLE, API_ROLE, CLIENT_ROLE = "bench_operator", "bench_api", "bench_client"
TEMPLATE_DB = "bench_template"


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Database:
    name: str
    host_port: int

    def dsn(self, role: str = CLIENT_ROLE) -> str:
        return f"postgresql://{role}:{PASSWORD}@127.0.0.1:{self.host_port}/{self.name}"


class Run:
    """One run of the benchmarks."""

    def __init__(self, *, quick: bool, out_root: Path) -> None:
        self.id = uuid.uuid4().hex[:6]
        self.quick = quick
        self.out = out_root / time.strftime("%Y%m%d-%H%M%S")
        self.out.mkdir(parents=True, exist_ok=True)
        self.children: list[subprocess.Popen[bytes]] = []
        self._next_port = PORT_FLOOR
        self._postgres: Any = None
        self.pg_port = 0
        self.docker: aiodocker.Docker | None = None

    # Names, labels, ports

    def installation(self, scenario: str) -> str:
        return f"bench-{self.id}-{scenario}"

    def labels(self, scenario: str) -> dict[str, str]:
        return {BENCH_LABEL: self.id, f"{BENCH_LABEL}.scenario": scenario}

    def ports(self, count: int) -> PortRange:
        """`count` consecutive host ports nothing holds now, from the run's band."""
        first = self._next_port
        while first + count - 1 <= PORT_CEILING:
            busy = next((p for p in range(first, first + count) if not port_is_free(p)), None)
            if busy is None:
                self._next_port = first + count
                return PortRange(first, first + count - 1)
            first = busy + 1
        raise RuntimeError(f"no {count} consecutive free ports in {PORT_FLOOR}-{PORT_CEILING}")

    # Postgres

    def start_postgres(self) -> None:
        """A Postgres server (testcontainers) counting statements per role (pg_stat_statements),
        published on 127.0.0.1 only."""
        from testcontainers.community.postgres import PostgresContainer

        image = os.environ.get("TETHER_POSTGRES_IMAGE", "postgres:15")
        self.pg_port = self.ports(1).first
        container = PostgresContainer(
            image, driver=None, username="bench", password=PASSWORD, dbname="bench"
        )
        container.ports["5432"] = ("127.0.0.1", self.pg_port)
        container.with_command(
            "postgres -c shared_preload_libraries=pg_stat_statements -c max_connections=200"
        )
        container.with_kwargs(labels=self.labels("postgres"))
        self._postgres = container
        container.start()

    def admin_dsn(self, database: str = "bench") -> str:
        return f"postgresql://bench:{PASSWORD}@127.0.0.1:{self.pg_port}/{database}"

    async def prepare_databases(self) -> None:
        """Roles, pg_stat_statements, and one migrated template that every scenario clones."""
        conn = await asyncpg.connect(self.admin_dsn())
        try:
            for role in (OPERATOR_ROLE, API_ROLE, CLIENT_ROLE):
                await conn.execute(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            await conn.execute(f"CREATE DATABASE {TEMPLATE_DB}")
        finally:
            await conn.close()
        await migrate(self.admin_dsn(TEMPLATE_DB))

    async def database(self, name: str) -> Database:
        conn = await asyncpg.connect(self.admin_dsn())
        try:
            await conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
        finally:
            await conn.close()
        return Database(name, self.pg_port)

    async def statements(self, role: str) -> dict[str, int]:
        """Statements run by `role` since the last reset, by text."""
        conn = await asyncpg.connect(self.admin_dsn())
        try:
            rows = await conn.fetch(
                "SELECT query, sum(calls)::bigint AS calls FROM pg_stat_statements s "
                "JOIN pg_roles r ON r.oid = s.userid WHERE r.rolname = $1 GROUP BY query",
                role,
            )
        finally:
            await conn.close()
        counted: dict[str, int] = {}
        for row in rows:
            lines = [ln for ln in row["query"].splitlines() if not ln.strip().startswith("--")]
            text = " ".join(" ".join(lines).split())
            counted[text] = counted.get(text, 0) + row["calls"]
        return counted

    async def reset_statements(self) -> None:
        conn = await asyncpg.connect(self.admin_dsn())
        try:
            await conn.execute("SELECT pg_stat_statements_reset()")
        finally:
            await conn.close()

    # Child processes

    def spawn(
        self, argv: list[str], *, env: dict[str, str], log_name: str
    ) -> subprocess.Popen[bytes]:
        log = open(self.out / log_name, "ab")  # noqa: SIM115  # closed with the process
        child = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd="/"
        )
        log.close()  # the child holds its own descriptor
        self.children.append(child)
        return child

    async def stop_child(self, child: subprocess.Popen[bytes], grace_s: float = 40.0) -> int:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.to_thread(child.wait), grace_s)
            except TimeoutError:
                child.kill()
                await asyncio.to_thread(child.wait)
        return child.returncode

    # Containers

    async def remove_containers(self, scenario: str | None = None) -> int:
        """Remove this run's containers (of one scenario, or all of them), stopping first."""
        assert self.docker is not None
        ids: set[str] = set()
        label = f"{BENCH_LABEL}.scenario={scenario}" if scenario else f"{BENCH_LABEL}={self.id}"
        for container in await self.docker.containers.list(all=True, filters={"label": [label]}):
            if container._container.get("Labels", {}).get(BENCH_LABEL) == self.id:
                ids.add(container.id)
        for container in await self.docker.containers.list(
            all=True, filters={"label": [LABEL_INSTALLATION]}
        ):
            value = container._container.get("Labels", {}).get(LABEL_INSTALLATION, "")
            wanted = self.installation(scenario) if scenario else self.installation("")
            if (value == wanted) if scenario else value.startswith(wanted):
                ids.add(container.id)
        slots = asyncio.Semaphore(8)

        async def remove(cid: str) -> None:
            async with slots:
                with contextlib.suppress(aiodocker.DockerError):
                    await self.docker.containers.container(cid).delete(force=True)  # type: ignore[union-attr]

        await asyncio.gather(*(remove(cid) for cid in ids))
        return len(ids)

    def cleanup(self) -> None:
        """Synchronous last resort: stop children, remove every container of this run."""
        for child in self.children:
            if child.poll() is None:
                child.terminate()
        for child in self.children:
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
        remove_run_containers(
            lambda labels: (
                labels.get(BENCH_LABEL) == self.id
                or labels.get(LABEL_INSTALLATION, "").startswith(self.installation(""))
            )
        )
        if self._postgres is not None:
            with contextlib.suppress(Exception):
                self._postgres.stop()

    def write_json(self, name: str, data: Any) -> Path:
        path = self.out / name
        path.write_text(json.dumps(data, indent=2, default=str))
        return path


async def command(
    argv: list[str], *, env: dict[str, str] | None = None, timeout_s: float = 600.0
) -> tuple[int, bytes]:
    """Run a program to its end (stdout and stderr together); killed on timeout or when the
    caller is cancelled, so that nothing outlives the run."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    try:
        async with asyncio.timeout(timeout_s):
            out, _ = await proc.communicate()
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out


def remove_run_containers(belongs: Any) -> int:
    """Remove containers whose labels `belongs(labels)` claims, with the docker CLI (no event
    loop needed: usable from a finally block after anything went wrong)."""
    listed = _docker_cli("ps", "-aq", "--no-trunc", "--filter", "label=" + BENCH_LABEL).split()
    listed += _docker_cli(
        "ps", "-aq", "--no-trunc", "--filter", "label=" + LABEL_INSTALLATION
    ).split()
    doomed = []
    for chunk in _chunks(sorted(set(listed)), 200):
        inspected = _docker_cli("inspect", "--format", "{{.Id}} {{json .Config.Labels}}", *chunk)
        for line in inspected.splitlines():
            cid, _, labels = line.partition(" ")
            if belongs(json.loads(labels) or {}):
                doomed.append(cid)
    for chunk in _chunks(doomed, 100):
        _docker_cli("rm", "-f", *chunk)
    return len(doomed)


def _docker_cli(*args: str, timeout_s: float = 180) -> str:
    """The docker CLI's output; empty when it fails or hangs (an engine that stopped answering
    must not keep a failed run from ending)."""
    try:
        done = subprocess.run(
            ["docker", *args], capture_output=True, text=True, check=False, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        return ""
    return done.stdout


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (not of its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def program_cpu_seconds(executable: str) -> float:
    """User + system CPU time of every running process of a program and of its children that
    have ended (Postgres's backends, HAProxy's old workers): the reaped children's time is in
    their parent's, so a child ending within a window moves its time, never loses it."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if (entry / "comm").read_text().strip() == executable:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
                total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total / ticks


def process_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def pid_of(executable: str) -> int | None:
    """The pid of a running program by its exact executable name (for dockerd's CPU time)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if (entry / "comm").read_text().strip() == executable:
                return int(entry.name)
    return None


def machine_seconds() -> dict[str, float]:
    """CPU seconds since boot (/proc/stat) the machine's cores spent on anything but idling, and
    those its hypervisor gave to other machines (steal): on a shared host, a window with steal
    had less of the 2 cores than it seemed, whatever the systems measured did."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    ticks = os.sysconf("SC_CLK_TCK")
    return {"machine_s": (user + nice + system + irq + softirq) / ticks, "steal_s": steal / ticks}


def engine_pids(docker_url: str) -> list[int]:
    """The dockerd serving `docker_url` and its containerd: the processes that answer the Engine
    API (the shims and runc, one per container, are not counted)."""
    socket = docker_url.removeprefix("unix://")
    dockerds = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if (entry / "comm").read_text().strip() == "dockerd":
                dockerds.append((int(entry.name), (entry / "cmdline").read_bytes()))
    # The run's own engine names its socket; the machine's listens on the default one.
    named = [pid for pid, cmdline in dockerds if socket.encode() in cmdline]
    plain = [pid for pid, cmdline in dockerds if b"--host" not in cmdline and b"-H" not in cmdline]
    found = named or plain
    if not found:
        return []
    dockerd = found[0]
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            parent = (entry / "stat").read_text().rpartition(")")[2].split()[1]
            if parent == str(dockerd) and (entry / "comm").read_text().strip() == "containerd":
                children.append(int(entry.name))
    return [dockerd, *children]


class CpuMeter:
    """CPU seconds over a window: the whole machine's busy time, the Docker engine's (dockerd
    and containerd), Postgres's, HAProxy's and this benchmark process's, so that a cycle's wall
    time can be set against the work it cost and that work against who did it."""

    def __init__(self, docker_url: str) -> None:
        self._engine = engine_pids(docker_url)

    def read(self) -> dict[str, float]:
        engine = 0.0
        for pid in self._engine:
            with contextlib.suppress(OSError):
                engine += process_cpu_seconds(pid)
        return {
            **machine_seconds(),
            "engine_s": engine,
            "postgres_s": program_cpu_seconds("postgres"),
            "haproxy_s": program_cpu_seconds("haproxy"),
            "bench_s": time.process_time(),
        }

    @staticmethod
    def spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {key: after[key] - before[key] for key in before}


def load_average() -> list[str]:
    return Path("/proc/loadavg").read_text().split()[:3]


def machine() -> dict[str, Any]:
    """What the figures were measured on."""

    def first(cmd: list[str]) -> str:
        with contextlib.suppress(OSError):
            out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
            return out.strip()
        return "?"

    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    os_name = "?"
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("PRETTY_NAME="):
            os_name = line.split("=", 1)[1].strip('"')
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "os": os_name,
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
        "docker": first(
            ["docker", "version", "--format", "{{.Server.Version}} (API {{.Server.APIVersion}})"]
        ),
        "docker_engine": "private"
        if "tether-bench-" in os.environ.get("DOCKER_HOST", "")
        else "shared",
        "docker_compose": first(["docker-compose", "version", "--short"]),
        "postgres_image": os.environ.get("TETHER_POSTGRES_IMAGE", "postgres:15"),
        "wrk": (first(["wrk", "--version"]).splitlines() or ["?"])[0],
        "load_at_start": load_average(),
    }
