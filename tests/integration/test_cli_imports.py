"""What the client commands cost to start, checked without timing anything: the modules they
import (a fresh interpreter each), and the light views they read the API's JSON with.

`tether --help` and the one-request commands must answer in 150 ms (docs/benchmarks.md, item 7);
pydantic (~200 ms with the API's models), httpx (~100 ms) and rich (~50 ms; only the commands
that draw a table need it) would each take much of that.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import typer
import typer.core
from support import free_port

from tether.api import models
from tether.cli import main, views

HEAVY = ("pydantic", "httpx", "rich", "structlog", "tenacity", "asyncio")

PROBE = """
import contextlib, io, json, sys
from tether.cli.main import run
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    code = run(sys.argv[1:], {"TETHER_URL": sys.argv.pop(0), "TETHER_TOKEN": "tth_x"})
print(json.dumps({"code": code, "modules": sorted({m.partition(".")[0] for m in sys.modules})}))
"""


def _imported(*argv: str) -> tuple[int, set[str]]:
    url = f"http://127.0.0.1:{free_port()}"  # refuses: the command fails after its request
    probe = PROBE.replace("sys.argv.pop(0)", repr(url))
    done = subprocess.run(
        [sys.executable, "-c", probe, *argv], capture_output=True, text=True, check=True
    )
    answer = json.loads(done.stdout)
    return answer["code"], set(answer["modules"])


@pytest.mark.parametrize(
    "argv", [("--help",), ("status",), ("start", "shop"), ("stop", "shop"), ("projects", "list")]
)
def test_client_commands_import_no_heavy_module(argv: tuple[str, ...]) -> None:
    code, modules = _imported(*argv)
    assert code in (0, 1)  # help, or the refused connection reported
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))


def _commands_built(argv: list[str]) -> set[str]:
    """The commands typer builds (each from its function's signature) to run `argv`."""
    group = typer.main.get_command(main._app_for(argv))
    assert isinstance(group, typer.core.TyperGroup)
    return set(group.commands)


def test_a_command_line_builds_only_the_command_it_names() -> None:
    everything = {str(info.name) for info in main.app.registered_commands}
    everything |= {str(info.name) for info in main.app.registered_groups}
    assert _commands_built(["status"]) == {"status"}
    assert _commands_built(["start", "shop", "--wait"]) == {"start"}
    assert _commands_built(["projects", "list"]) == {"projects"}
    assert _commands_built(["--help"]) == everything
    assert _commands_built([]) == everything
    assert _commands_built(["stauts"]) == everything  # for click to suggest the nearest names


def test_an_unknown_command_is_still_told_the_nearest_names(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main.run(["stauts"], {}) == 2
    assert "Did you mean 'status'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("view", "model"),
    [
        (views.Project, models.Project),
        (views.Condition, models.Condition),
        (views.Status, models.Status),
        (views.Event, models.Event),
        (views.ProjectView, models.ProjectView),
        (views.WatchView, models.WatchView),
        (views.Deployment, models.Deployment),
        (views.HealthCheck, models.HttpCheck),
        (views.LogAttach, models.LogAttach),
        (views.LogLine, models.LogLine),
    ],
)
def test_each_view_field_is_a_field_of_the_api_model(view: type, model: type) -> None:
    fields = {f.name for f in dataclasses.fields(view)}
    assert fields <= set(model.model_fields), sorted(fields - set(model.model_fields))


def test_views_read_what_the_api_models_write() -> None:
    status = models.Status(
        project="shop",
        conditions=[
            models.Condition(
                type=models.ConditionType.READY,
                status="True",
                reason="Healthy",
                message="ok",
                last_transition_time="2026-01-01T00:00:00Z",
                observed_generation=2,
            )
        ],
    )
    read = views.Status.of(json.loads(status.model_dump_json()))
    ready = read.condition(models.ConditionType.READY)
    assert ready is not None
    assert (ready.status, ready.observed_generation) == ("True", 2)
    assert read.phase == status.phase


@pytest.mark.parametrize(
    "check",
    [models.HttpCheck(type="http", path="/healthz"), models.TcpCheck(type="tcp")],
    ids=["http", "tcp"],
)
def test_the_health_check_view_reads_either_kind_of_check(
    check: models.HttpCheck | models.TcpCheck,
) -> None:
    """The API's check is a union (`http` with a path, `tcp` without): the view's fields are the
    union's, and it reads each kind."""
    fields = {f.name for f in dataclasses.fields(views.HealthCheck)}
    assert fields <= set(models.HttpCheck.model_fields) | set(models.TcpCheck.model_fields)
    deployment = models.Deployment(
        project="shop",
        version=1,
        image="nginx:1.25",
        port=80,
        health=check,
        created_by="alice",
        created_at="2026-01-01T00:00:00Z",
    )
    read = views.Deployment.of(json.loads(deployment.model_dump_json()))
    assert read.health == views.HealthCheck(check.type, getattr(check, "path", None))
