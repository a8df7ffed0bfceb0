"""7. The CLI: wall time of a whole `tether` command, from exec to exit.

Against `tether api` (a child process, as in item 6) holding 20 projects with a deployment
each, every one desired running, no operator: `tether status` (one GET and a table of all 20),
`tether start NAME` on a project already desired running (one POST, answered "already running")
and `tether --help`. Beside them, the floors: `curl` of the same API calls (`GET /v1/projects`,
`POST /v1/projects/NAME/start`) and `python -c pass` (the interpreter's start alone). Each
command runs `runs` times, the commands interleaved (each round runs every command once, in a
rotating order), so that background load falls on all of them alike.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import PYTHON, Run, load_average
from scenarios.api import Api
from tether.api.store import PortRange
from tether_side import OWNER, Tether

PROJECTS = 20
STORE_PORTS = PortRange(40000, 40999)  # stored per project, never published: no operator runs
TARGET_MS = 150.0
TETHER = str(Path(PYTHON).parent / "tether")


def compile_client() -> list[str]:
    """Write the bytecode of the modules a client command imports (tether.cli, tether.api), as
    `pip install` does for an installed package; return the folders compiled.

    An editable install has none, and where PYTHONDONTWRITEBYTECODE is set (it is on this
    machine) Python compiles every one of them from source on every run, ~40 ms of CPU that no
    installed tether pays.
    """
    import tether.api
    import tether.cli

    folders = [str(Path(package.__file__).parent) for package in (tether.cli, tether.api)]
    subprocess.run([PYTHON, "-m", "compileall", "-q", *folders], check=True)
    return folders


def commands(url: str, token: str, name: str, before: str | None) -> dict[str, list[str]]:
    """Each command measured, by its label; with `before` (another `tether` executable, e.g. of an
    earlier commit), its three commands too, labelled `before: ...`."""
    curl = ["curl", "-sf", "-o", "/dev/null", "-H", f"Authorization: Bearer {token}"]
    others = {}
    if before is not None:
        others = {
            "before: tether status": [before, "status"],
            f"before: tether start {name}": [before, "start", name],
            "before: tether --help": [before, "--help"],
        }
    return {
        "tether status": [TETHER, "status"],
        f"tether start {name}": [TETHER, "start", name],
        "tether --help": [TETHER, "--help"],
        **others,
        "curl GET /v1/projects": [*curl, f"{url}/v1/projects"],
        f"curl POST /v1/projects/{name}/start": [
            *curl,
            "-X",
            "POST",
            f"{url}/v1/projects/{name}/start",
        ],
        "python -c pass": [PYTHON, "-c", "pass"],
    }


def _cpu_s() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU milliseconds (user + system) of one run of `argv`, to its exit. CPU time
    counts what the command itself costs; wall time adds the API's answer and any wait for a
    core (the machine's other work)."""
    cpu0, began = _cpu_s(), time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall, cpu = (time.perf_counter() - began) * 1000, (_cpu_s() - cpu0) * 1000
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} failed: {done.stderr.decode()[-300:]}")
    return wall, cpu


def sample(
    argvs: dict[str, list[str]], env: dict[str, str], runs: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    walls: dict[str, list[float]] = {label: [] for label in argvs}
    cpus: dict[str, list[float]] = {label: [] for label in argvs}
    labels = list(argvs)
    for round_ in range(runs + 1):
        shift = round_ % len(labels)
        for label in labels[shift:] + labels[:shift]:
            wall, cpu = timed(argvs[label], env)
            if round_ > 0:  # the first round warms the page cache and is not counted
                walls[label].append(wall)
                cpus[label].append(cpu)
    return walls, cpus


async def measure(run: Run, runs: int, before: str | None = None) -> dict[str, Any]:
    database = await run.database("cli")
    tether = await Tether.open(database, STORE_PORTS, None, run.installation("cli"))
    names = [f"cli-{i}" for i in range(PROJECTS)]
    api = Api(run, database.dsn())
    try:
        await tether.create(names, start=True)
        token = await tether.store.create_token(OWNER.owner)
        await tether.close()
        await api.start()
        url = f"http://127.0.0.1:{api.port}"
        with tempfile.TemporaryDirectory() as home:
            env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
            env.update(TETHER_URL=url, TETHER_TOKEN=token, TETHER_CONFIG=f"{home}/config.json")
            compiled = compile_client()
            load_before = load_average()
            times, cpus = sample(commands(url, token, names[0], before), env, runs)
    finally:
        await api.stop()
    return {
        "measured_at": time.strftime("%Y-%m-%d %H:%M"),
        "projects": PROJECTS,
        "runs": runs,
        "before": before,
        "target_ms": TARGET_MS,
        "median_ms": {label: statistics.median(ms) for label, ms in times.items()},
        "median_cpu_ms": {label: statistics.median(ms) for label, ms in cpus.items()},
        "times_ms": times,
        "load_average": [load_before, load_average()],
        "compiled": compiled,
    }
