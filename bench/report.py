"""docs/benchmarks.md and its plots (docs/benchmarks/*.png) from one run's results."""

from __future__ import annotations

import math
import re
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import phases
from harness import BENCH
from measures import ratio, summary
from scenarios.swarm import section as swarm_section

MET, MISSED = "**met**", "**missed**"
COMMAND = "make bench"
# bulk's what-if installation (`--what-if`): tether as shipped, one setting changed.
# tether / floor, by (N, direction), from issue 15; any other size: 1.10.
BULK_TARGETS = {(50, "start"): 1.05, (200, "start"): 1.03, (50, "stop"): 1.03}


def _f(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def _mark(ok: bool) -> str:
    return MET if ok else MISSED


class Doc:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.targets: list[tuple[str, str, str, str, bool]] = []  # item, measure, value, target, ok

    def __call__(self, *lines: str) -> None:
        self.lines.extend(lines)

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        self.lines.append("| " + " | ".join(header) + " |")
        self.lines.append(
            "|" + "|".join("---" if i == 0 else "--:" for i in range(len(header))) + "|"
        )
        for row in rows:
            self.lines.append("| " + " | ".join(row) + " |")
        self.lines.append("")

    def target(self, item: str, measure: str, value: str, target: str, ok: bool) -> str:
        self.targets.append((item, measure, value, target, ok))
        return _mark(ok)


def write(results: dict[str, Any], out: Path, doc: str) -> None:
    doc_path = Path(doc)
    plots = doc_path.parent / "benchmarks"
    plots.mkdir(parents=True, exist_ok=True)
    d = Doc()
    sections = [
        ("single", _single),
        ("bulk", _bulk),
        ("idle", _idle),
        ("growth", _growth),
        ("idle", _drift),
        ("api", _api),
        ("cli", cli_section),
        ("ha", _ha),
        ("proxy", proxy_section),
        ("swarm", swarm_section),
    ]
    body = Doc()
    for key, render in sections:
        data = results.get(key)
        if data is None:
            continue
        if "error" in data:
            body(
                f"## {render.__doc__}",
                "",
                f"Not measured: the scenario failed: `{data['error']}`.",
                "",
            )
            continue
        render(body, data, plots, doc_path.parent)
    _head(d, results, out)
    _summary(d, body.targets)
    d.lines.extend(body.lines)
    _findings(d)
    _reproduce(d, results)
    doc_path.write_text("\n".join(d.lines).rstrip() + "\n")


def _head(d: Doc, results: dict[str, Any], out: Path) -> None:
    m = results["machine"]
    d(
        "# Benchmarks",
        "",
        "tether measured side by side with what it replaces, in one run of one command "
        f"(`{COMMAND}`, i.e. `python bench/run.py`): the physical floor (direct aiodocker calls on "
        "the same engine, image, container configuration and concurrency), docker-compose "
        "(Debian's package) and the same SQL driven directly (pgbench, and asyncpg without HTTP). "
        "Every tether figure below was measured interleaved with its baselines (the order "
        "alternates or rotates run by run), so that background load falls on both; compare the "
        "ratios, not the absolute times.",
        "",
        f"This report: run `{results['run']}` of {time.strftime('%Y-%m-%d')}"
        + (
            " with `--what-if` (bulk also measures what-if installations: "
            + ", ".join(_what_ifs(results).values())
            + f"; plain `{COMMAND}` leaves them out and takes a few minutes less)"
            if _what_ifs(results)
            else ""
        )
        + (
            " in **--quick** mode (small sizes, short windows: not the figures of record)"
            if results.get("quick")
            else ""
        )
        + f", {_f(results.get('elapsed_s', 0) / 60, 1)} minutes; raw results, operator/API logs "
        f"and profiles in `bench/out/{out.name}/` (not committed).",
        "",
        "## Machine",
        "",
    )
    d.table(
        ["", ""],
        [
            ["CPU", f"{m['cpu']}, {m['cores']} cores"],
            ["memory", f"{m['memory_gib']} GiB"],
            ["OS", f"{m['os']}, kernel {m['kernel']}"],
            ["Docker Engine", f"{m['docker']}, {m.get('docker_engine', 'shared')} (see Noise)"],
            ["docker-compose", m["docker_compose"]],
            ["Postgres", f"image `{m['postgres_image']}` (testcontainers, published on 127.0.0.1)"],
            ["Python", m["python"]],
            [
                "load average (1, 5, 15 min)",
                f"{' '.join(m['load_at_start'])} at the start, "
                f"{' '.join(results.get('load_at_end', ['?']))} at the end",
            ],
        ],
    )
    d(
        "**Noise.** "
        + (
            "The run used a Docker engine of its own (the same dockerd binary, its own data root, "
            "bridge and containerd: `--docker private`), so that the test suites other engineers "
            "ran on this machine meanwhile did not share the engine with it; they still shared "
            "the 2 CPU cores (see the load averages). "
            if m.get("docker_engine") == "private"
            else "The run used the machine's shared Docker engine while other engineers ran their "
            "test suites (real Postgres, real Docker) on it and on the same 2 cores. "
        )
        + "Each item is therefore measured interleaved with its baseline, repeated (≥ 30 runs "
        f"for latencies; {_repeats(results)}), and judged on medians and ratios; a re-run "
        "moves absolute figures by tens of percent, ratios much less.",
        "",
    )


def _repeats(results: dict[str, Any]) -> str:
    """How many repetitions the API and bulk items ran, as measured."""
    said = []
    api = results.get("api") or {}
    if api.get("repeats"):
        said.append(f"{api['repeats']} repetitions for the API")
    bulk = results.get("bulk") or {}
    for n, times in zip(bulk.get("sizes", []), bulk.get("repeats", []), strict=False):
        said.append(f"{times} for bulk at {n} projects")
    return ", ".join(said) or "as each item's section says"


def _what_ifs(results: dict[str, Any]) -> dict[str, str]:
    """The bulk item's what-if installations: system name → the setting it changed."""
    return dict((results.get("bulk") or {}).get("what_if") or {})


def _summary(d: Doc, targets: list[tuple[str, str, str, str, bool]]) -> None:
    d("## Targets", "")
    d.table(
        ["item", "measure", "tether vs baseline", "target", ""],
        [[item, measure, value, target, _mark(ok)] for item, measure, value, target, ok in targets],
    )
    met = sum(1 for *_, ok in targets if ok)
    d(f"{met} of {len(targets)} targets met.", "")


# 1. Single project


def _single(d: Doc, data: dict[str, Any], plots: Path, docs: Path) -> None:
    """1. Single project: write acknowledged → running, → Ready"""
    d(
        "## 1. Single project: write acknowledged → running, → Ready",
        "",
        f"{data['iterations']} runs of each, interleaved. tether: from the moment the "
        "desired-state write is acknowledged (its transaction committed) to the container's "
        "`StartedAt` (running) and to the operator's `converged Ready` record (Ready: its HTTP "
        "health check answered, status written). Floor: from just before the aiodocker call(s) to "
        "`StartedAt`, and to the first answer of the endpoint polled every 5 ms. Overhead = tether "
        "− floor, at the same percentile. The write itself (not included) took the time in the "
        "last column.",
        "",
    )
    rows = []
    for case, label in (
        ("start_from_stopped", "start from stopped"),
        ("fresh_deploy", "fresh deploy"),
    ):
        arms = data[case]
        for measure in ("running", "ready"):
            t, f = summary(arms["tether"][measure]), summary(arms["floor"][measure])
            over50, over95 = t["p50"] - f["p50"], t["p95"] - f["p95"]
            ok50 = d.target(
                "1. single",
                f"{label} → {measure}, p50 overhead",
                f"{round(over50):+d} ms",
                "≤ 30 ms",
                over50 <= 30,
            )
            ok95 = d.target(
                "1. single",
                f"{label} → {measure}, p95 overhead",
                f"{round(over95):+d} ms",
                "≤ 100 ms",
                over95 <= 100,
            )
            write = summary(arms["tether"]["write"])
            rows.append(
                [
                    f"{label} → {measure}",
                    _f(t["p50"]),
                    _f(t["p95"]),
                    _f(f["p50"]),
                    _f(f["p95"]),
                    f"{_f(over50)} {ok50}",
                    f"{_f(over95)} {ok95}",
                    f"{_f(write['p50'], 1)} / {_f(write['p95'], 1)}",
                ]
            )
        if "tether_fast_health" in arms:
            fast = arms["tether_fast_health"]
            t, f = summary(fast["ready"]), summary(arms["floor"]["ready"])
            rows.append(
                [
                    f"{label} → ready, *health interval 0.1 s*",
                    _f(t["p50"]),
                    _f(t["p95"]),
                    _f(f["p50"]),
                    _f(f["p95"]),
                    _f(t["p50"] - f["p50"]),
                    _f(t["p95"] - f["p95"]),
                    "",
                ]
            )
    d.table(
        [
            "ms",
            "tether p50",
            "tether p95",
            "floor p50",
            "floor p95",
            "overhead p50",
            "overhead p95",
            "write p50 / p95",
        ],
        rows,
    )
    _plot_single(data, plots / "single.png")
    d("![latency distributions](benchmarks/single.png)", "")


def _cdf(ax: Any, values: list[float], label: str, style: str = "-") -> None:
    ordered = sorted(values)
    ax.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], style, label=label)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_single(data: dict[str, Any], path: Path) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for row, (case, label) in enumerate(
        (("start_from_stopped", "start from stopped"), ("fresh_deploy", "fresh deploy"))
    ):
        for col, measure in enumerate(("running", "ready")):
            ax = axes[row][col]
            arms = data[case]
            _cdf(ax, arms["tether"][measure], "tether")
            _cdf(ax, arms["floor"][measure], "direct aiodocker", "--")
            if measure == "ready" and "tether_fast_health" in arms:
                _cdf(ax, arms["tether_fast_health"]["ready"], "tether, health interval 0.1 s", ":")
            ax.set_title(f"{label} → {measure}")
            ax.set_xlabel("ms")
            ax.set_ylabel("fraction of runs")
            ax.set_xscale("log")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# 2. Bulk


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _bulk(d: Doc, data: dict[str, Any], plots: Path, docs: Path) -> None:
    """2. Bulk: N projects stopped → running, running → stopped"""
    d(
        "## 2. Bulk: N projects stopped → running and running → stopped",
        "",
        "Wall time from the first desired-state write (tether), the first aiodocker call (floor, "
        f"{data['concurrency']} at a time like tether's {data['concurrency']} workers) or the "
        "docker-compose command, until every project converged: for a start, all endpoints answer "
        "(tether: every project recorded `Ready`); for a stop, tether: every project recorded "
        "`Stopped`; floor: the last stop call returned; compose: `stop` returned. Each system "
        "has its own N containers (same image and configuration), created and cycled once "
        "beforehand; mean of "
        + " and ".join(f"{r} at {n}" for n, r in zip(data["sizes"], data["repeats"], strict=True))
        + " repetitions, the order of the systems rotating. "
        "`running`/`exited` is the last container's StartedAt/FinishedAt.",
        "",
    )
    if "failed" in data:
        d(
            f"**The engine failed during this item** ({data['failed']}): Docker Engine 20.10 "
            "deadlocks now and then when many containers exit at once (libnetwork, "
            "moby/moby#46661; its goroutine dump shows two endpoint leaves waiting on each "
            "other), after which no container can be stopped or started. Figures below are the "
            "cycles completed before it; the missing ones are marked –.",
            "",
        )
    rows, plot = [], {}
    for n in data["sizes"]:
        runs = data.get(str(n))
        if not runs:
            continue
        for direction, key, docker_key in (
            ("start", "ready_s", "running_s"),
            ("stop", "converged_s", "exited_s"),
        ):
            most = BULK_TARGETS.get((n, direction), 1.10)
            if not (runs.get("tether") and runs.get("floor")):
                d.target("2. bulk", f"{n} projects {direction}: tether / floor",
                         "not measured (engine deadlock)", f"≤ {most:.2f}×", False)  # fmt: skip
                rows.append([f"{n} {direction}", "–", "–", "–", "not measured", "", "", ""])
                continue
            t = _median([r[direction][key] for r in runs["tether"]])
            f = _median([r[direction][key] for r in runs["floor"]])
            t2 = _median([r[direction][docker_key] for r in runs["tether"]])
            f2 = _median([r[direction][docker_key] for r in runs["floor"]])
            composed = runs.get("compose") or []  # `--bulk-systems` may leave compose out
            c = _median([r[direction][key] for r in composed]) if composed else None
            c2 = _median([r[direction][docker_key] for r in composed]) if composed else None
            # Each repetition's own ratio (its systems ran back to back): their median and range.
            each = [
                ratio(a[direction][key], b[direction][key])
                for a, b in zip(runs["tether"], runs["floor"], strict=False)
            ]
            vs_floor = _median(each)
            ok_f = d.target(
                "2. bulk",
                f"{n} projects {direction}: tether / floor",
                f"{vs_floor:.2f}× ({min(each):.2f}–{max(each):.2f})",
                f"≤ {most:.2f}×",
                vs_floor <= most,
            )
            vs_compose = None if c is None else ratio(t, c)
            ok_c = (
                ""
                if vs_compose is None
                else d.target(
                    "2. bulk",
                    f"{n} projects {direction}: tether / compose",
                    f"{vs_compose:.2f}×",
                    "< 1.00×",
                    vs_compose < 1.0,
                )
            )
            calls = runs["tether"][-1][direction]["docker_calls"]
            passes = runs["tether"][-1][direction]["passes"]
            per = ", ".join(f"{op} {v / n:.1f}" for op, v in sorted(calls.items()))
            rows.append(
                [
                    f"{n} {direction}",
                    _f(t, 2),
                    _f(f, 2),
                    _f(c, 2),
                    f"{vs_floor:.2f}× ({min(each):.2f}–{max(each):.2f}) {ok_f}",
                    "–" if vs_compose is None else f"{vs_compose:.2f}× {ok_c}",
                    f"{_f(t2, 2)} / {_f(f2, 2)} / {_f(c2, 2)}",
                    f"{per}; passes {sum(passes.values()) / n:.1f}",
                ]
            )
            plot[(n, direction)] = (t, f, math.nan if c is None else c)
    d.table(
        [
            "N, direction",
            "tether s",
            "floor s",
            "compose s",
            "tether / floor",
            "tether / compose",
            "running or exited s (t / f / c)",
            "tether Docker calls per project",
        ],
        rows,
    )
    _bulk_breakdown(d, data)
    _bulk_phases(d, data)
    rows = []
    for n in data["sizes"]:
        runs = data.get(str(n), {})
        if not (runs.get("floor") and runs.get("tether")):
            continue
        for key, label in (data.get("what_if") or {}).items():
            if not runs.get(key):
                continue
            for direction, measure in (("start", "ready_s"), ("stop", "converged_s")):
                w = _mean([r[direction][measure] for r in runs[key]])
                f = _mean([r[direction][measure] for r in runs["floor"]])
                t = _mean([r[direction][measure] for r in runs["tether"]])
                calls = runs[key][-1][direction]["docker_calls"]
                passes = runs[key][-1][direction]["passes"]
                per = ", ".join(f"{op} {v / n:.1f}" for op, v in sorted(calls.items()))
                rows.append(
                    [
                        f"{n} {direction}: {label}",
                        _f(w, 2),
                        f"{ratio(w, f):.2f}×",
                        f"{ratio(w, t):.2f}×",
                        f"{per}; passes {sum(passes.values()) / n:.1f}",
                    ]
                )
    if rows:
        d(
            "What-if installation (`--what-if`): tether as shipped with one setting changed, "
            "measured in the same rotation:",
            "",
        )
        d.table(
            ["N, direction: setting", "s", "/ floor", "/ tether, defaults", "calls per project"],
            rows,
        )
    _bulk_looks(d, data)
    _bulk_cpu_parts(d, data)
    _plot_bulk(plot, plots / "bulk.png")
    d("![bulk wall times](benchmarks/bulk.png)", "")


def _bulk_looks(d: Doc, data: dict[str, Any]) -> None:
    """The floor with a pass's inspects (`floor_looks`): what observing afresh costs Docker, the
    part of tether's gap that no change to tether short of not looking can close."""
    rows = []
    for n in data["sizes"]:
        runs = data.get(str(n), {})
        if not (runs.get("floor_looks") and runs.get("floor") and runs.get("tether")):
            continue
        for direction, key in (("start", "ready_s"), ("stop", "converged_s")):
            looks, floor, tether = (
                [r[direction][key] for r in runs[system]]
                for system in ("floor_looks", "floor", "tether")
            )
            over_floor = [ratio(a, b) for a, b in zip(looks, floor, strict=False)]
            over_looks = [ratio(a, b) for a, b in zip(tether, looks, strict=False)]
            rows.append(
                [
                    f"{n} {direction}",
                    _f(_median(looks), 2),
                    f"{_median(over_floor):.2f}× ({min(over_floor):.2f}–{max(over_floor):.2f})",
                    f"{_median(over_looks):.2f}× ({min(over_looks):.2f}–{max(over_looks):.2f})",
                ]
            )
    if rows:
        d(
            "The floor with a pass's looks (`--bulk-systems` with `floor_looks`): the floor's "
            "changes, each between an inspect of its container before and one after, as a "
            "tether pass makes them, under tether's caps (8 changes, 16 other calls); ratios of "
            "each repetition, median and range:",
            "",
        )
        d.table(["N, direction", "floor + looks s", "/ floor", "tether /"], rows)


def _bulk_breakdown(d: Doc, data: dict[str, Any]) -> None:
    """Where tether's bulk time goes: Docker time per project by call, and the operator's CPU."""
    rows = []
    for n in data["sizes"]:
        for direction, measure in (("start", "ready_s"), ("stop", "converged_s")):
            runs = data.get(str(n), {}).get("tether")
            if not runs:
                continue
            last = runs[-1][direction]
            seconds = last.get("docker_seconds")
            if not seconds:
                continue
            calls = last["docker_calls"]
            mean_ms = {op: 1000 * seconds[op] / max(calls.get(op, 1), 1) for op in seconds}
            spent = ", ".join(
                f"{op} {calls.get(op, 0) / n:.1f} × {mean_ms[op]:.0f} ms" for op in sorted(seconds)
            )
            wall = last[measure]
            rows.append(
                [
                    f"{n} {direction}",
                    spent,
                    _f(1000 * sum(seconds.values()) / n, 0),
                    f"{100 * last['operator_cpu_s'] / wall:.0f} %",
                    _cpu_per_project(data, n, direction, "engine_s"),
                    _cpu_per_project(data, n, direction, "machine_s"),
                ]
            )
    if rows:
        d(
            "Where tether's time goes (last repetition): Docker calls per project × their mean "
            "wall time (as the operator saw it, waiting for a slot included), Docker time per "
            "project, and the operator's CPU over the wall time. Then the CPU each system's "
            "cycle cost per project (median over the repetitions, tether / floor): the Docker "
            "engine's (dockerd and containerd, which answer every API call), and the whole "
            "machine's (everything: Docker, containers, tether, Postgres, the benchmark; not "
            "the hypervisor's steal). On 2 cores a bulk start keeps them busy, so CPU spent "
            "beside Docker's own lengthens the wall time:",
            "",
        )
        d.table(["N, direction", "calls per project × mean time", "Docker ms per project",
                 "operator CPU", "engine CPU ms per project (t / f)",
                 "machine CPU ms per project (t / f)"], rows)  # fmt: skip


CPU_PARTS = (("engine_s", "engine"), ("postgres_s", "Postgres"), ("haproxy_s", "HAProxy"),
             ("bench_s", "bench"))  # fmt: skip


def _bulk_cpu_parts(d: Doc, data: dict[str, Any]) -> None:
    """Who spent each system's machine CPU per project: what of tether's excess over the floor
    is Docker's, tether's own (operator, Postgres, HAProxy) or the benchmark's."""
    rows = []
    for n in data["sizes"]:
        for direction in ("start", "stop"):
            for system in ("tether", "floor", "floor_looks"):
                runs = [r[direction] for r in data.get(str(n), {}).get(system, [])]
                if not runs or "bench_s" not in runs[0].get("cpu", {}):
                    continue
                machine = _ms_per_project([r["cpu"]["machine_s"] for r in runs], n)
                parts = [_ms_per_project([r["cpu"][key] for r in runs], n) for key, _ in CPU_PARTS]
                operator = _ms_per_project([r.get("operator_cpu_s") or 0.0 for r in runs], n)
                rest = machine - sum(parts) - operator
                steal = _ms_per_project([r["cpu"]["steal_s"] for r in runs], n)
                rows.append(
                    [f"{n} {direction}", system, _f(machine, 0), _f(operator, 0)]
                    + [_f(part, 0) for part in parts]
                    + [_f(rest, 0), _f(steal, 0)]
                )
    if rows:
        d(
            "Who spent the machine's CPU, ms per project (medians over the repetitions): the "
            "operator, the Docker engine (dockerd, containerd), Postgres and HAProxy (every "
            "process of each, and their ended children), this benchmark's process (its writes, "
            "probes and Docker calls), and the rest (the containers themselves, their shims and "
            "runc, the kernel). Steal is the time the hypervisor gave the cores to other "
            "machines meanwhile, not counted in the machine's: a cycle with much of it ran on "
            "less than 2 cores:",
            "",
        )
        d.table(["N, direction", "system", "machine", "operator",
                 *(name for _, name in CPU_PARTS), "rest", "steal"], rows)  # fmt: skip


def _ms_per_project(seconds: list[float], n: int) -> float:
    return 1000 * _median(seconds) / n


def _cpu_per_project(data: dict[str, Any], n: int, direction: str, key: str) -> str:
    """tether's and the floor's CPU of `key` per project, medians over the repetitions."""
    runs = data.get(str(n), {})
    shown = []
    for system in ("tether", "floor"):
        spent = [r[direction]["cpu"][key] for r in runs.get(system, []) if "cpu" in r[direction]]
        shown.append(_f(_ms_per_project(spent, n), 0) if spent else "–")
    return " / ".join(shown)


def _bulk_phases(d: Doc, data: dict[str, Any]) -> None:
    """Each project's timeline, phase by phase, from the operator's trace (bench/phases.py)."""
    rows = []
    for n in data["sizes"]:
        for direction in ("start", "stop"):
            traces = [
                r[direction]["trace"]
                for r in data.get(str(n), {}).get("tether", [])
                if r[direction].get("trace", {}).get("phases")
            ]
            if not traces:
                continue
            cells = []
            for name, _ in phases.START_PHASES:
                p50 = [t["phases"][name]["p50_ms"] for t in traces if name in t["phases"]]
                p90 = [t["phases"][name]["p90_ms"] for t in traces if name in t["phases"]]
                cells.append(f"{_median(p50):.0f} / {_median(p90):.0f}" if p50 else "")
            per = _median([t["passes_per_project"] for t in traces])
            writes = _median([t["status_writes_per_project"] for t in traces])
            held = _median([t["worker_s_per_project"] for t in traces])
            rows.append(
                [f"{n} {direction}", *cells, f"{per:.2f} / {writes:.2f}", f"{1000 * held:.0f}"]
            )
    if rows:
        d(
            "Each project's timeline, phase by phase (p50 / p90 over the projects, ms; median "
            "over the repetitions), from the operator's trace (`bench/operator_process.py`, "
            "`bench/phases.py`): "
            + "; ".join(f"**{name}**: {what}" for name, what in phases.START_PHASES)
            + ". Then the passes and status writes per project, and how long its passes held "
            "a worker.",
            "",
        )
        d.table(
            ["N, direction", *(name for name, _ in phases.START_PHASES), "passes / writes",
             "worker ms"],
            rows,
        )  # fmt: skip


def _plot_bulk(plot: dict[tuple[int, str], tuple[float, float, float]], path: Path) -> None:
    plt = _pyplot()
    keys = sorted(plot)
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.27
    styles = (("tether", None), ("direct aiodocker", "//"), ("docker-compose", ".."))
    for i, (label, style) in enumerate(styles):
        xs = [k + (i - 1) * width for k in range(len(keys))]
        ax.bar(xs, [plot[key][i] for key in keys], width, label=label, hatch=style)
    ax.set_xticks(range(len(keys)), [f"{n} {direction}" for n, direction in keys])
    ax.set_ylabel("wall time until all converged (s)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# 3. Idle


def _ha(d: Doc, data: dict[str, Any], plots: Path, docs: Path) -> None:
    """8. High availability: takeover on death and on a hang, and the lease's idle cost"""
    ttl = data["ttl_s"]
    death, hang, idle = data["death"], data["hang"], data["idle"]
    base = data.get("baseline_idle") or data["baseline_by_construction"]
    measured_base = "baseline_idle" in data
    d(f"## {_ha.__doc__}", "")
    d(
        "Real `tether operator` processes, default settings (lease TTL "
        f"{_f(ttl, 0)} s), one database; times from the signal to the standby's "
        "`lease acquired` log line, both on the machine's monotonic clock.",
        "",
    )
    d.table(
        ["", "median", "min", "max", "lease TTL", "target"],
        [
            [
                f"takeover on death (SIGKILL, {len(death['seconds'])} rounds)",
                f"{_f(death['p50'], 2)} s",
                f"{_f(min(death['seconds']), 2)} s",
                f"{_f(max(death['seconds']), 2)} s",
                f"{_f(ttl, 0)} s",
                d.target(
                    "8. HA",
                    "takeover on death",
                    f"{_f(death['p50'], 2)} s",
                    "≤ 1 s",
                    death["p50"] <= 1.0,
                ),
            ],
            [
                f"takeover on a hang (SIGSTOP, {len(hang['seconds'])} rounds)",
                f"{_f(hang['p50'], 2)} s",
                f"{_f(min(hang['seconds']), 2)} s",
                f"{_f(max(hang['seconds']), 2)} s",
                f"{_f(ttl, 0)} s",
                d.target(
                    "8. HA",
                    "takeover on a hang",
                    f"{_f(hang['p50'], 2)} s",
                    "≤ TTL + 2 s",
                    hang["p50"] <= ttl + 2,
                ),
            ],
        ],
    )
    # pg_stat_statements records no statement that ends in an error: the standbys' lock waits
    # that time out (each `lock_timeout`, then an error) are counted here by construction.
    waits = data.get("idle_lock_waits_per_s", 2 / min(2.0, ttl / 4))
    lease_s = idle["lease_statements_per_s"] + waits
    d(
        f"Idle, three operators (one active, two standbys), no project, "
        f"{_f(idle['window_s'], 0)} s: **{_f(idle['statements_per_s'] + waits, 2)} statements/s** "
        f"of the operator role in all, {_f(lease_s, 2)} /s of them the lease's: the active one "
        "renews every TTL/3, each standby waits for the lock at most 2 s and then looks for an "
        "expired holder (pg_stat_statements counted "
        f"{_f(idle['lease_statements_per_s'], 2)} /s; the {_f(waits, 2)} /s of lock waits that "
        "time out end in an error, which it does not record, and are added by construction). "
        "The single lease it replaced: "
        f"{_f(base['lease_statements_per_s'], 2)} /s for the lease"
        + (
            f", {_f(base['statements_per_s'], 2)} /s in all (measured: three operators of the "
            "tree before this change, the same window)"
            if measured_base
            else " (by construction: one `take_lease` per operator every 5 s)"
        )
        + ". The price of takeover in a fraction of a second instead of up to a TTL of 15 s.",
        "",
    )


def _idle(d: Doc, data: dict[str, Any], plots: Path, docs: Path) -> None:
    """3. Idle cost"""
    idle = data["idle"]
    d(
        f"## 3. Idle cost: {data['projects']} converged running projects, "
        f"{_f(idle['elapsed_s'] / 60, 1)} minutes",
        "",
        f"The operator (`tether operator`, defaults: resync every 30 s ± 10 %) with "
        f"{data['projects']} projects converged and running (set up in {data['setup_s']} s), "
        "nothing changing. CPU time and RSS from /proc; Docker calls counted at the driver's "
        "single entry point; statements from pg_stat_statements for the operator's own Postgres "
        "role. There is no baseline that costs anything here (neither docker-compose nor a script "
        "runs when nothing changes); dockerd's CPU over the same window is given for scale.",
        "",
    )
    statements_s = idle["statements_per_s"]
    reset = sum(
        n
        for q, n in idle["statements"].items()
        if q in ("CLOSE ALL", "RESET ALL", "UNLISTEN *", "SELECT pg_advisory_unlock_all()")
    )
    rows = [
        [
            "operator CPU",
            f"{_f(idle['cpu_pct_of_core'], 2)} % of one core ({_f(idle['cpu_s'], 1)} s)",
            "≤ 1 %",
            d.target(
                "3. idle",
                "operator CPU",
                f"{_f(idle['cpu_pct_of_core'], 2)} % of a core",
                "≤ 1 %",
                idle["cpu_pct_of_core"] <= 1.0,
            ),
        ],
        [
            "Docker API calls",
            f"{_f(idle['docker_calls_per_s'], 3)} /s "
            f"({', '.join(f'{k} {v}' for k, v in idle['docker_calls'].items()) or 'none'})",
            "≤ 1 /s",
            d.target(
                "3. idle",
                "Docker calls",
                f"{_f(idle['docker_calls_per_s'], 3)} /s",
                "≤ 1 /s",
                idle["docker_calls_per_s"] <= 1.0,
            ),
        ],
        [
            "Postgres statements",
            f"{_f(statements_s, 2)} /s ({_f(reset / idle['elapsed_s'], 2)} /s "
            "of them asyncpg's pool reset)",
            "≤ 1 /s",
            d.target(
                "3. idle",
                "Postgres statements",
                f"{_f(statements_s, 2)} /s",
                "≤ 1 /s",
                statements_s <= 1.0,
            ),
        ],
        [
            "operator RSS",
            f"{_f(idle['rss_max_mb'], 1)} MB max, {_f(idle['rss_end_mb'], 1)} MB at the end",
            "≤ 100 MB",
            d.target(
                "3. idle",
                "operator RSS",
                f"{_f(idle['rss_max_mb'], 1)} MB",
                "≤ 100 MB",
                idle["rss_max_mb"] <= 100,
            ),
        ],
        ["passes", ", ".join(f"{k} {v}" for k, v in idle["passes"].items()) or "none", "", ""],
        ["dockerd CPU (scale)", f"{_f(idle['dockerd_cpu_pct_of_core'], 1)} % of one core", "", ""],
    ]
    d.table(["", "measured", "target", ""], rows)
    d("Statements the operator ran in the window:", "")
    d.table(
        ["statement", "count"], [[f"`{_short(q)}`", str(n)] for q, n in idle["statements"].items()]
    )
    probe = data.get("probe_cost", {})
    if probe:
        d(
            "CPU per endpoint probe (the resync probes every settled running project's endpoint), "
            f"measured in the benchmark process over the same {data['projects']} endpoints, "
            "32 at a time:",
            "",
        )
        d.table(
            ["prober", "CPU ms per probe", "wall s for all"],
            [
                [name.replace("_", " "), _f(v["cpu_ms_per_probe"], 3), _f(v["wall_s"], 2)]
                for name, v in probe.items()
            ],
        )
    _profile_section(d, data.get("profile"), "the idle operator")


def _short(query: str, width: int = 90) -> str:
    return query if len(query) <= width else query[: width - 1] + "…"


def _profile_section(d: Doc, profile: dict[str, Any] | None, what: str) -> None:
    if not profile:
        return
    if "error" in profile:
        d(f"Profile of {what}: {profile['error']}", "")
        return
    d(
        f"py-spy profile of {what} ({profile['samples']} samples of CPU activity"
        + (
            f" over {profile['seconds']} s, {_f(profile['cpu_s'], 2)} s of CPU"
            if "seconds" in profile
            else ""
        )
        + "; only samples that hold the GIL, so that waits are left out). Share of samples by "
        "the area of the innermost frame, tether's functions that were on the stack "
        "(inclusive), and the hottest innermost functions:",
        "",
    )
    rows = []
    width = max(len(profile["areas"]), len(profile["tether_inclusive"]), len(profile["leaves"]))
    for i in range(min(width, 12)):
        cells = []
        for key in ("areas", "tether_inclusive", "leaves"):
            items = profile[key]
            cells.append(f"`{items[i][0]}` {items[i][1]} %" if i < len(items) else "")
        rows.append(cells)
    d.table(["area (innermost frame)", "tether function (inclusive)", "innermost function"], rows)


# 4. Growth


def _growth(d: Doc, data: dict[str, Any], plots: Path, docs: Path) -> None:
    """4. Growth: one full resync"""
    sizes = data["sizes"]
    d(
        "## 4. Growth: one full resync at " + ", ".join(f"{n:,}" for n in sizes) + " projects",
        "",
        f"`Operator.resync()` (what runs every ~30 s and after any reconnect), {data['running']} "
        "projects running and the rest desired stopped with no container, every project "
        "converged; the stopped ones are SQL clones of one the operator converged (same rows, "
        f"same status). Median of {data['repeats']} resyncs after one warm-up. `queued` is how "
        "many projects the resync handed to the workers (0: it found everything at rest).",
        "",
    )
    rows = []
    xs, walls, cpus = [], [], []
    for n in sizes:
        r = data[str(n)]
        wall, cpu = r["wall_ms"]["p50"], r["cpu_ms"]["p50"]
        xs.append(n)
        walls.append(wall)
        cpus.append(cpu)
        gc_off = r.get("wall_ms_gc_off", {}).get("p50")
        rows.append(
            [
                f"{n:,}",
                _f(wall, 1),
                _f(gc_off, 1),
                _f(cpu, 1),
                _f(1000 * wall / n, 0),
                _f(r["desired_all_ms"], 1),
                _f(r["list_all_ms"], 1),
                ", ".join(f"{k} {v}" for k, v in r["docker_calls"].items()),
                str(r["statements"]),
                str(r["queued"]),
            ]
        )
    d.table(
        [
            "projects",
            "wall ms",
            "wall ms, GC paused",
            "CPU ms",
            "µs per project",
            "desired_all() ms",
            "list_all() ms",
            "Docker calls",
            "statements",
            "queued",
        ],
        rows,
    )
    exponent = math.log(walls[-1] / walls[-2]) / math.log(xs[-1] / xs[-2]) if len(xs) > 1 else 1.0
    calls_constant = len({str(data[str(n)]["docker_calls"]) for n in sizes}) == 1
    statements_constant = len({data[str(n)]["statements"] for n in sizes}) == 1
    constant = calls_constant and statements_constant
    ok = exponent <= 1.15 and constant
    d.target(
        "4. growth",
        f"resync time {xs[-2]:,} → {xs[-1]:,} projects",
        f"∝ N^{exponent:.2f}, calls {'constant' if constant else 'growing'}",
        "linear or better",
        ok,
    )
    d(
        f"From {xs[-2]:,} to {xs[-1]:,} projects the resync time grows as N^{exponent:.2f} "
        f"({_mark(ok)}: linear or better, with {'a constant' if calls_constant else 'a growing'} "
        f"number of Docker calls and {'a constant' if statements_constant else 'a growing'} number "
        "of statements). Below ~1 000 projects the fixed part (probing the running projects' "
        "endpoints, one `containers.list`) dominates.",
        "",
    )
    _plot_growth(xs, walls, cpus, plots / "growth.png")
    d("![resync time by projects](benchmarks/growth.png)", "")
    profile = data.get("profile")
    if profile and profile.get("text"):
        d(
            f"pyinstrument profile of one resync at {profile['size']:,} projects "
            "(wall time, this process; trimmed):",
            "",
            "```",
            *_trim_pyinstrument(profile["text"]),
            "```",
            "",
        )


def _trim_pyinstrument(text: str, lines: int = 40) -> list[str]:
    kept = [ln for ln in text.splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(kept) if "Operator.resync" in ln), 0)
    return kept[start : start + lines]


def _plot_growth(xs: list[int], walls: list[float], cpus: list[float], path: Path) -> None:
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.loglog(xs, walls, "o-", label="wall")
    left.loglog(xs, cpus, "s--", label="CPU")
    reference = [walls[-1] * x / xs[-1] for x in xs]
    left.loglog(xs, reference, ":", color="grey", label="linear (through the last point)")
    left.set_xlabel("projects")
    left.set_ylabel("one resync (ms)")
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8)
    right.semilogx(xs, [1000 * w / x for w, x in zip(walls, xs, strict=True)], "o-")
    right.set_xlabel("projects")
    right.set_ylabel("wall µs per project")
    right.set_ylim(bottom=0)
    right.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# 5. Drift


def _drift(d: Doc, data: dict[str, Any], plots: Path, docs: Path) -> None:
    """5. Drift repair"""
    drift = data.get("drift")
    if not drift:
        return
    t, f = drift["tether"], drift["floor"]
    d(
        "## 5. Drift repair: a container killed from outside → running again "
        f"({drift['kills']} kills)",
        "",
        f"On the idle installation above ({data['projects']} running projects, resync every "
        "~30 s): `docker kill -s KILL` of one project's container, from just before the kill "
        "until the container's new `StartedAt`; each kill on a different project (a second kill of "
        "the same project within 10 minutes is a crash loop, which tether delays by design). "
        "Floor, interleaved: kill a container of the same configuration and start it again at "
        "once.",
        "",
    )
    over = t["p50"] - f["p50"]
    ok = d.target(
        "5. drift",
        "kill → running again, p50",
        f"{round(over):+d} ms over the floor",
        "≤ floor + 300 ms",
        over <= 300,
    )
    d.table(
        ["ms", "p50", "p95", "max"],
        [
            ["tether (event-driven repair)", _f(t["p50"]), _f(t["p95"]), _f(t["max"])],
            ["floor (kill, then start at once)", _f(f["p50"]), _f(f["p95"]), _f(f["max"])],
            ["overhead", f"{_f(over)} {ok}", _f(t["p95"] - f["p95"]), ""],
        ],
    )
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    _cdf(ax, drift["samples_ms"]["tether"], "tether")
    _cdf(ax, drift["samples_ms"]["floor"], "kill + direct start", "--")
    ax.set_xlabel("ms from the kill to running again")
    ax.set_ylabel("fraction of kills")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(plots / "drift.png", dpi=90)
    plt.close(fig)
    d("![drift repair](benchmarks/drift.png)", "")


# 6. API


def _api(d: Doc, data: dict[str, Any], plots: Path, docs: Path) -> None:
    """6. API writes"""
    runs = data["runs"]
    d(
        f"## 6. API writes: {data['clients']} concurrent clients",
        "",
        f"{data['repeats']} runs of {data['duration_s']:.0f} s per system, interleaved, each on "
        "its own 800 projects; every write changes the project (stop/start alternately). tether: "
        "`tether api` (its defaults: one uvicorn process, pool of 10 connections, access log on) "
        "under wrk. Baselines: the same statements per write (token lookup, which tether caches "
        "for 5 s; then one statement that locks, updates, records the event and notifies: "
        "`set_desired_state` in api/queries.sql) from pgbench (C, prepared statements) and "
        "from 16 asyncpg "
        "connections in Python, against the same Postgres (reached, like tether, through Docker's "
        "port publishing). No operator runs.",
        "",
    )

    def agg(system: str) -> dict[str, float]:
        rs = runs[system]
        return {
            "writes_per_s": _mean([r["writes_per_s"] for r in rs]),
            "p50_ms": _mean([r["p50_ms"] for r in rs]),
            "p99_ms": _mean([r["p99_ms"] for r in rs]),
            "max_ms": max(r["max_ms"] for r in rs),
            "changed": sum(r["changed_writes"] for r in rs) / max(1, sum(r["writes"] for r in rs)),
        }

    systems = {s: agg(s) for s in runs}
    # Each repetition's own ratio (the systems ran back to back): their median and range.
    each = [
        ratio(a["writes_per_s"], b["writes_per_s"])
        for a, b in zip(runs["tether"], runs["pgbench"], strict=False)
    ]
    share = _median(each)
    ok_t = d.target(
        "6. API",
        "writes/s vs pgbench (closed loop)",
        f"{share * 100:.0f} % ({min(each) * 100:.0f}–{max(each) * 100:.0f} %)",
        "≥ 75 %",
        share >= 0.75,
    )
    p99 = systems["tether"]["p99_ms"]
    ok_p = d.target(
        "6. API",
        "p99 latency (closed loop)",
        f"{_f(p99, 1)} ms (pgbench {_f(systems['pgbench']['p99_ms'], 1)} ms)",
        "≤ 15 ms",
        p99 <= 15,
    )
    rows = []
    for system, label in (
        ("tether", "tether API (HTTP)"),
        ("pgbench", "pgbench, same SQL"),
        ("asyncpg", "asyncpg, same SQL"),
    ):
        s = systems[system]
        rows.append(
            [
                label,
                _f(s["writes_per_s"]),
                _f(s["p50_ms"], 1),
                _f(s["p99_ms"], 1),
                _f(s["max_ms"], 0),
                f"{s['changed'] * 100:.0f} %",
                " / ".join(_f(r["writes_per_s"]) for r in runs[system]),
            ]
        )
    d.table(
        [
            "",
            "writes/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "writes that changed",
            "writes/s of each run",
        ],
        rows,
    )
    cpu = _mean([r.get("api_cpu_pct_of_core", math.nan) for r in runs["tether"]])
    writes = _mean([r["writes_per_s"] for r in runs["tether"]])
    pgbench = systems["pgbench"]
    clients = data["clients"]
    d(
        f"tether: {share * 100:.0f} % of pgbench's throughput (median of the repetitions' "
        f"ratios; {ok_t}), p99 {_f(p99, 1)} ms ({ok_p}). The API process used {_f(cpu)} % of "
        f"one core meanwhile: {_f(10 * cpu / writes if writes else math.nan, 2)} ms of CPU per "
        f"write. With {clients} clients that each wait for their answer (a closed loop), the "
        f"mean latency is {clients} / throughput (Little's law), so the closed-loop p99 follows "
        f"the throughput: a mean of {_f(_closed_loop_mean_ms(clients, writes), 1)} ms for "
        f"tether, {_f(_closed_loop_mean_ms(clients, pgbench['writes_per_s']), 1)} ms for "
        f"pgbench (whose p99 was {_f(pgbench['p99_ms'], 1)} ms). Latency is therefore also "
        "measured at a fixed offered rate, below.",
        "",
    )
    _api_fixed_rate(d, data.get("fixed_rate"), clients)
    _profile_section(d, data.get("profile"), "the API process under the same load")


def _closed_loop_mean_ms(clients: int, writes_per_s: float) -> float:
    """The mean latency of `clients` that each wait for their answer, at this throughput."""
    return clients * 1000 / writes_per_s if writes_per_s else math.nan


def _api_fixed_rate(d: Doc, fixed: dict[str, Any] | None, clients: int) -> None:
    """Latency at a fixed offered rate (an open loop: bench/openloop.py and pgbench --rate)."""
    if not fixed:
        return
    rate = fixed["rate_per_s"]
    runs = fixed["runs"]
    p99 = _median([r["p99_ms"] for r in runs["tether"]])
    floor = _median([r["p99_ms"] for r in runs["pgbench"]])
    ok = d.target(
        "6. API",
        f"p99 latency at a fixed {_f(rate)} writes/s",
        f"{_f(p99, 1)} ms (pgbench {_f(floor, 1)} ms)",
        "≤ 15 ms",
        p99 <= 15,
    )
    d(
        f"At a fixed offered rate of {_f(rate)} writes/s ({fixed['share'] * 100:.0f} % of "
        f"pgbench's closed-loop median), Poisson arrivals over {clients} connections, each write's "
        "latency counted from when it was due (pgbench `--rate` counts the same way), "
        "interleaved; medians of the repetitions. The API's schedule is kept by the benchmark's "
        "Python process (bench/openloop.py); the asyncpg row runs the same SQL on that same "
        "schedule, so the difference between it and pgbench is the Python generator's, and "
        "between tether and it, tether's:",
        "",
    )
    labels = {
        "tether": "tether API (HTTP)",
        "pgbench": "pgbench, same SQL",
        "asyncpg": "asyncpg, same SQL, on the API's schedule",
    }
    rows = []
    for system, rs in runs.items():
        rows.append(
            [
                labels.get(system, system),
                _f(_median([r["writes_per_s"] for r in rs])),
                _f(_median([r["p50_ms"] for r in rs]), 1),
                _f(_median([r["p99_ms"] for r in rs]), 1),
                " / ".join(_f(r["p99_ms"], 1) for r in rs),
            ]
        )
    d.table(["", "writes/s", "p50 ms", "p99 ms", "p99 ms of each run"], rows)
    d(f"tether's p99 at this rate: {_f(p99, 1)} ms ({ok}).", "")


def cli_section(d: Doc, data: dict[str, Any], plots: Path, docs: Path) -> None:
    """7. The CLI"""
    medians = data["median_ms"]
    target = data["target_ms"]
    d(
        f"## 7. The CLI: a whole command, exec to exit, against {data['projects']} projects",
        "",
        f"Median wall time of {data['runs']} runs each, interleaved (every round runs each "
        "command once, in a rotating order; a first round warms the caches and is not counted). "
        "`tether api` as in item 6, no operator; every project has a deployment and is desired "
        'running, so `tether start` answers "already running". `curl` sends the same API call '
        "(the network and the API's own cost); `python -c pass` is the interpreter's start. "
        "Rerun this item alone with `.venv/bin/python bench/cli_timing.py` (about a minute; it "
        "rewrites this section only)"
        + (f"; these figures: {data['measured_at']}." if data.get("measured_at") else ".")
        + (
            " Before the rounds, the bytecode of the client's modules is written "
            "(`python -m compileall` of "
            + ", ".join(f"`{Path(f).name}/`" for f in compiled)
            + "), as `pip install` does for an installed package: the editable install of a "
            "checkout has none, and this machine sets PYTHONDONTWRITEBYTECODE=1, so without it "
            "every run compiles them from source (~40 ms of CPU no installed tether pays)."
            if (compiled := data.get("compiled"))
            else ""
        ),
        "",
    )
    cpu = data.get("median_cpu_ms", {})
    rows = []
    for label, median in medians.items():
        times = sorted(data["times_ms"][label])
        p90 = times[min(len(times) - 1, int(len(times) * 0.9))]
        mark = ""
        if label.startswith("tether "):
            mark = d.target("7. CLI", f"`{label}` median wall", f"{_f(median)} ms",
                            f"≤ {target:.0f} ms", median <= target)  # fmt: skip
        rows.append([f"`{label}`", _f(median), _f(p90), _f(times[0]), _f(cpu.get(label)), mark])
    d.table(
        ["command", "median wall ms", "p90 ms", "min ms", "median CPU ms", f"≤ {target:.0f} ms"],
        rows,
    )
    if data.get("before"):
        d(
            f"`before:` rows: the CLI of {data['before']}, installed in a venv of its own and "
            "measured in the same rounds.",
            "",
        )
    d(
        "Where a command's time went, and what took it out (issue 17): importing the API's "
        "pydantic models (~200 ms; the CLI reads the JSON into small records of its own, "
        "`cli/views.py`), httpx (~100 ms; one request goes over a plain socket, `cli/wire.py`, "
        "and httpx is left to the streams), typer 0.29, which coerces every parameter through a "
        "pydantic TypeAdapter (pinned below 0.29), typer's rich help, which imports rich's "
        "markdown and pygments (~300 ms; click's plain help instead), annotations typer "
        "evaluated from strings on every run (the command modules keep them unstringified), and "
        "rich for a table (a table of plain text that fits is written directly, as rich would "
        "draw it), tether's own modules compiled from source on every run (see above), and typer "
        "building a click command from the signature of every command (~10 ms; `run()` hands "
        "it only the command the line names, all of them for `tether --help` or an unknown "
        "name). What is left is Python's start, typer (with its click and `inspect`, ~40 ms of "
        "CPU on this machine, most of it standard-library modules it imports: shutil, inspect, "
        "subprocess, platform, traceback, difflib, gettext), and the API's answer. The next "
        "lever would be declaring the commands with click directly (installed already, under "
        "uvicorn), at the price of the CLI library the design names.",
        "",
    )
    loads = data.get("load_average")
    if loads:
        d(
            f"Load average (1, 5, 15 min) before: {' '.join(loads[0])}; after: "
            f"{' '.join(loads[1])} (2 cores). CPU time (user + system of the command's process) "
            "is what the command itself costs; wall time adds the API's answer and every wait "
            "for a core that other work on the machine holds.",
            "",
        )


# 9. The proxy

OVERHEAD_TARGET_MS = 0.5


def proxy_section(d: Doc, data: dict[str, Any], plots: Path, docs: Path) -> None:
    """9. The proxy: latency and throughput through HAProxy vs direct; a switch's cost"""
    latency, runs = data["latency"], data["throughput"]
    d(
        f"## {proxy_section.__doc__}",
        "",
        f"One project (the test workload) behind HAProxy {data['haproxy']} as `tether proxy` "
        "runs it, routed by a `tether operator` process, on loopback. Latency: one client, a "
        "request through the proxy (the project's endpoint) and one straight to the "
        f"container's published port in turn, {latency['direct']['n']:,} of each, each on a "
        "connection of its own (the workload, busybox httpd, closes every connection after its "
        "answer; through the proxy that is two connections a request). Keep-alive: before the "
        "operator runs, the same with one kept-alive connection on each path to a keep-alive "
        "upstream (tests/upstream.py) routed by hand: what the proxy adds to a request alone. "
        f"Throughput: `wrk -t2 -c{data['clients']}` windows, a connection a request, proxy and "
        f"direct alternating ({len(runs['proxy'])} of each); the load generator shares the 2 "
        "cores with HAProxy and the container, so requests/s are a ratio, not a capacity.",
        "",
    )
    overhead = latency["proxy"]["p50"] - latency["direct"]["p50"]
    mark = d.target(
        "9. proxy",
        "p50 latency overhead vs direct",
        f"{overhead:+.3f} ms",
        f"≤ {OVERHEAD_TARGET_MS} ms",
        overhead <= OVERHEAD_TARGET_MS,
    )
    arms = [
        ("direct to the container", latency["direct"], ""),
        ("through the proxy", latency["proxy"], f"{overhead:+.3f} ms {mark}"),
    ]
    keepalive = data.get("keepalive_latency")
    if keepalive:
        kept = keepalive["proxy"]["p50"] - keepalive["direct"]["p50"]
        arms += [
            ("keep-alive, direct to the upstream", keepalive["direct"], ""),
            ("keep-alive, through the proxy", keepalive["proxy"], f"{kept:+.3f} ms"),
        ]
    d.table(
        ["one client", "p50 ms", "p99 ms", "max ms", f"p50 overhead (≤ {OVERHEAD_TARGET_MS} ms)"],
        [
            [label, f"{x['p50']:.3f}", f"{x['p99']:.3f}", f"{x['max']:.2f}", m]
            for label, x, m in arms
        ],
    )
    rows = []
    for label in ("direct", "proxy"):
        for n, window in enumerate(runs[label], 1):
            rows.append(
                [
                    f"{label} #{n}",
                    _f(window["rps"]),
                    f"{window['p50_ms']:.2f}",
                    f"{window['p99_ms']:.2f}",
                    _f(window["errors"]),
                ]
            )
    rps = {label: summary([w["rps"] for w in runs[label]])["p50"] for label in runs}
    d.table(
        [f"wrk, {data['clients']} connections", "requests/s", "p50 ms", "p99 ms", "errors"], rows
    )
    d(
        f"Median requests/s through the proxy: {ratio(rps['proxy'], rps['direct']):.0%} of direct.",
        "",
    )
    _proxy_switches(d, data)


def _proxy_switches(d: Doc, data: dict[str, Any]) -> None:
    switches, floors = data["switches"], data["floor_s"]
    d(
        f"A deploy of the next version under {data['clients']} keep-alive clients that never "
        "retry (tests/httpload.py: a client stops at its first failed request), "
        "start-first and stop-first alternating; health check every 0.1 s. Write → serving: "
        "from just before the deploy's write to the first answer of the new version through the "
        "endpoint. Longest gap: the longest time without any answer, from the write until the "
        "new version served alone. Engine floor: a container of the same image created and "
        "started with direct aiodocker calls, to its first answer on its own port (polled every "
        "5 ms).",
        "",
    )
    rows = []
    for strategy in ("start-first", "stop-first"):
        mine = [s for s in switches if s["strategy"] == strategy]
        serving = summary([s["write_to_serving_s"] for s in mine if s["write_to_serving_s"]])
        gaps = summary([s["longest_gap_s"] for s in mine])
        failed = sum(s["failed"] for s in mine)
        mark = d.target(
            "9. proxy",
            f"{strategy}: failed requests per switch",
            f"{failed / len(mine):.1f} ({failed} in {len(mine)})",
            "0",
            failed == 0,
        )
        rows.append(
            [
                strategy,
                f"{serving['p50']:.2f}",
                f"{serving['min']:.2f}–{serving['max']:.2f}",
                f"{gaps['p50'] * 1000:.0f}",
                f"{gaps['max'] * 1000:.0f}",
                f"{failed} in {len(mine)} {mark}",
            ]
        )
    floor = summary(floors)
    rows.append(
        [
            "engine floor",
            f"{floor['p50']:.2f}",
            f"{floor['min']:.2f}–{floor['max']:.2f}",
            "",
            "",
            "",
        ]
    )
    d.table(
        [
            "",
            "write → serving, median s",
            "min–max s",
            "longest gap, median ms",
            "max ms",
            "failed requests",
        ],
        rows,
    )
    loads = data.get("load_average")
    if loads:
        d(
            f"Load average (1, 5, 15 min) before: {' '.join(loads[0])}; "
            f"after: {' '.join(loads[1])}.",
            "",
        )


def splice(doc: Path, results: dict[str, Any]) -> None:
    """Replace the sections (and Targets rows) of the items in `results` in an existing report,
    keeping the other items' figures: what a run of a few items (`--only ... --splice`,
    bench/cli_timing.py) writes."""
    renders = {"cli": cli_section, "proxy": proxy_section, "swarm": swarm_section}
    lines = doc.read_text().splitlines()
    for key, render in renders.items():
        if key not in results or "error" in results[key]:
            continue
        section = Doc()
        render(section, results[key], doc.parent / "benchmarks", doc.parent)
        heading = section.lines[0]
        item = section.targets[0][0]
        lines = [line for line in lines if not line.startswith(f"| {item} |")]
        rows = [
            f"| {i} | {measure} | {value} | {target} | {_mark(ok)} |"
            for i, measure, value, target, ok in section.targets
        ]
        head = next(i for i, line in enumerate(lines) if line.startswith("## Targets"))
        end = next(i for i in range(head + 3, len(lines)) if not lines[i].startswith("|"))
        lines[end:end] = rows
        number = heading.split(".")[0] + "."
        starts = [i for i, line in enumerate(lines) if line.startswith(number)]
        if starts:
            start = starts[0]
            stop = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("## "))
        else:
            start = stop = next(i for i, line in enumerate(lines) if line.startswith("## Findings"))
        lines[start:stop] = section.lines
    head = next(i for i, line in enumerate(lines) if line.startswith("## Targets"))
    end = next(i for i in range(head + 3, len(lines)) if not lines[i].startswith("|"))
    # In the items' order (sorted is stable: an item's rows keep theirs).
    lines[head + 4 : end] = sorted(
        lines[head + 4 : end], key=lambda row: int(row[2:].split(".")[0])
    )
    met = sum(1 for line in lines[head + 4 : end] if line.endswith(f"| {MET} |"))
    for i in range(end, min(end + 3, len(lines))):
        lines[i] = re.sub(
            r"^\d+ of \d+ targets met", f"{met} of {end - head - 4} targets met", lines[i]
        )
    doc.write_text("\n".join(lines).rstrip() + "\n")


# Findings, reproduction


def _findings(d: Doc) -> None:
    findings = BENCH / "findings.md"
    if findings.exists():
        d(findings.read_text().rstrip(), "")


def _reproduce(d: Doc, results: dict[str, Any]) -> None:
    d(
        "## Reproducing",
        "",
        "```sh",
        f"{COMMAND}                      # everything, about 30 minutes; rewrites this file",
        ".venv/bin/python bench/run.py --quick       # small sizes, short windows (~6 minutes)",
        ".venv/bin/python bench/run.py --only api    # one item: single, bulk, idle, growth, api,"
        " cli",
        ".venv/bin/python bench/cli_timing.py        # item 7 alone (~1 min), rewrites its section",
        ".venv/bin/python bench/run.py --cleanup     # containers of interrupted runs",
        "```",
        "",
        "Every run uses its own TETHER_INSTALLATION_ID (`bench-<run>-<item>`), host ports from "
        "61000 up (above the tests' blocks and Linux's ephemeral range), its own Postgres "
        "(testcontainers) with one role per party for pg_stat_statements, and removes every "
        "container it created, by label, also when it fails or is interrupted.",
    )
