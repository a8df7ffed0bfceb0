"""CPU profiles of a running process with py-spy, summarised for the report: where the samples
fall by area (tether's modules, each library), which of tether's functions hold them (inclusive),
and the hottest leaf functions."""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from harness import REPO, command

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")
TETHER_FOLDERS = ("api", "operator", "cli")


def pyspy_binary() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


async def record(pid: int, seconds: float, out: Path, rate: int = 100) -> Path | None:
    """Sample `pid` for `seconds`, only what holds the GIL; the raw collapsed stacks, or None
    when py-spy is missing or cannot attach.

    Without `--gil`, py-spy counts waits as activity: a thread pool's idle worker (in its queue's
    lock) and uvloop's wait for events (in C, below `Runner.run`) made 93 % of an idle
    operator's samples. Every wait releases the GIL."""
    binary = pyspy_binary()
    if binary is None:
        return None
    code, output = await command(
        [
            binary,
            "record",
            "--gil",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--output",
            str(out),
        ],
        timeout_s=seconds + 60,
    )
    if code != 0 or not await asyncio.to_thread(out.exists):
        await asyncio.to_thread((out.parent / (out.name + ".err")).write_bytes, output)
        return None
    return out


def _module(file: str) -> tuple[str, str]:
    """(area, dotted module) of a frame's file."""
    path = file
    repo = str(REPO) + "/"
    if path.startswith(repo):
        path = path[len(repo) :]
    parts = path.split("/")
    if parts[0] in TETHER_FOLDERS and len(parts) > 1:
        module = "tether." + ".".join([*parts[:-1], parts[-1].removesuffix(".py")])
        return module, module
    if parts[0] == "bench":
        return "bench harness", path
    if "site-packages" in parts:
        parts = parts[parts.index("site-packages") + 1 :]
    top = parts[0].removesuffix(".py") if parts else file
    return top, ".".join(p.removesuffix(".py") for p in parts)


def summarize(raw: Path, top: int = 12) -> dict[str, Any]:
    """Shares (% of samples) by area of the leaf frame, of tether's functions (inclusive), and of
    the hottest leaf functions."""
    areas: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = []
        for frame in stack.split(";"):
            match = _FRAME.match(frame)
            if match:
                frames.append((match["func"], match["file"]))
        if not frames:
            continue
        total += count
        func, file = frames[-1]
        area, module = _module(file)
        areas[area] += count
        leaves[f"{module}.{func.split('.')[-1]}" if "." not in func else f"{module}:{func}"] += (
            count
        )
        seen = set()
        for func, file in frames:
            area, module = _module(file)
            if area.startswith("tether."):
                name = f"{module}:{func}"
                if name not in seen:
                    seen.add(name)
                    inclusive[name] += count

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return (
            [(k, round(100 * v / total, 1)) for k, v in counter.most_common(top)] if total else []
        )

    return {
        "samples": total,
        "areas": share(areas),
        "tether_inclusive": share(inclusive),
        "leaves": share(leaves),
    }
