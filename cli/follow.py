"""Following a project as it goes: `tether events NAME --follow` and `tether logs NAME`.

Both read the API's server-sent event streams: new events are fetched when the watch stream says
the project changed; container output comes line by line, across the containers of the project
(a restart, a new deployment). A stream that breaks is opened again, from where it left off.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Any

from tether.api.models import Event, LogAttach, LogLine, WatchView
from tether.cli.client import ApiError
from tether.cli.config import ClientConfig
from tether.cli.errors import CliError
from tether.cli.render import Output, say
from tether.cli.stream import EventStreams, Reconnector, StreamBroken

EVENTS_PAGE = 1000


def event_line(event: Event) -> str:
    when = event.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    generation = f"g{event.generation}" if event.generation is not None else "g-"
    return (
        f"{when}  #{event.id}  {generation}  {event.kind}  {event.reason}  "
        f"({event.actor})  {event.message}"
    )


def _emit_json(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


def _emit_event(event: Event, output: Output) -> None:
    if output is Output.JSON:
        _emit_json(event.model_dump(mode="json"))
    else:
        say(event_line(event))
        sys.stdout.flush()


async def _events_after(
    api: EventStreams, name: str, after: int, tail: int | None = None
) -> list[Event]:
    found: list[Event] = []
    while True:
        page = await api.get(f"/projects/{name}/events", {"after": after, "limit": EVENTS_PAGE})
        found.extend(Event.model_validate(e) for e in page)
        if len(page) < EVENTS_PAGE:
            break
        after = found[-1].id
        if tail is not None:
            found = found[-tail:]
    return found[-tail:] if tail is not None else found


def _ended(problem: dict[str, Any]) -> StreamBroken:
    return StreamBroken(f"the server ended the stream: {problem.get('message')}", opened=True)


async def follow_events(
    config: ClientConfig, name: str, *, after: int, tail: int | None, output: Output
) -> None:
    """Print the project's events (after `after`, the last `tail`), then each new one as it
    comes, until the project is destroyed (or Ctrl-C)."""
    async with EventStreams(config) as api:
        last = after
        for event in await _events_after(api, name, after, tail):
            _emit_event(event, output)
            last = event.id
        reconnect = Reconnector(f"the event stream of {name}")
        while True:
            try:
                async for message in api.events(f"/projects/{name}/watch"):
                    reconnect.opened()
                    if message.event == "view":
                        view = WatchView.model_validate_json(message.data)
                        if any(e.id > last for e in view.events):
                            for event in await _events_after(api, name, last):
                                _emit_event(event, output)
                                last = event.id
                    elif message.event == "deleted":
                        _gone(name, output)
                        return
                    elif message.event == "error":
                        raise _ended(json.loads(message.data))
                problem: CliError = CliError(f"the server ended the event stream of {name}")
            except ApiError as exc:
                if exc.status == 404 and reconnect.opened_once:
                    _gone(name, output)
                    return
                problem = exc
            except StreamBroken as exc:
                problem = exc
            await reconnect.after(problem)


def _gone(name: str, output: Output) -> None:
    if output is Output.JSON:
        _emit_json({"type": "deleted", "project": name})
    else:
        say(f"{name} was destroyed")


async def logs(
    config: ClientConfig,
    name: str,
    *,
    follow: bool,
    tail: int | None,
    since: datetime | None,
    output: Output,
) -> None:
    """Print the output of the project's container: stdout lines on stdout, stderr lines on
    stderr (`-o json`: one JSON object per line on stdout). With `follow`, keep printing, and
    move on to each next container of the project."""
    params: dict[str, Any] = {"follow": "true" if follow else "false"}
    if tail is not None:
        params["tail"] = tail
    if since is not None:
        params["since"] = since.isoformat()
    current: str | None = None
    last: LogLine | None = None
    resumed_after: LogLine | None = None
    attached_any = False
    reconnect = Reconnector(f"the output of {name}")
    async with EventStreams(config) as api:
        while True:
            try:
                async for message in api.events(f"/projects/{name}/logs", params):
                    reconnect.opened()
                    if message.event == "container":
                        attach = LogAttach.model_validate_json(message.data)
                        if output is Output.JSON:
                            _emit_json({"type": "container", **attach.model_dump(mode="json")})
                        elif current is not None and attach.container != current:
                            _notice(
                                f"--- {name}: following container {attach.container[:12]} "
                                f"(v{attach.version}, {attach.state})"
                            )
                        current = attach.container
                        attached_any = True
                    elif message.event == "log":
                        line = LogLine.model_validate_json(message.data)
                        if (
                            resumed_after is not None
                            and line.container == resumed_after.container
                            and line.time <= resumed_after.time
                        ):
                            continue  # printed before the stream broke
                        _print_line(line, output)
                        last = line
                    elif message.event == "error":
                        problem = json.loads(message.data)
                        hint = f"; {problem['hint']}" if problem.get("hint") else ""
                        raise CliError(f"{problem.get('message')}{hint}")
                if not follow:
                    break
                broken: CliError = CliError(f"the server ended the output stream of {name}")
            except ApiError as exc:
                broken = exc
            except StreamBroken as exc:
                broken = exc
            await reconnect.after(broken)
            # Again from the last line printed (Docker's `since` takes it in again).
            resumed_after = last
            params = {"follow": "true"}
            if last is not None:
                params["since"] = last.time.isoformat()
            elif tail is not None:
                params["tail"] = tail
    if not attached_any and output is not Output.JSON:
        _notice(f"{name} has no container yet: nothing to show")


def _print_line(line: LogLine, output: Output) -> None:
    if output is Output.JSON:
        _emit_json({"type": "log", **line.model_dump(mode="json")})
        return
    out = sys.stderr if line.stream == "stderr" else sys.stdout
    out.write(line.text + "\n")
    out.flush()


def _notice(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def run_follow_events(
    config: ClientConfig, name: str, *, after: int, tail: int | None, output: Output
) -> None:
    asyncio.run(follow_events(config, name, after=after, tail=tail, output=output))


def run_logs(
    config: ClientConfig,
    name: str,
    *,
    follow: bool,
    tail: int | None,
    since: datetime | None,
    output: Output,
) -> None:
    asyncio.run(logs(config, name, follow=follow, tail=tail, since=since, output=output))
