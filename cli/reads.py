"""Reading state: projects list, status, deployments, events, watch, logs.

A table is drawn with rich (`tether.cli.render`), imported by the commands that draw one; JSON is
printed as the API answered it.
"""

# No `from __future__ import annotations` in the command modules: typer would eval each
# annotation string on every run (~25 ms of a command's 150; see cli/options.py).

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tether.cli import paging
from tether.cli.options import Name, OutputOpt, Timeout, check_name, duration_s, invocation
from tether.cli.output import Output, print_json

if TYPE_CHECKING:
    from tether.cli.client import ApiClient

RECENT_EVENTS = 5


def _events(api: "ApiClient", name: str, *, after: int = 0, tail: int | None = None) -> list[Any]:
    """Every event after `after`, oldest first (the last `tail` of them if given)."""
    found: list[Any] = []
    more: int | None = after
    while more is not None:
        more = paging.add_page(found, api.get(paging.path(name), paging.query(more)), tail)
    return found


def projects_list(ctx: typer.Context, output: OutputOpt = Output.TABLE) -> None:
    """List your projects (an admin token lists everyone's)."""
    with invocation(ctx).client() as api:
        answer = api.get("/projects")
    if output is Output.JSON:
        print_json(answer)
        return
    from tether.cli import render
    from tether.cli.views import ProjectView

    render.projects_table([ProjectView.of(v) for v in answer])


OneProject = Annotated[
    str | None,
    typer.Argument(help="One project, in detail (default: a table of all).", callback=check_name),
]


def status(ctx: typer.Context, name: OneProject = None, output: OutputOpt = Output.TABLE) -> None:
    """Desired and observed state: every project, or one in detail."""
    with invocation(ctx).client() as api:
        answer = api.get("/projects" if name is None else f"/projects/{name}")
        if output is Output.JSON:
            print_json(answer)
            return
        recent = [] if name is None else _events(api, name, tail=RECENT_EVENTS)
        volumes = [] if name is None else api.get(f"/projects/{name}/volumes")
    from tether.cli import render
    from tether.cli.views import Event, ProjectView, Volume

    if name is None:
        render.status_table([ProjectView.of(v) for v in answer])
    else:
        render.status_detail(
            ProjectView.of(answer), [Event.of(e) for e in recent], [Volume.of(v) for v in volumes]
        )


def volumes(ctx: typer.Context, name: Name, output: OutputOpt = Output.TABLE) -> None:
    """The project's volumes: size, who mounts them, age. Kept until deleted explicitly."""
    with invocation(ctx).client() as api:
        answer = api.get(f"/projects/{name}/volumes")
    if output is Output.JSON:
        print_json(answer)
        return
    from tether.cli import render
    from tether.cli.views import Volume

    render.volumes_table(name, [Volume.of(v) for v in answer])


def nodes(ctx: typer.Context, output: OutputOpt = Output.TABLE) -> None:
    """The swarm runtime's nodes with their state, as the operator last saw them (read-only)."""
    with invocation(ctx).client() as api:
        answer = api.get("/nodes")
    if output is Output.JSON:
        print_json(answer)
        return
    from tether.cli import render
    from tether.cli.views import Node

    render.nodes_table([Node.of(n) for n in answer])


def deployments(ctx: typer.Context, name: Name, output: OutputOpt = Output.TABLE) -> None:
    """The project's deployments, oldest first, with the targeted one marked."""
    with invocation(ctx).client() as api:
        answer = api.get(f"/projects/{name}/deployments")
        if output is Output.JSON:
            print_json(answer)
            return
        project = api.get(f"/projects/{name}")
    from tether.cli import render
    from tether.cli.views import Deployment, ProjectView

    view = ProjectView.of(project)
    render.deployments_table([Deployment.of(d) for d in answer], view.project)


After = Annotated[
    int, typer.Option("--after", metavar="ID", min=0, help="Only events after this id.")
]
Tail = Annotated[
    int | None, typer.Option("--tail", metavar="N", min=1, help="Only the last N events.")
]
FollowEvents = Annotated[
    bool,
    typer.Option(
        "--follow",
        "-f",
        help="Then print each new event as it happens, until Ctrl-C (one per line; "
        "JSON lines with -o json).",
    ),
]


def events(
    ctx: typer.Context,
    name: Name,
    after: After = 0,
    tail: Tail = None,
    follow_: FollowEvents = False,
    output: OutputOpt = Output.TABLE,
) -> None:
    """The project's history: desired changes, actions, refusals, health, convergence."""
    if follow_:
        from tether.cli import follow

        config = invocation(ctx).config()
        follow.run_follow_events(config, name, after=after, tail=tail, output=output)
        return
    with invocation(ctx).client() as api:
        found = _events(api, name, after=after, tail=tail)
    if output is Output.JSON:
        print_json(found)
        return
    from tether.cli import render
    from tether.cli.views import Event

    render.events_table([Event.of(e) for e in found], name)


WatchWhat = Annotated[
    str | None,
    typer.Argument(help="One project (default: every project you can see).", callback=check_name),
]
WatchOutput = Annotated[
    Output,
    typer.Option(
        "--output",
        "-o",
        help="table: a live view on a terminal, else one line per change; json: JSON lines.",
        case_sensitive=False,
    ),
]


def watch(
    ctx: typer.Context,
    name: WatchWhat = None,
    timeout: Timeout = None,
    output: WatchOutput = Output.TABLE,
) -> None:
    """Watch projects converge, live, until they are as desired.

    Exit codes, like `kubectl rollout status`: 0 when the operator has acted on the current
    generation and the project is Ready (or stopped, as desired); 1 when it is Stalled or the
    rollout of its deployment failed; 2 after --timeout. Without NAME: every project, exit 0
    when all of them are as desired, 1 if any is not.
    """
    from tether.cli import watch as watching

    watching.run(invocation(ctx).config(), name, output=output, timeout_s=timeout)


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    text = value.strip()
    seconds = duration_s(text)
    if seconds is not None:
        return datetime.now(UTC) - timedelta(seconds=seconds)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is neither a duration (30s, 10m, 2h, 1d) nor a time (2024-05-01T12:00:00Z)",
            param_hint="'--since'",
        ) from None
    return when if when.tzinfo is not None else when.astimezone()


FollowLogs = Annotated[
    bool,
    typer.Option(
        "--follow",
        "-f",
        help="Keep printing new output, across restarts and new deployments, until Ctrl-C.",
    ),
]
TailLines = Annotated[
    int | None,
    typer.Option("--tail", metavar="N", min=0, help="Only the last N lines of output."),
]
Since = Annotated[
    str | None,
    typer.Option(
        "--since",
        metavar="T",
        help="Only output from then on: a duration ago (30s, 10m, 2h) or a time "
        "(2024-05-01T12:00:00Z).",
    ),
]
LogsOutput = Annotated[
    Output,
    typer.Option(
        "--output",
        "-o",
        help="table: the output as it was written; json: one JSON object per line.",
        case_sensitive=False,
    ),
]


def logs(
    ctx: typer.Context,
    name: Name,
    follow_: FollowLogs = False,
    tail: TailLines = None,
    since: Since = None,
    output: LogsOutput = Output.TABLE,
) -> None:
    """The output of the project's container (stdout to stdout, stderr to stderr)."""
    from tether.cli import follow

    config = invocation(ctx).config()
    when = _since(since)
    follow.run_logs(config, name, follow=follow_, tail=tail, since=when, output=output)
