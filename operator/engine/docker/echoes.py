"""The Docker events the driver's own actions cause: known in advance, so they wake no pass."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator

# The Docker events each of tether's own actions causes. The pass that acted observes the outcome
# itself, so they need not wake another pass (which halved the passes of a bulk start). Each is
# expected once per action: a container that crashes right after tether stopped and started it
# again says "die" once more, and that one is no echo.
_ECHOES = {
    "create": ("create",),
    "start": ("start",),
    "stop": ("kill", "kill", "die", "stop"),  # the second kill: SIGKILL when the grace runs out
    "unpause": ("unpause",),
    "remove": ("destroy",),
}
ECHO_WINDOW_S = 10.0  # how long after an action its events may still be on their way


class _Expected:
    """One event an action of tether's is expected to cause, until a while after the action."""

    def __init__(self) -> None:
        self.until = math.inf  # while the action is in flight


class Echoes:
    """The events tether's own actions are expected to cause, by container id (or, for a
    create, by name: the id is known only once Docker answers) and action. Each expected event
    is used up by the first event that matches it."""

    def __init__(self) -> None:
        self._expected: dict[tuple[str, str], list[_Expected]] = {}

    @contextlib.contextmanager
    def expecting(self, container: str, operation: str) -> Iterator[Callable[[], None]]:
        """Expect the echoes of `operation` while it runs and for a while after; the function
        yielded withdraws them (Docker refused: nothing happened)."""
        now = time.monotonic()
        self._expected = {
            key: live for key, pending in self._expected.items() if (live := _live(pending, now))
        }
        mine = [_Expected() for _ in _ECHOES[operation]]
        for action, expected in zip(_ECHOES[operation], mine, strict=True):
            self._expected.setdefault((container, action), []).append(expected)

        def withdraw() -> None:
            for expected in mine:
                expected.until = -math.inf

        try:
            yield withdraw
        finally:
            until = time.monotonic() + ECHO_WINDOW_S
            for expected in mine:
                expected.until = min(expected.until, until)

    def is_echo(self, action: str, *containers: str) -> bool:
        now = time.monotonic()
        for container in containers:
            pending = _live(self._expected.get((container, action), []), now)
            if pending:
                self._expected[(container, action)] = pending[1:]
                return True
        return False


def _live(pending: list[_Expected], now: float) -> list[_Expected]:
    return [expected for expected in pending if expected.until >= now]
