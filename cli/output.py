"""How the CLI writes: plain lines for people, JSON for programs (`--output json`).

Output goes to the `sys.stdout` of the moment (so tests can capture it). Tables are rich's
(`tether.cli.render`), imported only by the commands that draw one.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from typing import Any


class Output(StrEnum):
    TABLE = "table"
    JSON = "json"


def say(text: str) -> None:
    """One plain line for people (at once: a follow or a watch prints as things happen)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def print_json(data: Any) -> None:
    """One JSON document, indented."""
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
    sys.stdout.flush()


def json_line(data: Any) -> None:
    """One line of JSON lines (`watch -o json`, `--wait -o json`, `events --follow -o json`)."""
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


def notice(text: str) -> None:
    """A line for people on stderr, beside output that programs read."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
