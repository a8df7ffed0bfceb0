"""A person at the CLI, in tests: `tether ...` run in-process with an environment of its own.

Used by tests/integration/test_cli.py, test_logs.py, test_watch.py and the scenarios' harness.
The command runs in a thread (the servers under test run on the test's event loop, which must stay
free) and its output is read through pytest's capsys; every run is kept (`Cli.runs`), for tests
that check something of all of them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from tether.cli.main import run


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def json_lines(self) -> list[Any]:
        return [json.loads(line) for line in self.out.splitlines()]

    @property
    def failure(self) -> str:
        """What stderr said, checked to be a failure told in an `error: ` line, no traceback."""
        assert self.code != 0, self
        assert "Traceback" not in self.err, self.err
        assert self.err.startswith("error: ") or "\nerror: " in self.err, self.err
        return self.err

    @property
    def failure_line(self) -> str:
        """The failure told in exactly one line, `error: ...`, and nothing else on stderr."""
        assert self.failure.startswith("error: "), self.err
        assert self.err.count("\n") == 1, self.err
        return self.err


class Cli:
    """`tether ...` as a user with this environment."""

    def __init__(self, capsys: pytest.CaptureFixture[str], env: Mapping[str, str]) -> None:
        self._capsys = capsys
        self.env = dict(env)
        self.runs: list[tuple[tuple[str, ...], Result]] = []

    def as_(self, **env: str) -> Cli:
        """The same user with some variables changed ('' removes one)."""
        merged = {**self.env, **env}
        return Cli(self._capsys, {k: v for k, v in merged.items() if v})

    async def __call__(self, *argv: str) -> Result:
        self._capsys.readouterr()
        code = await asyncio.to_thread(run, list(argv), self.env)
        out, err = self._capsys.readouterr()
        result = Result(code, out, err)
        self.runs.append((argv, result))
        return result

    async def ok(self, *argv: str) -> Result:
        result = await self(*argv)
        assert result.code == 0, result
        return result
