"""Following a project as it goes: `tether events NAME --follow` and `tether logs NAME`.

Both read the API's server-sent event streams: new events are fetched when the watch stream says
the project changed; container output comes line by line, across the containers of the project
(a restart, a new deployment). A stream that breaks is opened again, from where it left off.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from tether.cli import paging
from tether.cli.client import ApiError
from tether.cli.config import ClientConfig
from tether.cli.errors import CliError
from tether.cli.output import Output, json_line, notice, say
from tether.cli.stream import EventStreams, StreamBroken, StreamEnded, following, reconnecting
from tether.cli.views import Event, LogAttach, LogLine, WatchView


def event_line(event: Event) -> str:
    when = event.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    generation = f"g{event.generation}" if event.generation is not None else "g-"
    return (
        f"{when}  #{event.id}  {generation}  {event.kind}  {event.reason}  "
        f"({event.actor})  {event.message}"
    )


async def _events_after(
    api: EventStreams, name: str, after: int, tail: int | None = None
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    more: int | None = after
    while more is not None:
        more = paging.add_page(found, await api.get(paging.path(name), paging.query(more)), tail)
    return found


class _EventPrinter:
    def __init__(self, output: Output, last: int) -> None:
        self.output = output
        self.last = last

    def print(self, events: list[dict[str, Any]]) -> None:
        for data in events:
            event = Event.of(data)
            if self.output is Output.JSON:
                json_line(data)
            else:
                say(event_line(event))
            self.last = event.id


async def follow_events(
    config: ClientConfig, name: str, *, after: int, tail: int | None, output: Output
) -> None:
    """Print the project's events (after `after`, the last `tail`), then each new one as it
    comes, until the project is destroyed (or Ctrl-C)."""
    async with EventStreams(config) as api:
        printer = _EventPrinter(output, after)
        printer.print(await _events_after(api, name, after, tail))
        reconnect = reconnecting(f"the event stream of {name}")

        async def once() -> None:
            try:
                async for message in api.events(f"/projects/{name}/watch"):
                    reconnect.connected()
                    if message.event == "view":
                        view = WatchView.of(json.loads(message.data))
                        if any(e.id > printer.last for e in view.events):
                            printer.print(await _events_after(api, name, printer.last))
                    elif message.event == "deleted":
                        return _gone(name, output)
                    elif message.event == "error":
                        raise _ended(json.loads(message.data))
            except ApiError as exc:
                if exc.status == 404 and reconnect.connected_once:
                    return _gone(name, output)
                raise
            raise StreamEnded(f"the server ended the event stream of {name}")

        await following(reconnect, once)


def _ended(problem: dict[str, Any]) -> StreamBroken:
    return StreamBroken(f"the server ended the stream: {problem.get('message')}", opened=True)


def _gone(name: str, output: Output) -> None:
    if output is Output.JSON:
        json_line({"type": "deleted", "project": name})
    else:
        say(f"{name} was destroyed")


class _LogPrinter:
    """Prints a project's output as it comes, and where to resume from after a break."""

    def __init__(self, name: str, output: Output) -> None:
        self.name = name
        self.output = output
        self.current: str | None = None
        self.last: LogLine | None = None
        self.resumed_after: LogLine | None = None

    def attached(self, data: dict[str, Any]) -> None:
        attach = LogAttach.of(data)
        if self.output is Output.JSON:
            json_line({"type": "container", **data})
        elif self.current is not None and attach.container != self.current:
            notice(
                f"--- {self.name}: following container {attach.container[:12]} "
                f"(v{attach.version}, {attach.state})"
            )
        self.current = attach.container

    def line(self, data: dict[str, Any]) -> None:
        line, before = LogLine.of(data), self.resumed_after
        if before is not None and line.container == before.container and line.time <= before.time:
            return  # printed before the stream broke
        if self.output is Output.JSON:
            json_line({"type": "log", **data})
        else:
            (notice if line.stream == "stderr" else say)(line.text)
        self.last = line

    def resume(self, tail: int | None) -> dict[str, Any]:
        """The query that reads on from the last line printed (Docker's `since` takes it in
        again: it is skipped)."""
        self.resumed_after = self.last
        if self.last is not None:
            return {"follow": "true", "since": self.last.time.isoformat()}
        return {"follow": "true"} if tail is None else {"follow": "true", "tail": tail}


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
    printer = _LogPrinter(name, output)
    reconnect = reconnecting(f"the output of {name}")
    async with EventStreams(config) as api:

        async def once() -> None:
            query = params if not reconnect.connected_once else printer.resume(tail)
            async for message in api.events(f"/projects/{name}/logs", query):
                reconnect.connected()
                if message.event == "container":
                    printer.attached(json.loads(message.data))
                elif message.event == "log":
                    printer.line(json.loads(message.data))
                elif message.event == "error":
                    problem = json.loads(message.data)
                    hint = f"; {problem['hint']}" if problem.get("hint") else ""
                    raise CliError(f"{problem.get('message')}{hint}")
            if follow:
                raise StreamEnded(f"the server ended the output stream of {name}")

        await following(reconnect, once)
    if printer.current is None and output is not Output.JSON:
        notice(f"{name} has no container yet: nothing to show")


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
