"""The CLI's tables and grids for people (plain lines and JSON: `output`).

Output goes to the `sys.stdout` of the moment (so tests can capture it); API text is never read as
rich markup. Not on a terminal, lines are not wrapped at 80 columns, so they stay greppable.

A table of plain ASCII text that fits the width is written directly, exactly as rich draws it
(columns two spaces apart, the header in capitals); any other, and every grid, is drawn by rich.
Importing rich costs ~50 ms of the 150 a `tether status` may take (docs/benchmarks.md, item 7),
so rich is imported only when it draws.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from tether.api.vocabulary import ConditionType
from tether.cli.output import say
from tether.cli.views import (
    Condition,
    Deployment,
    Event,
    HealthCheck,
    Node,
    Project,
    ProjectView,
    Status,
    Volume,
)

if TYPE_CHECKING:
    from rich.console import Console, Group, RenderableType
    from rich.table import Table

    from tether.api.models import TokenInfo

PIPE_WIDTH = 200
NONE = "-"
GAP = "  "  # between two columns: each cell's padding of one space on either side
BOLD, PLAIN = "\x1b[1m", "\x1b[0m"


def console() -> Console:
    from rich.console import Console

    out = sys.stdout
    width = None if out.isatty() else PIPE_WIDTH
    return Console(file=out, width=width, highlight=False, markup=False, emoji=False)


def show(renderable: RenderableType) -> None:
    """Print a table or grid; off a terminal, without the padding rich leaves at line ends."""
    out = console()
    if out.is_terminal:
        out.print(renderable)
        return
    with out.capture() as captured:
        out.print(renderable)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def age(when: datetime | None, now: datetime | None = None) -> str:
    if when is None:
        return NONE
    seconds = int(((now or datetime.now(UTC)) - when).total_seconds())
    if seconds < 0:
        return "0s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _width() -> int:
    if not sys.stdout.isatty():
        return PIPE_WIDTH
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns
    except OSError:
        return 80  # rich's own default


def _plain(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str] | None:
    """The table's lines as rich draws them, or None where it would fold or measure cells of
    other than one column per character."""
    cells = [[h.upper() for h in headers], *rows]
    if not all(cell.isascii() and cell.isprintable() for row in cells for cell in row):
        return None
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    if sum(widths) + len(GAP) * (len(widths) - 1) > _width():
        return None
    return [
        GAP.join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]


def draw(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A table in the CLI's style, with these column headers and rows of text."""
    lines = _plain(headers, rows)
    if lines is None:
        from rich.text import Text

        table = _table(*headers)
        for row in rows:
            table.add_row(*(Text(cell) for cell in row))
        show(table)
        return
    if sys.stdout.isatty():
        lines[0] = BOLD + lines[0] + PLAIN
    sys.stdout.write("".join(line + "\n" for line in lines))
    sys.stdout.flush()


def _table(*columns: str) -> Table:
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold", show_edge=False)
    for column in columns:
        table.add_column(column.upper(), overflow="fold")
    return table


def table(*columns: str) -> Table:
    """An empty table in the CLI's style, with these column headers."""
    return _table(*columns)


def desired(project: Project) -> str:
    return "deleting" if project.deletion_requested else str(project.desired_state)


def ready(status: Status | None) -> str:
    condition = status.condition(ConditionType.READY) if status else None
    if condition is None:
        return NONE
    return {"True": "yes", "False": "no"}.get(condition.status, "unknown")


def deployment(project: Project, status: Status | None) -> str:
    if project.target_version is None:
        return NONE
    text = f"v{project.target_version}"
    running = status.running_version if status else None
    if running is not None and running != project.target_version:
        text += f" (running v{running})"
    return text


def status_message(project: Project, status: Status | None) -> str:
    """The one thing worth reading about a project now."""
    if status is None:
        return "waiting for the operator"
    stalled = status.condition(ConditionType.STALLED)
    if stalled is not None and stalled.status == "True":
        return f"stalled: {stalled.message}"
    if status.observed_generation < project.generation:
        return f"operator has not seen generation {project.generation} yet"
    if status.last_error:
        return status.last_error
    for kind in (ConditionType.READY, ConditionType.RECONCILING):
        condition = status.condition(kind)
        if condition is not None and condition.message:
            return condition.message
    return ""


def phase(status: Status | None) -> str:
    return status.phase if status else "Pending"


def projects_table(views: Sequence[ProjectView]) -> None:
    if not views:
        say("no projects yet: create one with `tether deploy NAME --image IMAGE`")
        return
    rows = [
        [
            v.project.name,
            v.project.owner,
            desired(v.project),
            deployment(v.project, v.status),
            str(v.project.generation),
            str(v.project.host_port),
            age(v.project.created_at),
        ]
        for v in views
    ]
    draw(("name", "owner", "desired", "deployment", "generation", "host port", "age"), rows)


def status_table(views: Sequence[ProjectView]) -> None:
    if not views:
        say("no projects yet: create one with `tether deploy NAME --image IMAGE`")
        return
    rows = [
        [
            v.project.name,
            desired(v.project),
            phase(v.status),
            ready(v.status),
            deployment(v.project, v.status),
            age(v.project.created_at),
            status_message(v.project, v.status),
        ]
        for v in views
    ]
    headers: tuple[str, ...] = ("name", "desired", "phase", "ready", "deployment", "age", "message")
    if any(v.status is not None and v.status.node for v in views):
        # The swarm runtime: where each project runs.
        for row, v in zip(rows, views, strict=True):
            row.insert(4, (v.status.node if v.status else None) or NONE)
        headers = (*headers[:4], "node", *headers[4:])
    draw(headers, rows)


def nodes_table(nodes: Sequence[Node]) -> None:
    if not nodes:
        say(
            "no nodes: the operator runs the engine runtime (one Docker engine), or has not "
            "listed the swarm's nodes yet"
        )
        return
    rows = [
        [
            n.hostname,
            n.state,
            n.availability,
            n.role,
            n.address,
            age(n.seen_at) if n.seen_at else NONE,
        ]
        for n in nodes
    ]
    draw(("node", "state", "availability", "role", "address", "seen"), rows)


def _conditions(conditions: Sequence[Condition]) -> Table:
    from rich.text import Text

    table = _table("condition", "status", "reason", "age", "message")
    for c in conditions:
        table.add_row(c.type, c.status, c.reason, age(c.last_transition_time), Text(c.message))
    return table


def status_detail(
    view: ProjectView, events: Sequence[Event], volumes: Sequence[Volume] = ()
) -> None:
    show(detail(view, events, volumes))


def size(size_bytes: int | None) -> str:
    if size_bytes is None:
        return "not measured yet"
    value = float(size_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def mounted(volume: Volume) -> str:
    """Who mounts a volume, and whether the target deployment does: one it does not is kept,
    unmounted, until it is deleted explicitly."""
    by = ", ".join(volume.mounted_by) or "no container"
    return by if volume.in_target else f"unmounted (not in the target deployment; {by})"


def volumes_table(project: str, volumes: Sequence[Volume]) -> None:
    if not volumes:
        say(
            f"{project} has no volumes yet (a deployment with --volume NAME:PATH creates them "
            "when it starts)"
        )
        return
    rows = [
        [v.name, v.docker_name, size(v.size_bytes), mounted(v), age(v.created_at)] for v in volumes
    ]
    draw(("volume", "docker volume", "size", "mounted by", "age"), rows)


def detail(view: ProjectView, events: Sequence[Event], volumes: Sequence[Volume] = ()) -> Group:
    """One project: desired and observed side by side, conditions, and the latest events."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    p, s = view.project, view.status
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    rows: list[tuple[str, str]] = [
        ("project", f"{p.name} (owner {p.owner}, created {age(p.created_at)} ago)"),
        ("desired", f"{desired(p)}, deployment {deployment(p, None)}, generation {p.generation}"),
    ]
    if s is None:
        rows.append(("observed", "nothing yet: waiting for the operator"))
    else:
        behind = (
            f" (behind: desired is generation {p.generation})"
            if s.observed_generation < p.generation
            else ""
        )
        rows += [
            ("observed", f"generation {s.observed_generation}{behind}, phase {s.phase}"),
            ("ready", ready(s)),
            ("running", f"v{s.running_version}" if s.running_version is not None else NONE),
            ("endpoint", s.endpoint or f"host port {p.host_port} (not published)"),
            ("route", route(s)),
            ("container", s.container_id[:12] if s.container_id else NONE),
            ("attempts", attempts(s)),
            ("crashes", _crashes(s)),
        ]
        if s.node:
            rows.insert(-2, ("node", s.node))  # the swarm runtime: where its task runs
        if s.last_error:
            rows.append(("last error", s.last_error))
        if s.failed_version is not None:
            rows.append(("failed", f"v{s.failed_version} did not become ready"))
    for volume in volumes:
        rows.append((f"volume {volume.name}", f"{size(volume.size_bytes)}, {mounted(volume)}"))
    message = status_message(p, s)
    if message:
        rows.append(("message", message))
    for key, value in rows:
        grid.add_row(key, Text(value))
    parts: list[RenderableType] = [grid]
    if s is not None and s.conditions:
        parts += [Text(""), _conditions(s.conditions)]
    if events:
        parts += [Text(""), Text("recent events"), _events(events)]
    return Group(*parts)


def route(s: Status) -> str:
    """Where the proxy sends the endpoint's traffic: `→ v2 (127.0.0.1:32768)`, and during a
    rollout which deployment that is while another is wanted."""
    if s.route is None:
        return "none: connections are refused"
    if s.route == "held":
        return "held: new connections wait for a container that is ready"
    serving = f"v{s.serving_version}" if s.serving_version is not None else "?"
    return f"→ {serving} ({s.route})"


def attempts(s: Status) -> str:
    if not s.attempts:
        return "0"
    text = str(s.attempts)
    if s.next_attempt_at is not None:
        wait = int((s.next_attempt_at - datetime.now(UTC)).total_seconds())
        text += f", next attempt in {max(wait, 0)}s"
    return text


def _crashes(s: Status) -> str:
    text = str(s.crash_count)
    if s.last_exit_code is not None:
        text += f", last exit code {s.last_exit_code}"
    if s.oom_killed:
        text += " (killed: out of memory)"
    if s.last_crash_at is not None:
        text += f", {age(s.last_crash_at)} ago"
    return text


def _health(health: HealthCheck | None) -> str:
    if health is None:
        return NONE
    return f"http {health.path}" if health.type == "http" else "tcp"


def deployments_table(deployments: Sequence[Deployment], project: Project) -> None:
    if not deployments:
        say(f"{project.name} has no deployments: run `tether deploy {project.name} --image IMAGE`")
        return
    rows = [
        [
            f"v{d.version}",
            d.image,
            str(d.port) if d.port else NONE,
            _health(d.health),
            ", ".join(f"{k} (secret)" if k in d.secret_env else k for k in sorted(d.env)) or NONE,
            d.created_by,
            age(d.created_at),
            "target" if d.version == project.target_version else "",
        ]
        for d in deployments
    ]
    draw(("version", "image", "port", "health", "env", "created by", "age", ""), rows)


EVENT_COLUMNS = ("id", "time", "generation", "kind", "reason", "actor", "message")


def _event_rows(events: Sequence[Event]) -> list[list[str]]:
    return [
        [
            str(e.id),
            e.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
            str(e.generation) if e.generation is not None else NONE,
            e.kind,
            e.reason,
            e.actor,
            e.message,
        ]
        for e in events
    ]


def _events(events: Sequence[Event]) -> Table:
    from rich.text import Text

    table = _table(*EVENT_COLUMNS)
    for row in _event_rows(events):
        table.add_row(*(Text(cell) for cell in row))
    return table


def events_table(events: Sequence[Event], project: str) -> None:
    if not events:
        say(f"no events for {project}")
        return
    draw(EVENT_COLUMNS, _event_rows(events))


def tokens_table(tokens: Sequence[TokenInfo]) -> None:
    now = datetime.now(UTC)

    def expires(t: TokenInfo) -> str:
        if t.revoked_at is not None:
            return f"revoked {age(t.revoked_at, now)} ago"
        if t.expires_at is None:
            return "never"
        if t.expires_at <= now:
            return f"expired {age(t.expires_at, now)} ago"
        return f"in {age(now, t.expires_at)}"

    rows = [
        [
            str(t.id),
            t.owner,
            "admin" if t.admin else "owner",
            "read-only" if t.read_only else "read-write",
            f"{age(t.created_at, now)} ago",
            f"{age(t.last_used_at, now)} ago" if t.last_used_at else "never",
            expires(t),
        ]
        for t in tokens
    ]
    draw(["id", "owner", "sees", "may", "created", "last used", "expires"], rows)
