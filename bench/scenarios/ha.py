"""8. High availability: takeover on death and on a hang, beside the lease TTL; the lease's idle
cost beside the single-lease design it replaced.

Operators are real `tether operator` processes (default settings: TTL 10 s) on one database.
- Death: an active and a standby; the active is SIGKILLed; from the kill to the standby's
  `lease acquired` log line (both on the machine's monotonic clock). A new standby is started
  for the next round. Median of 10.
- Hang: the same with SIGSTOP; the stopped one is SIGKILLed afterwards. Median of 5.
- Idle: three operators (one active, two standbys) and no project for a window; statements of
  the operator role (pg_stat_statements), all of them and the lease's own. Beside it, when
  BENCH_HA_BASELINE_TETHER names the `tether` of a checkout from before (e.g. main's
  .venv/bin/tether), the same window with three of those; else the figure of that design by
  construction: one `take_lease` per operator every TTL/3 (TTL 15 s).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness import OPERATOR_ROLE, Database, Run
from measures import summary
from tether_side import docker_url

TETHER = str(Path(sys.executable).parent / "tether")
ACQUIRED = "lease acquired: this operator is active"
LEASE_QUERY_WORDS = ("operator_lease", "pg_advisory", "pg_terminate_backend")
BASELINE_TTL_S = 15.0  # the single-lease design's default


class _Operator:
    def __init__(self, run: Run, env: dict[str, str], log_name: str, tether: str) -> None:
        self.log = run.out / log_name
        self.child: subprocess.Popen[bytes] = run.spawn(
            [tether, "operator"], env=env, log_name=log_name
        )

    def acquisitions(self) -> list[float]:
        found = []
        if self.log.exists():
            for line in self.log.read_text().splitlines():
                if line.startswith("{") and ACQUIRED in line:
                    found.append(float(json.loads(line)["monotonic"]))
        return found

    def kill(self) -> None:
        if self.child.poll() is None:
            self.child.kill()
            self.child.wait()


async def _until(check: Any, what: str, within_s: float) -> Any:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        await asyncio.sleep(0.02)
    raise RuntimeError(f"timed out after {within_s} s waiting for {what}")


def _env(database: Database, installation: str, ports: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("TETHER_") and key != "DOCKER_HOST"
    }
    env.update(
        TETHER_DATABASE_URL=database.dsn(OPERATOR_ROLE),
        TETHER_DOCKER_URL=docker_url(),
        TETHER_INSTALLATION_ID=installation,
        TETHER_PORT_RANGE=ports,
        TETHER_LOG_FORMAT="json",
        TETHER_OPERATOR_HOST="127.0.0.1",
        TETHER_OPERATOR_PORT="0",
    )
    return env


async def measure(run: Run, deaths: int, hangs: int, idle_s: float) -> dict[str, Any]:
    database = await run.database("ha")
    ports = run.ports(4)
    env = _env(database, run.installation("ha"), f"{ports.first}-{ports.last}")
    spawned = 0

    def spawn(tether: str = TETHER, extra: dict[str, str] | None = None) -> _Operator:
        nonlocal spawned
        spawned += 1
        return _Operator(run, {**env, **(extra or {})}, f"operator-ha-{spawned}.log", tether)

    everyone: list[_Operator] = []
    results: dict[str, Any] = {"ttl_s": 10.0}
    try:
        active = spawn()
        everyone.append(active)
        await _until(active.acquisitions, "the first operator active", 60)
        for kind, rounds, sig in (
            ("death", deaths, signal.SIGKILL),
            ("hang", hangs, signal.SIGSTOP),
        ):
            times = []
            for _ in range(rounds):
                standby = spawn()
                everyone.append(standby)
                await asyncio.sleep(1.5)  # the standby connected and waiting for the lock
                faulted = time.monotonic()
                active.child.send_signal(sig)
                took = await _until(standby.acquisitions, f"takeover after {kind}", 60)
                times.append(took[0] - faulted)
                active.kill()
                active = standby
            results[kind] = {"seconds": [round(t, 3) for t in times], **summary(times)}
        for _ in range(2):  # three operators: the active and two standbys
            everyone.append(spawn())
        await asyncio.sleep(5)
        results["idle"] = await _idle(run, idle_s)
        # Not in pg_stat_statements (they end in an error): two standbys' timed-out lock waits.
        results["idle_lock_waits_per_s"] = 2 / min(2.0, results["ttl_s"] / 4)
        for operator in everyone:
            operator.kill()
        baseline = os.environ.get("BENCH_HA_BASELINE_TETHER")
        if baseline:
            base_db = await run.database("ha_baseline")
            base_env = _env(base_db, run.installation("ha-base"), f"{ports.first}-{ports.last}")
            olds = [
                _Operator(run, base_env, f"operator-ha-baseline-{i}.log", baseline)
                for i in range(3)
            ]
            everyone.extend(olds)
            await asyncio.sleep(8)
            results["baseline_idle"] = await _idle(run, idle_s)
        results["baseline_by_construction"] = {
            "statements_per_s": 3 / (BASELINE_TTL_S / 3),
            "lease_statements_per_s": 3 / (BASELINE_TTL_S / 3),
        }
    finally:
        for operator in everyone:
            operator.kill()
    return results


async def _idle(run: Run, window_s: float) -> dict[str, Any]:
    await run.reset_statements()
    began = time.monotonic()
    await asyncio.sleep(window_s)
    elapsed = time.monotonic() - began
    statements = await run.statements(OPERATOR_ROLE)
    lease = {q: n for q, n in statements.items() if any(word in q for word in LEASE_QUERY_WORDS)}
    return {
        "window_s": round(elapsed, 1),
        "statements_per_s": sum(statements.values()) / elapsed,
        "lease_statements_per_s": sum(lease.values()) / elapsed,
        "statements": dict(sorted(statements.items(), key=lambda kv: -kv[1])),
    }
