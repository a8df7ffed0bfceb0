"""Benchmarks of tether against raw Docker, docker-compose and direct SQL, in one run.

    python bench/run.py            # everything (about 30 minutes); writes docs/benchmarks.md
    python bench/run.py --quick    # smaller and shorter, for development (about 5 minutes)
    python bench/run.py --only single,api
    python bench/run.py --only bulk --bulk-sizes 50 --bulk-repeats 3 --bulk-systems tether,floor
    python bench/run.py --only api --api-repeats 6 --api-seconds 8
    python bench/run.py --only proxy --docker shared --splice   # item 9 alone, into the report
    python bench/cli_timing.py     # item 7 (the CLI) alone, about a minute; rewrites its section
    python bench/run.py --cleanup  # remove containers left by interrupted runs
    python bench/run.py --render bench/out/<time>/results.json   # rewrite the report only

By default the run starts a Docker engine of its own (`--docker private`: root, a bridge of its
own, nothing shared with the test suites on the machine's engine); `--docker shared` uses
$DOCKER_HOST's.

Raw results, logs and profiles go to bench/out/<time>/. Needs the Docker engine, the images of
scripts/provision, docker-compose, wrk and pgbench (bench/provision installs them).

Run it as a script (not `python -m`): with the repository root on sys.path, its `operator/`
folder would shadow the standard library's `operator` module.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

# testcontainers believes it runs inside a container on these machines and would reach Postgres
# through the bridge gateway; only loopback is allowed. Ryuk cannot be pulled without a registry.
os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")
os.environ.setdefault("TC_HOST", "127.0.0.1")
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

import aiodocker

import report
from harness import BENCH, BENCH_LABEL, REPO, Run, load_average, machine, remove_run_containers
from private_docker import PrivateDocker, default_images
from scenarios import api, bulk, cli, growth, ha, idle, proxy, single, swarm
from tether.api.settings import Settings
from tether.operator.labels import LABEL_INSTALLATION

# Bulk last: Docker Engine 20.10 can deadlock when many containers exit at once
# (moby/moby#46661); if it does, every other item has been measured already.
SCENARIOS = ("single", "idle", "growth", "api", "cli", "ha", "proxy", "swarm", "bulk")


def say(message: str) -> None:
    print(f"bench {time.strftime('%H:%M:%S')}: {message}", file=sys.stderr, flush=True)


async def measure_all(
    run: Run, only: list[str], what_if: list[tuple[str, str]], plan: argparse.Namespace
) -> dict[str, Any]:
    quick = run.quick
    docker = aiodocker.Docker()
    run.docker = docker
    results: dict[str, Any] = {"machine": machine(), "quick": quick, "run": run.id}
    plans: dict[str, Callable[[], Awaitable[Any]]] = {
        "single": lambda: single.measure(run, docker, iterations=6 if quick else 30),
        "bulk": lambda: bulk.measure(
            run,
            docker,
            sizes=plan.bulk_sizes or ((20,) if quick else (50, 200)),
            repeats=plan.bulk_repeats or ((1,) if quick else (2, 1)),
            what_if=what_if,
            systems=plan.bulk_systems,
        ),
        "idle": lambda: idle.measure(
            run,
            docker,
            projects=60 if quick else 500,
            window_s=45 if quick else 300,
            kills=6 if quick else 30,
        ),
        "growth": lambda: growth.measure(
            run,
            docker,
            sizes=(100, 1000) if quick else (100, 1000, 10000),
            repeats=3 if quick else 5,
        ),
        "api": lambda: api.measure(
            run,
            duration_s=plan.api_seconds or (5 if quick else 12),
            repeats=plan.api_repeats or (1 if quick else 2),
        ),
        "cli": lambda: cli.measure(run, runs=11 if quick else 31),
        "ha": lambda: ha.measure(
            run, deaths=3 if quick else 10, hangs=2 if quick else 5, idle_s=20 if quick else 60
        ),
        "proxy": lambda: proxy.measure(
            run,
            docker,
            requests=1000 if quick else 5000,
            window_s=3 if quick else 5,
            windows=2 if quick else 3,
            switches=2 if quick else 5,
        ),
        "swarm": lambda: swarm.measure(
            run,
            iterations=4 if quick else 20,
            bulk_size=20 if quick else 50,
            bulk_repeats=1 if quick else 3,
            survey_sizes=(100, 1000),
            survey_repeats=3,
        ),
    }
    try:
        await run.prepare_databases()
        for name in SCENARIOS:
            if name not in only:
                continue
            say(f"{name}: starting")
            began = time.monotonic()
            try:
                results[name] = await plans[name]()
            except Exception as exc:
                say(f"{name}: failed: {exc!r}")
                traceback.print_exc()
                results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            results[name]["elapsed_s"] = round(time.monotonic() - began, 1)
            say(f"{name}: done in {results[name]['elapsed_s']} s")
            run.write_json("results.json", results)
    finally:
        await docker.close()
    results["load_at_end"] = load_average()
    return results


def cleanup_all() -> int:
    """Containers of every bench run (interrupted ones included)."""
    return remove_run_containers(
        lambda labels: (
            BENCH_LABEL in labels or labels.get(LABEL_INSTALLATION, "").startswith("bench-")
        )
    )


def _numbers(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part)


def _setting(text: str) -> tuple[str, str]:
    """`workers=8`: one of tether's settings (the TETHER_* variable's name, lower case)."""
    name, _, value = text.partition("=")
    if name not in Settings.model_fields or not value:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected SETTING=VALUE with SETTING one of tether's settings "
            "(TETHER_WORKERS is workers), e.g. workers=8"
        )
    return name, value


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, short windows")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    parser.add_argument("--cleanup", action="store_true", help="remove leftovers and exit")
    parser.add_argument(
        "--render", metavar="RESULTS_JSON", help="rewrite the report from a run's results.json"
    )
    parser.add_argument(
        "--docker",
        choices=("private", "shared"),
        default="private",
        help="run on an engine of the run's own (default) or on $DOCKER_HOST's",
    )
    parser.add_argument(
        "--what-if",
        action="append",
        type=_setting,
        default=[],
        metavar="SETTING=VALUE",
        help="bulk also measures tether with this one setting changed, e.g. workers=8 "
        "(TETHER_WORKERS); repeatable",
    )
    parser.add_argument(
        "--bulk-sizes", type=_numbers, default=(), help="bulk's N, comma-separated (50,200)"
    )
    parser.add_argument(
        "--bulk-repeats", type=_numbers, default=(), help="bulk's repetitions at each N (2,1)"
    )
    parser.add_argument(
        "--bulk-systems",
        type=lambda text: tuple(text.split(",")),
        default=("tether", "floor", "compose"),
        help="which systems bulk measures, interleaved (tether,floor,compose; also floor_looks)",
    )
    parser.add_argument("--api-repeats", type=int, default=0, help="API runs per system (2)")
    parser.add_argument("--api-seconds", type=int, default=0, help="seconds per API run (12)")
    parser.add_argument(
        "--doc", default=str(REPO / "docs" / "benchmarks.md"), help="where to write the report"
    )
    parser.add_argument(
        "--splice",
        action="store_true",
        help="replace only the measured items' sections (cli, proxy) in the existing report",
    )
    args = parser.parse_args(argv)
    if args.render:
        results = json.loads(Path(args.render).read_text())
        report.write(results, Path(args.render).parent, doc=args.doc)
        say(f"wrote {args.doc} from {args.render}")
        return 0
    if args.cleanup:
        say(f"removed {cleanup_all()} containers")
        return 0
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    if len(args.bulk_sizes) != len(args.bulk_repeats):
        parser.error("--bulk-sizes and --bulk-repeats need one number each per size, e.g. "
                     "--bulk-sizes 50,200 --bulk-repeats 3,2")  # fmt: skip
    run = Run(quick=args.quick, out_root=BENCH / "out")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM cleans up like Ctrl-C
    say(f"run {run.id}: raw results in {run.out}")
    began = time.monotonic()
    engine = None
    try:
        if args.docker == "private":
            engine = PrivateDocker(run.id, run.out / "dockerd.log")
            say(f"starting a private Docker engine ({engine.url})")
            engine.start(default_images())
            os.environ["DOCKER_HOST"] = engine.url
        run.start_postgres()
        results = asyncio.run(measure_all(run, only, args.what_if, args))
        results["elapsed_s"] = round(time.monotonic() - began, 1)
        run.write_json("results.json", results)
        if args.splice:
            report.splice(Path(args.doc), results)
        else:
            report.write(results, run.out, doc=args.doc)
        say(f"wrote {args.doc} in {results['elapsed_s']} s")
    finally:
        run.cleanup()
        if engine is not None:
            engine.stop()
    failed = [name for name in only if "error" in results.get(name, {})]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
