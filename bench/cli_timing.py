"""Item 7 of the benchmarks alone: how long a whole `tether` command takes (about a minute).

    .venv/bin/python bench/cli_timing.py            # rewrites item 7 of docs/benchmarks.md
    .venv/bin/python bench/cli_timing.py --runs 11  # fewer runs per command (default 31)
    .venv/bin/python bench/cli_timing.py --before OTHER/bin/tether  # and an earlier CLI beside it

An earlier CLI to compare with is installed in a venv of its own, e.g. for commit REV:
`git archive REV | tar -x -C /tmp/old && python3 -m venv /tmp/oldvenv && /tmp/oldvenv/bin/pip
install /tmp/old`, then `--before /tmp/oldvenv/bin/tether --before-label REV`.

Starts a Postgres of its own (testcontainers, on the machine's Docker engine) and `tether api`,
measures as `bench/run.py` does (scenarios/cli.py), and replaces only item 7's section and its
rows of the Targets table in the report, keeping the rest of the last full run's figures.
Run it as a script (not `python -m`), like bench/run.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")
os.environ.setdefault("TC_HOST", "127.0.0.1")
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

import report
from harness import BENCH, REPO, Run, load_average
from scenarios import cli


async def _measure(run: Run, runs: int, before: str | None) -> dict[str, Any]:
    await run.prepare_databases()
    return await cli.measure(run, runs=runs, before=before)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=31, help="runs per command (default 31)")
    parser.add_argument(
        "--before", metavar="TETHER", help="another `tether` executable to measure beside this one"
    )
    parser.add_argument(
        "--before-label", metavar="TEXT", help="what the report calls it (default: its path)"
    )
    parser.add_argument("--doc", default=str(REPO / "docs" / "benchmarks.md"))
    args = parser.parse_args(argv)
    run = Run(quick=False, out_root=BENCH / "out")
    try:
        run.start_postgres()
        data = asyncio.run(_measure(run, args.runs, args.before))
    finally:
        run.cleanup()
    if args.before_label:
        data["before"] = args.before_label
    run.write_json("results.json", {"cli": data})
    report.splice(Path(args.doc), {"cli": data})
    print(json.dumps(data["median_ms"], indent=2))
    print(f"load average at the end: {' '.join(load_average())}; wrote {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
