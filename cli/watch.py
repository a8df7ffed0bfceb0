"""Watching projects converge: `tether watch` and every write's `--wait`.

The view comes from the API's watch stream (server-sent events, fed by the operator's status
NOTIFY); nothing here polls. Exit codes follow `kubectl rollout status`:

- 0: the operator has acted on the current generation and the project is what was asked: Ready
  (running), or stopped with nothing left to do, or gone after a destroy;
- 1: Stalled, or the rollout of the targeted deployment failed (the previous one is back), or any
  error;
- 2: `--timeout` passed first.

A status older than the current generation is never taken as an answer, nor is a condition
carried over from an earlier generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from dataclasses import dataclass
from datetime import UTC
from enum import StrEnum
from typing import Any, Protocol

from rich.console import Group, RenderableType
from rich.live import Live
from rich.text import Text

from tether.api.vocabulary import ConditionType, DesiredState
from tether.cli import render
from tether.cli.client import ApiError
from tether.cli.config import ClientConfig
from tether.cli.errors import EXIT_FAILURE, CliError
from tether.cli.output import Output, json_line, notice, say
from tether.cli.stream import (
    EventStreams,
    ServerSentEvent,
    StreamBroken,
    StreamEnded,
    following,
    reconnecting,
)
from tether.cli.views import Condition, Event, ProjectView, Unreadable, WatchView

EXIT_OK = 0
EXIT_TIMEOUT = 2
LIVE_EVENTS = 5
TICK_S = 1.0


class Verdict(StrEnum):
    PENDING = "pending"
    READY = "ready"
    STOPPED = "stopped"
    DELETED = "deleted"
    FAILED = "failed"


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    message: str

    @property
    def final(self) -> bool:
        return self.verdict is not Verdict.PENDING

    @property
    def succeeded(self) -> bool:
        return self.verdict in (Verdict.READY, Verdict.STOPPED, Verdict.DELETED)


def _current(view: WatchView, kind: ConditionType) -> Condition | None:
    """The condition, if it was written for the project's current generation."""
    found = view.status.condition(kind) if view.status else None
    if found is None or found.observed_generation != view.project.generation:
        return None
    return found


def judge(view: WatchView) -> Judgement:
    """Whether the project is where it was asked to be, will not get there, or is on its way."""
    p, s = view.project, view.status
    if p.deletion_requested:
        return Judgement(Verdict.PENDING, "being destroyed: removing its containers")
    if s is None:
        return Judgement(Verdict.PENDING, "waiting for the operator")
    if s.observed_generation != p.generation:
        return Judgement(
            Verdict.PENDING,
            f"waiting for the operator to act on generation {p.generation} (it last acted on "
            f"{s.observed_generation})",
        )
    stalled = _current(view, ConditionType.STALLED)
    if stalled is not None and stalled.status == "True":
        return Judgement(Verdict.FAILED, f"stalled ({stalled.reason}): {stalled.message}")
    running = p.desired_state == DesiredState.RUNNING
    if running and p.target_version is not None and s.failed_version == p.target_version:
        why = next(
            (
                e.message
                for e in reversed(view.events)
                if e.reason == "RolloutFailed" and e.generation == p.generation
            ),
            f"v{p.target_version} did not become ready",
        )
        back = (
            f"; v{s.running_version} is running again"
            if s.running_version is not None and s.running_version != p.target_version
            else ""
        )
        return Judgement(Verdict.FAILED, f"the rollout of v{p.target_version} failed: {why}{back}")
    ready = _current(view, ConditionType.READY)
    reconciling = _current(view, ConditionType.RECONCILING)
    settled = reconciling is not None and reconciling.status == "False"
    if running and settled and ready is not None and ready.status == "True":
        where = f" on {s.endpoint}" if s.endpoint else ""
        return Judgement(Verdict.READY, f"v{s.running_version} is ready{where}")
    if not running and settled:
        return Judgement(Verdict.STOPPED, "stopped as desired")
    doing = reconciling or ready
    detail = doing.message if doing is not None and doing.message else f"phase {s.phase}"
    return Judgement(Verdict.PENDING, detail)


class Tracker:
    """What the stream has shown so far, and whether the wait is over."""

    def __init__(self, name: str | None, *, expect_deletion: bool = False) -> None:
        self.name = name
        self.expect_deletion = expect_deletion
        self.views: dict[str, WatchView] = {}
        self.shown: dict[str, dict[str, Any]] = {}  # each view as the API sent it
        self.judgements: dict[str, Judgement] = {}
        self.synced = False

    def view(self, view: WatchView, data: dict[str, Any]) -> Judgement:
        name = view.project.name
        self.views[name] = view
        self.shown[name] = data
        self.judgements[name] = judgement = judge(view)
        if self.name is not None:
            self.synced = True
        return judgement

    def deleted(self, name: str) -> Judgement | None:
        """The project is gone: as asked (a destroy), or from under the watch of it."""
        seen = self.views.pop(name, None)
        self.shown.pop(name, None)
        if self.name is None:
            self.judgements.pop(name, None)
            return None
        asked = self.expect_deletion or (seen is not None and seen.project.deletion_requested)
        self.judgements[name] = judgement = (
            Judgement(Verdict.DELETED, "destroyed as asked")
            if asked
            else Judgement(Verdict.FAILED, "the project was destroyed while being watched")
        )
        self.synced = True
        return judgement

    @property
    def done(self) -> bool:
        if not self.synced:
            return False
        return all(j.final for j in self.judgements.values())

    def outcome(self) -> tuple[int, str]:
        if self.name is not None:
            judgement = self.judgements[self.name]
            code = EXIT_OK if judgement.succeeded else EXIT_FAILURE
            return code, f"{self.name}: {judgement.verdict}: {judgement.message}"
        failed = sorted(n for n, j in self.judgements.items() if not j.succeeded)
        if failed:
            listed = "; ".join(f"{n}: {self.judgements[n].message}" for n in failed)
            return (
                EXIT_FAILURE,
                f"{len(failed)} of {len(self.judgements)} projects failed: {listed}",
            )
        if not self.judgements:
            return EXIT_OK, "no projects to wait for"
        return EXIT_OK, f"all {len(self.judgements)} projects are as desired"

    def waiting_for(self) -> str:
        if not self.synced:
            return "the first view of " + (self.name or "the projects")
        pending = sorted(n for n, j in self.judgements.items() if not j.final)
        return "; ".join(f"{n}: {self.judgements[n].message}" for n in pending) or "nothing"


class Display(Protocol):
    def __enter__(self) -> Display: ...
    def __exit__(self, *exc: object) -> None: ...
    def changed(self, tracker: Tracker, name: str) -> None: ...
    def note(self, text: str) -> None: ...
    def tick(self, tracker: Tracker) -> None: ...
    def result(self, tracker: Tracker, code: int, message: str) -> None: ...


def _line(view: WatchView, judgement: Judgement) -> str:
    p, s = view.project, view.status
    target = f" v{p.target_version}" if p.target_version is not None else ""
    text = f"{p.name}: {judgement.verdict}, desired {render.desired(p)}{target} (generation "
    if s is None:
        text += f"{p.generation}), not observed yet"
    else:
        text += f"{p.generation}), observed generation {s.observed_generation} {s.phase}"
        text += f", ready {render.ready(s)}"
        if s.attempts:
            text += f", attempt {s.attempts}"
    return f"{text}: {judgement.message}"


def _event_line(event: Event) -> str:
    when = event.created_at.astimezone(UTC).strftime("%H:%M:%SZ")
    return f"{event.project}: event {when} {event.kind} {event.reason}: {event.message}"


class Lines:
    """Not on a terminal: one plain line per change, and each new event."""

    def __init__(self) -> None:
        self._last: dict[str, str] = {}
        self._event_floor: dict[str, int] = {}

    def __enter__(self) -> Lines:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def changed(self, tracker: Tracker, name: str) -> None:
        view = tracker.views.get(name)
        if view is None:
            if tracker.name is None:  # watching one project, the result line says it
                say(f"{name}: deleted")
            return
        floor = self._event_floor.get(name)
        newest = max((e.id for e in view.events), default=0)
        if floor is not None:
            for event in view.events:
                if event.id > floor:
                    say(_event_line(event))
        self._event_floor[name] = max(newest, floor or 0)
        line = _line(view, tracker.judgements[name])
        if self._last.get(name) != line:
            self._last[name] = line
            say(line)

    def note(self, text: str) -> None:
        notice(f"note: {text}")

    def tick(self, tracker: Tracker) -> None:
        return None

    def result(self, tracker: Tracker, code: int, message: str) -> None:
        return None


class JsonLines:
    """`--output json`: one JSON object per line: `view`s, `deleted`, and the `result`."""

    def __enter__(self) -> JsonLines:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def changed(self, tracker: Tracker, name: str) -> None:
        judgement = tracker.judgements.get(name)
        shown = tracker.shown.get(name)
        if shown is None:
            json_line({"type": "deleted", "project": name})
            return
        json_line(
            {
                "type": "view",
                "verdict": judgement.verdict if judgement else Verdict.PENDING,
                "message": judgement.message if judgement else "",
                **shown,
            }
        )

    def note(self, text: str) -> None:
        notice(f"note: {text}")

    def tick(self, tracker: Tracker) -> None:
        return None

    def result(self, tracker: Tracker, code: int, message: str) -> None:
        json_line({"type": "result", "exit_code": code, "message": message})


class LiveView:
    """On a terminal: the whole picture, redrawn in place on every change and every second (for
    the countdowns)."""

    def __init__(self, tracker: Tracker, deadline: float | None) -> None:
        self._tracker = tracker
        self._deadline = deadline
        self._note = ""
        self._final = False
        self._live = Live(
            console=render.console(),
            auto_refresh=False,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )

    def __enter__(self) -> LiveView:
        self._live.start()
        self._live.update(self._render(), refresh=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._final:
            self._live.update(self._render(), refresh=True)
        self._live.stop()

    def changed(self, tracker: Tracker, name: str) -> None:
        self._note = ""
        self._live.update(self._render(), refresh=True)

    def note(self, text: str) -> None:
        self._note = text
        self._live.update(self._render(), refresh=True)

    def tick(self, tracker: Tracker) -> None:
        self._live.update(self._render(), refresh=True)

    def result(self, tracker: Tracker, code: int, message: str) -> None:
        self._note = ""  # said once more below the view (or as the error line)
        self._live.update(self._render(final=True), refresh=True)
        self._final = True

    def _render(self, *, final: bool = False) -> RenderableType:
        tracker = self._tracker
        parts: list[RenderableType] = []
        if tracker.name is not None:
            view = tracker.views.get(tracker.name)
            if view is not None:
                shown = ProjectView(project=view.project, status=view.status)
                parts.append(render.detail(shown, view.events[-LIVE_EVENTS:]))
        elif tracker.views:
            parts.append(self._table())
        elif tracker.synced:
            parts.append(Text("no projects yet"))
        if not final:
            footer = f"waiting for {tracker.waiting_for()}"
            if self._deadline is not None:
                left = max(self._deadline - asyncio.get_running_loop().time(), 0.0)
                footer += f" (timeout in {left:.0f}s)"
            parts += [Text(""), Text(footer, style="bold")]
        if self._note:
            parts += [Text(""), Text(self._note)]
        return Group(*parts)

    def _table(self) -> RenderableType:
        tracker = self._tracker
        table = render.table(
            "name", "desired", "phase", "ready", "deployment", "attempts", "outcome"
        )
        for name in sorted(tracker.views):
            view, judgement = tracker.views[name], tracker.judgements[name]
            p, s = view.project, view.status
            table.add_row(
                name,
                render.desired(p),
                render.phase(s),
                render.ready(s),
                render.deployment(p, s),
                render.attempts(s) if s else render.NONE,
                Text(f"{judgement.verdict}: {judgement.message}"),
            )
        return table


def display_for(output: Output, tracker: Tracker, deadline: float | None) -> Display:
    if output is Output.JSON:
        return JsonLines()
    if sys.stdout.isatty():
        return LiveView(tracker, deadline)
    return Lines()


async def wait(
    config: ClientConfig,
    name: str | None,
    *,
    output: Output,
    timeout_s: float | None,
    expect_deletion: bool = False,
) -> None:
    """Watch until the project (every project, without `name`) is settled: return on success,
    raise `CliError` (exit 1) on failure, or exit 2 once `timeout_s` has passed."""
    tracker = Tracker(name, expect_deletion=expect_deletion)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s if timeout_s is not None else None
    display = display_for(output, tracker, deadline)
    with display:
        try:
            async with asyncio.timeout_at(deadline) as scope:
                await _watch(config, tracker, display)
        except TimeoutError:
            if not scope.expired():
                raise
            message = f"timed out after {timeout_s:g} s waiting for {tracker.waiting_for()}"
            display.result(tracker, EXIT_TIMEOUT, message)
            raise CliError(message, exit_code=EXIT_TIMEOUT) from None
        code, message = tracker.outcome()
        display.result(tracker, code, message)
    if code != EXIT_OK:
        raise CliError(message, exit_code=code)
    if output is not Output.JSON:
        say(message)


async def _watch(config: ClientConfig, tracker: Tracker, display: Display) -> None:
    path = f"/projects/{tracker.name}/watch" if tracker.name else "/watch"
    what = f"the watch stream of {tracker.name or 'the projects'}"
    reconnect = reconnecting(what, lambda problem: display.note(f"reconnecting: {problem.message}"))
    ticker = asyncio.create_task(_tick(display, tracker))
    try:
        async with EventStreams(config) as api:

            async def once() -> None:
                try:
                    async for event in api.events(path):
                        reconnect.connected()
                        if _apply(event, tracker, display) or tracker.done:
                            return
                except ApiError as exc:
                    if exc.status == 404 and _gone_as_watched(tracker):
                        assert tracker.name is not None
                        tracker.deleted(tracker.name)
                        display.changed(tracker, tracker.name)
                        return
                    raise
                raise StreamEnded(f"the server ended {what}")

            await following(reconnect, once)
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker


def _gone_as_watched(tracker: Tracker) -> bool:
    """A 404 for the watched project: it is gone (a destroy, as asked, or from under the watch)."""
    return tracker.name is not None and (tracker.expect_deletion or tracker.name in tracker.views)


async def _tick(display: Display, tracker: Tracker) -> None:
    while True:
        await asyncio.sleep(TICK_S)
        display.tick(tracker)


def _apply(event: ServerSentEvent, tracker: Tracker, display: Display) -> bool:
    """Take one event in; True when the stream is over for good."""
    if event.event == "view":
        data = json.loads(event.data)
        try:
            view = WatchView.of(data)
        except Unreadable as exc:
            raise CliError(
                f"the watch stream sent a view this CLI cannot read ({exc}): is the CLI older "
                "than the server?"
            ) from exc
        tracker.view(view, data)
        display.changed(tracker, view.project.name)
    elif event.event == "deleted":
        name = str(json.loads(event.data).get("project", ""))
        tracker.deleted(name)
        display.changed(tracker, name)
        return tracker.name is not None
    elif event.event == "synced":
        tracker.synced = True
    elif event.event == "error":
        body = json.loads(event.data)
        raise StreamBroken(f"the server ended the stream: {body.get('message')}", opened=True)
    return False


def run(
    config: ClientConfig,
    name: str | None,
    *,
    output: Output,
    timeout_s: float | None,
    expect_deletion: bool = False,
) -> None:
    asyncio.run(
        wait(config, name, output=output, timeout_s=timeout_s, expect_deletion=expect_deletion)
    )
