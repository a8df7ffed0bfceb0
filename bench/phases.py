"""Where a bulk cycle's time goes, per project and per phase, from the operator's trace
(bench/operator_process.py, $BENCH_TRACE) and the benchmark's own write times.

For a start, each project's timeline is: write sent → NOTIFY received → pass began → Docker
start issued → change slot taken → start returned → first probe → endpoint answered → Ready
recorded; for a stop: write → NOTIFY → pass → stop issued → slot taken → stop returned → Stopped
recorded. A phase missing from a project's timeline (no probe for a stop) is left out of its sums.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Protocol


class Written(Protocol):
    name: str
    began: float
    acked: float


START_PHASES = (
    ("write", "commit acknowledged to the writer"),
    ("notify", "NOTIFY received by the operator"),
    ("queued", "a worker takes it (queue wait)"),
    ("to_call", "pass: desired read, observe, plan, until the Docker call"),
    ("slot", "waiting for a change slot (TETHER_DOCKER_CHANGES)"),
    ("docker", "Docker's start (resp. stop) call"),
    ("to_probe", "inspect again, first endpoint probe"),
    ("to_answer", "probes until the endpoint answered"),
    ("to_record", "route set, status written (Ready / Stopped recorded)"),
)


def read(path: Path, since: float, until: float) -> dict[str, list[dict[str, Any]]]:
    """Every traced moment in [since, until], by project, in time order."""
    by_project: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if not path.exists():
        return {}
    with path.open() as lines:
        for line in lines:
            mark = json.loads(line)
            if since <= mark["t"] <= until:
                by_project[mark["project"]].append(mark)
    for marks in by_project.values():
        marks.sort(key=lambda m: m["t"])
    return dict(by_project)


def _first(marks: list[dict[str, Any]], after: float | None, **want: Any) -> float | None:
    if after is None:
        return None
    for mark in marks:
        if mark["t"] >= after and all(mark.get(k) == v for k, v in want.items()):
            return float(mark["t"])
    return None


def timeline(write: Written, marks: list[dict[str, Any]], action: str) -> dict[str, Any]:
    """One project's phases (seconds) for a start or a stop, and how many passes and status
    writes it took."""
    notified = _first(marks, write.began, what="notified")
    began = _first(marks, notified, what="pass")
    call = _first(marks, began, what=f"{action}_call")
    slot = _first(marks, call, what=f"{action}_slot") or call  # traces before the slots had none
    done = _first(marks, slot, what=f"{action}_done")
    if action == "start":
        probed = _first(marks, done, what="probe")
        answered = _first(marks, done, what="probe", answered=True)
        recorded = _first(marks, done, what="status", ready=True)
    else:
        probed = answered = done  # no probe: the record follows the stop
        recorded = _first(marks, done, what="status", phase="Stopped")
    spans = {
        "write": (write.began, write.acked),
        # NOTIFY is sent at commit, before the writer hears of it: from the write's start.
        "notify": (write.began, notified),
        "queued": (notified, began),
        "to_call": (began, call),
        "slot": (call, slot),
        "docker": (slot, done),
        "to_probe": (done, probed),
        "to_answer": (probed, answered),
        "to_record": (answered, recorded),
    }
    phases = {
        name: end - start
        for name, (start, end) in spans.items()
        if start is not None and end is not None
    }
    if action != "start":
        for name in ("to_probe", "to_answer"):
            phases.pop(name, None)
    total = None if recorded is None else recorded - write.began
    ended = _first(marks, recorded, what="pass_end")  # the pass that recorded it
    window = [m for m in marks if write.began <= m["t"] and (ended is None or m["t"] <= ended)]
    return {
        "phases": phases,
        "total": total,
        "passes": sum(1 for m in window if m["what"] == "pass"),
        "status_writes": sum(1 for m in window if m["what"] == "status"),
        "worker_s": _worker_time(window),
    }


def _worker_time(marks: list[dict[str, Any]]) -> float:
    """How long this project's passes held a worker."""
    held, began = 0.0, None
    for mark in marks:
        if mark["what"] == "pass":
            began = mark["t"]
        elif mark["what"] == "pass_end" and began is not None:
            held += mark["t"] - began
            began = None
    return held


def breakdown(
    path: Path, writes: list[Written], action: str, since: float, until: float
) -> dict[str, Any]:
    """Each phase's median and 90th percentile over the cycle's projects (ms), and the passes,
    status writes and worker time per project."""
    marks = read(path, since, until)
    lines = [timeline(w, marks.get(w.name, []), action) for w in writes]
    phases: dict[str, dict[str, float]] = {}
    for name, _ in START_PHASES:
        values = [line["phases"][name] for line in lines if name in line["phases"]]
        if values:
            phases[name] = {
                "p50_ms": 1000 * statistics.median(values),
                "p90_ms": 1000 * _quantile(values, 0.9),
                "sum_s": sum(values),
            }
    return {
        "projects": len(lines),
        "traced": sum(1 for line in lines if line["total"] is not None),
        "phases": phases,
        "passes_per_project": _mean([line["passes"] for line in lines]),
        "status_writes_per_project": _mean([line["status_writes"] for line in lines]),
        "worker_s_per_project": _mean([line["worker_s"] for line in lines]),
    }


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
