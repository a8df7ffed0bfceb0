"""6. API writes: desired-state writes per second and their latency with 16 concurrent clients.

- tether: `tether api` (uvicorn, its defaults) driven by wrk with 16 connections, each
  alternating POST /v1/projects/NAME/stop and /start over 50 projects of its own, so every write
  changes something (bench/writes.lua); one token of a (non-admin) owner.
- pgbench: the same statements as one write of tether's (token lookup; then one statement that
  locks, updates, records the event and notifies), 16 clients, prepared statements
  (bench/writes.pgbench).
- asyncpg: tether's own queries (by name, from queries.sql) replayed by 16 asyncpg connections
  in this process, without HTTP, FastAPI or the store's pool.

All three against the same Postgres, each on its own 800 projects, interleaved (the order rotates
every repetition). No operator runs: a write's cost is its transaction and its HTTP request.
Latency is per write (wrk's and pgbench's per-request logs; perf_counter for asyncpg).

Closed loop (each client sends its next write when the previous one is answered), 16 clients
always have a write in flight: by Little's law their mean latency is 16 / throughput, whatever
either system does. So latency is also measured at a fixed offered rate, the same for all three
(half of pgbench's closed-loop rate in the same run), interleaved: pgbench `--rate`, and
`openloop.offered` for the API and for the asyncpg replay, all charging each write from its
scheduled start. The asyncpg replay on the open loop's schedule shows what that Python schedule
adds by itself, beside pgbench's, which C keeps.

With TETHER_BENCH_API_BASELINE=/path/to/another/tether, that build's `tether api` is measured too
(system `baseline`, the same projects, interleaved with the rest): before/after under one load.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os
import shutil
import statistics
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg

from harness import (
    API_ROLE,
    BENCH,
    CLIENT_ROLE,
    PASSWORD,
    PYTHON,
    Run,
    command,
    free_port,
    load_average,
    process_cpu_seconds,
)
from measures import percentile
from openloop import Write, offered, offered_http
from profiling import record, summarize
from tether.api.models import DesiredState
from tether.api.queries import sql
from tether.api.store import PortRange, hash_token
from tether_side import OWNER, Tether, docker_url

CLIENTS = 16
PER_CLIENT = 50
OFFERED_SHARE = 0.5  # the fixed rate, as a share of pgbench's closed-loop writes/s
STORE_PORTS = PortRange(30000, 39999)  # stored per project, never published: no operator runs


async def measure(run: Run, duration_s: float, repeats: int) -> dict[str, Any]:
    scenario = "api"
    database = await run.database(scenario)
    tether = await Tether.open(database, STORE_PORTS, None, run.installation(scenario))
    admin = await asyncpg.connect(database.dsn(CLIENT_ROLE))
    api = Api(run, database.dsn(API_ROLE))
    # Another build of tether, measured beside this one on the same projects (never at the same
    # time): a before/after comparison that shares the machine's load of the moment.
    other = os.environ.get("TETHER_BENCH_API_BASELINE")
    baseline = Api(run, database.dsn(API_ROLE), other, "api-baseline.log") if other else None
    apis = {"tether": api, **({"baseline": baseline} if baseline else {})}
    results: dict[str, Any] = {"clients": CLIENTS, "duration_s": duration_s, "repeats": repeats}
    try:
        token = await tether.store.create_token(OWNER.owner)
        names = {
            "tether": [f"a-{c}-{j}" for c in range(CLIENTS) for j in range(PER_CLIENT)],
            "pgbench": [f"b{c * 1000 + j}" for c in range(CLIENTS) for j in range(PER_CLIENT)],
            "asyncpg": [f"c-{c}-{j}" for c in range(CLIENTS) for j in range(PER_CLIENT)],
        }
        for group in names.values():
            await tether.create(group, start=True)
        await tether.close()
        for each in apis.values():
            await each.start()
        names["baseline"] = names["tether"]

        async def reset(system: str) -> None:
            await admin.execute(
                "UPDATE projects SET desired_state = 'running' WHERE name = ANY($1::text[])",
                names[system],
            )

        async def writes(system: str) -> int:
            return int(
                await admin.fetchval(
                    "SELECT count(*) FROM events WHERE kind = 'desired'"
                    " AND reason IN ('Start', 'Stop') AND project = ANY($1::text[])",
                    names[system],
                )
            )

        systems: dict[str, Any] = {
            **{system: _closed(each, token) for system, each in apis.items()},
            "pgbench": lambda d: pgbench(run, database.name, hash_token(token), d),
            "asyncpg": lambda d: replay(database.dsn(CLIENT_ROLE), hash_token(token), d),
        }
        for system, go in systems.items():  # warm-up: connections, pools, prepared statements
            await reset(system)
            await go(3.0)

        async def interleaved(go: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
            """`repeats` runs of each system, the order rotating every repetition."""
            runs: dict[str, list[dict[str, Any]]] = {s: [] for s in go}
            order = list(go)
            for rep in range(repeats):
                shift = rep % len(order)
                for system in order[shift:] + order[:shift]:
                    await reset(system)
                    before = await writes(system)
                    served = apis.get(system)
                    cpu0 = process_cpu_seconds(served.pid) if served else 0.0
                    outcome = await go[system](duration_s)
                    outcome["changed_writes"] = await writes(system) - before
                    if served:
                        outcome["api_cpu_pct_of_core"] = (
                            100 * (process_cpu_seconds(served.pid) - cpu0) / outcome["seconds"]
                        )
                    runs[system].append(outcome)
                    await asyncio.sleep(1.0)
            return runs

        runs = await interleaved(systems)
        results["runs"] = runs
        results["load_after_closed_loop"] = load_average()
        rate = OFFERED_SHARE * statistics.median(r["writes_per_s"] for r in runs["pgbench"])
        fixed = await interleaved(
            {
                **{system: _offered(each, token, rate) for system, each in apis.items()},
                "pgbench": lambda d: pgbench(run, database.name, hash_token(token), d, rate=rate),
                "asyncpg": lambda d: replay_offered(
                    database.dsn(CLIENT_ROLE), hash_token(token), d, rate=rate
                ),
            }
        )
        results["fixed_rate"] = {"rate_per_s": rate, "share": OFFERED_SHARE, "runs": fixed}
        results["load_after_fixed_rate"] = load_average()
        await reset("tether")
        profile_s = 5 if run.quick else 15
        wrk_task = asyncio.create_task(api.wrk(token, profile_s + 2))
        await asyncio.sleep(1.0)
        raw = await record(api.pid, profile_s, run.out / "profile-api.txt")
        results["profile_load"] = await wrk_task
        results["profile"] = summarize(raw) if raw else {"error": "py-spy could not record"}
    finally:
        await admin.close()
        for each in apis.values():
            await each.stop()
    return results


def _closed(api: Api, token: str) -> Any:
    return lambda d: api.wrk(token, d)


def _offered(api: Api, token: str, rate: float) -> Any:
    return lambda d: api.offered(token, rate, d)


class Api:
    """`tether api` as a child process (its defaults: one uvicorn worker, info log level)."""

    def __init__(
        self, run: Run, dsn: str, binary: str | None = None, log_name: str = "api.log"
    ) -> None:
        self._run = run
        self._binary = binary or str(Path(PYTHON).parent / "tether")
        self._log_name = log_name
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
        env.update(
            TETHER_DATABASE_URL=dsn,
            TETHER_DOCKER_URL=docker_url(),
            TETHER_API_HOST="127.0.0.1",
            TETHER_API_PORT=str(self.port),
            TETHER_PORT_RANGE=f"{STORE_PORTS.first}-{STORE_PORTS.last}",
            TETHER_INSTALLATION_ID=run.installation("api"),
            TETHER_LOG_FORMAT="json",
            TETHER_OPERATOR_PORT=str(free_port()),
        )
        self._env = env
        self.child: Any = None

    @property
    def pid(self) -> int:
        return int(self.child.pid)

    async def start(self) -> None:
        self.child = self._run.spawn([self._binary, "api"], env=self._env, log_name=self._log_name)
        deadline = time.monotonic() + 30
        while True:
            try:
                await asyncio.to_thread(
                    urllib.request.urlopen, f"http://127.0.0.1:{self.port}/readyz", timeout=2
                )
                return
            except OSError:
                if self.child.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"`tether api` did not start; see {self._log_name}"
                    ) from None
                await asyncio.sleep(0.2)

    async def stop(self) -> None:
        if self.child is not None:
            await self._run.stop_child(self.child)

    async def wrk(self, token: str, duration_s: float) -> dict[str, Any]:
        code, out = await command(
            [
                "wrk",
                "-t",
                str(CLIENTS),
                "-c",
                str(CLIENTS),
                "-d",
                f"{duration_s:.0f}s",
                "--timeout",
                "10s",
                "-s",
                str(BENCH / "writes.lua"),
                f"http://127.0.0.1:{self.port}",
                "--",
                str(PER_CLIENT),
                token,
            ],
            timeout_s=duration_s + 60,
        )
        text = out.decode()
        line = next((ln for ln in text.splitlines() if ln.startswith("{")), None)
        if code != 0 or line is None:
            raise RuntimeError(f"wrk failed: {text[-500:]}")
        data = json.loads(line)
        seconds = data["duration_us"] / 1e6
        return {
            "seconds": seconds,
            "writes": data["requests"],
            "writes_per_s": data["requests"] / seconds,
            "p50_ms": data["p50_us"] / 1000,
            "p99_ms": data["p99_us"] / 1000,
            "max_ms": data["max_us"] / 1000,
            "errors": data["errors"] + data["non_2xx"],
        }

    async def offered(self, token: str, rate_per_s: float, duration_s: float) -> dict[str, Any]:
        """The writes of bench/writes.lua, at `rate_per_s` in all (`openloop.offered`)."""
        head = f"Host: 127.0.0.1:{self.port}\r\nAuthorization: Bearer {token}\r\n"

        def request(client: int, k: int) -> bytes:
            verb = "stop" if (k // PER_CLIENT) % 2 == 0 else "start"
            path = f"/v1/projects/a-{client}-{k % PER_CLIENT}/{verb}"
            return f"POST {path} HTTP/1.1\r\n{head}Content-Length: 0\r\n\r\n".encode()

        return await offered_http(
            "127.0.0.1",
            self.port,
            request,
            clients=CLIENTS,
            rate_per_s=rate_per_s,
            duration_s=duration_s,
        )


async def pgbench(
    run: Run, database: str, token_hash: str, duration_s: float, *, rate: float | None = None
) -> dict[str, Any]:
    """Closed loop, or at `rate` transactions/s in all (`--rate`: latency from the scheduled
    start, as `openloop.offered` measures the API's)."""
    prefix = run.out / f"pgbench-{time.monotonic_ns()}"
    env = dict(os.environ, PGPASSWORD=PASSWORD)
    code, out = await command(
        [
            _pgbench(),
            "-h",
            "127.0.0.1",
            "-p",
            str(run.pg_port),
            "-U",
            CLIENT_ROLE,
            "-n",
            "-M",
            "prepared",
            "-c",
            str(CLIENTS),
            "-j",
            "2",
            "-T",
            f"{duration_s:.0f}",
            *(["--rate", f"{rate:.1f}"] if rate is not None else []),
            "-f",
            str(BENCH / "writes.pgbench"),
            "-D",
            "k=-1",
            "-D",
            f"per={PER_CLIENT}",
            "-D",
            f"hash={token_hash}",
            "-D",
            f"owner={OWNER.owner}",
            "-l",
            f"--log-prefix={prefix}",
            database,
        ],
        env=env,
        timeout_s=duration_s + 60,
    )
    text = out.decode()
    logs = glob.glob(f"{prefix}.*")
    latencies = await asyncio.to_thread(_transaction_latencies, logs)
    if code != 0 or not latencies:
        raise RuntimeError(f"pgbench failed: {text[-800:]}")
    tps = next(
        (float(ln.split("=")[1].split()[0]) for ln in text.splitlines() if ln.startswith("tps =")),
        len(latencies) / duration_s,
    )
    failed = next((ln for ln in text.splitlines() if "failed" in ln or "aborted" in ln), "")
    return {
        "seconds": duration_s,
        **({"offered_per_s": rate} if rate is not None else {}),
        "writes": len(latencies),
        "writes_per_s": tps,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies),
        "errors": failed,
    }


def _pgbench() -> str:
    """pgbench on PATH, else the one of Debian's Postgres server package."""
    found = shutil.which("pgbench") or next(
        iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"))), None
    )
    if found is None:
        raise RuntimeError("pgbench is missing: run bench/provision")
    return found


def _transaction_latencies(logs: list[str]) -> list[float]:
    """Milliseconds per transaction from pgbench's logs (which are removed)."""
    latencies = []
    for path in logs:
        with open(path) as log:
            # client_id transaction_no time(us) script_no time_epoch time_us
            latencies += [int(line.split()[2]) / 1000 for line in log if line.strip()]
        os.unlink(path)
    return latencies


def _replayed(conn: asyncpg.Connection, c: int, token_hash: str) -> Write:
    """Client `c`'s k-th write as tether's queries for it, without HTTP: the token lookup, then
    the desired-state statement, stopping and starting its projects in turn."""

    async def write(k: int) -> bool:
        name = f"c-{c}-{k % PER_CLIENT}"
        running = (k // PER_CLIENT) % 2 == 1
        state, was = (
            (DesiredState.RUNNING, "stopped") if running else (DesiredState.STOPPED, "running")
        )
        principal = await conn.fetchrow(sql("token_by_hash"), token_hash)
        await conn.fetchrow(
            sql("set_desired_state"),
            name,
            principal["owner"],
            state,
            None,
            "Start" if running else "Stop",
            f"desired {state} (was {was})",
            principal["owner"],
            principal["id"],
        )
        return True

    return write


@contextlib.asynccontextmanager
async def _connections(dsn: str) -> AsyncIterator[list[asyncpg.Connection]]:
    conns = await asyncio.gather(*(asyncpg.connect(dsn) for _ in range(CLIENTS)))
    try:
        yield list(conns)
    finally:
        for conn in conns:
            with contextlib.suppress(Exception):
                await conn.close()


async def replay(dsn: str, token_hash: str, duration_s: float) -> dict[str, Any]:
    """tether's queries for one write, on 16 connections, without HTTP, in a closed loop."""
    latencies: list[float] = []
    stop_at = time.perf_counter() + duration_s

    async def client(write: Write) -> None:
        k = 0
        while time.perf_counter() < stop_at:
            began = time.perf_counter()
            await write(k)
            latencies.append((time.perf_counter() - began) * 1000)
            k += 1

    async with _connections(dsn) as conns:
        began = time.perf_counter()
        await asyncio.gather(
            *(client(_replayed(conn, c, token_hash)) for c, conn in enumerate(conns))
        )
        seconds = time.perf_counter() - began
    return {
        "seconds": seconds,
        "writes": len(latencies),
        "writes_per_s": len(latencies) / seconds,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies),
        "errors": 0,
    }


async def replay_offered(
    dsn: str, token_hash: str, duration_s: float, *, rate: float
) -> dict[str, Any]:
    """The same writes at `rate` in all, on the schedule the API's open loop keeps
    (`openloop.offered`): what this process's own scheduling adds to the API's figures."""
    async with _connections(dsn) as conns:
        return await offered(
            [_replayed(conn, c, token_hash) for c, conn in enumerate(conns)],
            rate_per_s=rate,
            duration_s=duration_s,
        )
