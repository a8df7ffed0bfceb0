"""The `tether` command: sets desired state through the HTTP API, shows it, and runs the servers.

`run(argv, env)` is the whole CLI as a function (tests call it in-process); `main()` only hands it
`sys.argv` and `os.environ`. Exit codes: 0 success; 1 a failure (API, network, database, Docker),
reported as one line on stderr saying what went wrong and what to do; 2 a bad command line or
configuration value.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Protocol, runtime_checkable

import typer

from tether.api.models import PROJECT_NAME_PATTERN, Deployment, Event, ProjectView, WriteResult
from tether.cli import config, follow, render
from tether.cli import watch as watching
from tether.cli.client import ApiClient, ApiError
from tether.cli.errors import EXIT_FAILURE, EXIT_USAGE, CliError
from tether.cli.render import Output, print_json, say

EVENTS_PAGE = 1000
RECENT_EVENTS = 5
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Runtime:
    """What one invocation runs against: its environment (TETHER_*, config file location)."""

    env: Mapping[str, str]

    def client(self) -> ApiClient:
        return ApiClient(config.load(self.env))

    def config(self) -> config.ClientConfig:
        return config.load(self.env)


def _runtime(ctx: typer.Context) -> Runtime:
    runtime = ctx.find_object(Runtime)
    assert runtime is not None, "run() passes a Runtime as the context object"
    return runtime


# Argument types shared by the commands


def _check_name(value: str | None) -> str | None:
    if value is not None and not re.fullmatch(PROJECT_NAME_PATTERN, value):
        raise typer.BadParameter(
            f"{value!r} is not a project name: use a lowercase letter, then up to 62 of a-z, 0-9 "
            "or '-'"
        )
    return value


Name = Annotated[str, typer.Argument(help="The project name.", callback=_check_name)]
OutputOpt = Annotated[
    Output,
    typer.Option(
        "--output", "-o", help="table for people, json for programs.", case_sensitive=False
    ),
]
IfMatch = Annotated[
    int | None,
    typer.Option(
        "--if-match",
        metavar="GEN",
        min=0,
        help="Only if the project is still at this generation (else refused, nothing changed).",
    ),
]


Wait = Annotated[
    bool,
    typer.Option(
        "--wait",
        help="Then watch the project until it is as asked: exit 0 when it is, 1 when it stalls "
        "or its rollout fails, 2 after --timeout (see `tether watch`).",
    ),
]
Timeout = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        metavar="S",
        min=0,
        help="Stop waiting after S seconds and exit 2 (default: wait as long as it takes).",
    ),
]


class LogFormat(StrEnum):
    AUTO = "auto"
    JSON = "json"
    CONSOLE = "console"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


LogFormatOpt = Annotated[
    LogFormat | None,
    typer.Option("--log-format", help="Log lines as json or console (default: TETHER_LOG_FORMAT)."),
]
LogLevelOpt = Annotated[
    LogLevel | None,
    typer.Option("--log-level", help="Lowest level logged (default: TETHER_LOG_LEVEL)."),
]


def _help_without_command(ctx: typer.Context) -> None:
    """A group run without a command shows its help and exits 2, like any incomplete command."""
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(EXIT_USAGE)


def _group(help_text: str) -> typer.Typer:
    return typer.Typer(
        help=help_text,
        callback=_help_without_command,
        invoke_without_command=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )


app = _group("Keep Docker-hosted projects in the state you asked for.")
projects_app = _group("Create and list projects.")
token_app = _group("Create API tokens (needs the database).")
app.add_typer(projects_app, name="projects")
app.add_typer(token_app, name="token")


# Desired-state writes: each prints the server's message (or its JSON answer); with `--wait` it
# then watches the project until the operator has acted on the write (the same waiter as `watch`).


def _check_wait(wait: bool, timeout: float | None) -> None:
    if timeout is not None and not wait:
        raise typer.BadParameter("--timeout goes with --wait", param_hint="'--timeout'")


def _write(
    ctx: typer.Context,
    name: str,
    output: Output,
    send: Callable[[ApiClient], Any],
    *,
    wait: bool = False,
    timeout: float | None = None,
    deleting: bool = False,
) -> None:
    _check_wait(wait, timeout)
    with _runtime(ctx).client() as api:
        answer = send(api)
    if output is Output.JSON:
        if wait:  # JSON lines: the answer, then the watch's views and result
            sys.stdout.write(json.dumps({"type": "write", **answer}) + "\n")
        else:
            print_json(answer)
    else:
        result = WriteResult.model_validate(answer)
        say(f"{name}: {result.message}")
    if wait:
        _wait(ctx, name, output, timeout, deleting=deleting)


def _wait(
    ctx: typer.Context, name: str, output: Output, timeout: float | None, *, deleting: bool = False
) -> None:
    watching.run(
        _runtime(ctx).config(), name, output=output, timeout_s=timeout, expect_deletion=deleting
    )


@app.command()
def start(
    ctx: typer.Context,
    name: Name,
    if_match: IfMatch = None,
    wait: Wait = False,
    timeout: Timeout = None,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Want the project running (a no-op, and success, if it already is)."""
    _write(
        ctx,
        name,
        output,
        lambda api: api.post(f"/projects/{name}/start", if_match=if_match),
        wait=wait,
        timeout=timeout,
    )


@app.command()
def stop(
    ctx: typer.Context,
    name: Name,
    if_match: IfMatch = None,
    wait: Wait = False,
    timeout: Timeout = None,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Want the project stopped (a no-op, and success, if it already is)."""
    _write(
        ctx,
        name,
        output,
        lambda api: api.post(f"/projects/{name}/stop", if_match=if_match),
        wait=wait,
        timeout=timeout,
    )


@app.command()
def restart(
    ctx: typer.Context,
    name: Name,
    if_match: IfMatch = None,
    wait: Wait = False,
    timeout: Timeout = None,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Replace the project's container with a fresh one (and want it running)."""
    _write(
        ctx,
        name,
        output,
        lambda api: api.post(f"/projects/{name}/restart", if_match=if_match),
        wait=wait,
        timeout=timeout,
    )


@app.command()
def destroy(
    ctx: typer.Context,
    name: Name,
    if_match: IfMatch = None,
    wait: Wait = False,
    timeout: Timeout = None,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Delete the project: its containers are removed, then the project is gone."""
    _write(
        ctx,
        name,
        output,
        lambda api: api.delete(f"/projects/{name}", if_match=if_match),
        wait=wait,
        timeout=timeout,
        deleting=True,
    )


def _version(value: str | None) -> int | None:
    if value is None:
        return None
    match = re.fullmatch(r"[vV]?([0-9]+)", value.strip())
    if not match or int(match[1]) < 1:
        raise typer.BadParameter(
            f"{value!r} is not a deployment version: use vN or N, e.g. v3", param_hint="'--to'"
        )
    return int(match[1])


@app.command()
def rollback(
    ctx: typer.Context,
    name: Name,
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            metavar="vN",
            help="The deployment to go back to (default: the one before the current target).",
        ),
    ] = None,
    if_match: IfMatch = None,
    wait: Wait = False,
    timeout: Timeout = None,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Target an earlier deployment."""
    version = _version(to)
    body = {"to_version": version} if version is not None else None
    _write(
        ctx,
        name,
        output,
        lambda api: api.post(f"/projects/{name}/rollback", body, if_match=if_match),
        wait=wait,
        timeout=timeout,
    )


def _env_pairs(pairs: Sequence[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(
                f"{pair!r} is not KEY=VALUE (e.g. --env LOG_LEVEL=debug)", param_hint="'--env'"
            )
        env[key] = value
    return env


def _secret_pairs(items: Sequence[str], environ: Mapping[str, str]) -> dict[str, str]:
    """`--secret-env KEY=VALUE`, or `--secret-env KEY` for the value of this shell's KEY (which
    keeps the value out of the command line, the shell's history and `ps`)."""
    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key:
            raise typer.BadParameter(
                "expected KEY=VALUE, or KEY to take the value of the variable KEY of this shell",
                param_hint="'--secret-env'",
            )
        if not sep:
            if key not in environ:
                raise typer.BadParameter(
                    f"{key} is not set in this shell: give --secret-env {key}=VALUE, or export "
                    f"{key} first",
                    param_hint="'--secret-env'",
                )
            value = environ[key]
        env[key] = value
    return env


@app.command()
def deploy(
    ctx: typer.Context,
    name: Name,
    image: Annotated[str, typer.Option("--image", "-i", help="Docker image, e.g. nginx:1.25.")],
    env: Annotated[
        list[str] | None,
        typer.Option("--env", "-e", metavar="KEY=VALUE", help="Environment variable (repeat)."),
    ] = None,
    secret_env: Annotated[
        list[str] | None,
        typer.Option(
            "--secret-env",
            "-s",
            metavar="KEY[=VALUE]",
            help="Secret environment variable (repeat): passed to the container, never shown. "
            "KEY alone takes the value of this shell's variable KEY.",
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            "-p",
            min=1,
            max=65535,
            help="Container port published on the project's endpoint.",
        ),
    ] = None,
    health_path: Annotated[
        str | None,
        typer.Option(
            "--health-path",
            metavar="PATH",
            help="Ready when GET PATH on the endpoint answers 2xx/3xx (needs --port).",
        ),
    ] = None,
    health_tcp: Annotated[
        bool,
        typer.Option("--health-tcp", help="Ready when the endpoint accepts TCP (needs --port)."),
    ] = False,
    no_start: Annotated[
        bool,
        typer.Option("--no-start", help="Register the deployment without wanting it running."),
    ] = False,
    if_match: IfMatch = None,
    wait: Wait = False,
    timeout: Timeout = None,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Create a new deployment of the project and target it (creating the project if needed)."""
    _check_wait(wait, timeout)
    secrets = _secret_pairs(secret_env or [], _runtime(ctx).env)
    plain = _env_pairs(env or [])
    both = sorted(set(secrets) & set(plain))
    if both:
        raise typer.BadParameter(
            f"{', '.join(both)} given both as --env and as --secret-env: give each once",
            param_hint="'--secret-env'",
        )
    spec: dict[str, Any] = {"image": image, "env": {**plain, **secrets}}
    if secrets:
        spec["secret_env"] = list(secrets)
    if port is not None:
        spec["port"] = port
    if health_path is not None and health_tcp:
        raise typer.BadParameter(
            "use either --health-path or --health-tcp, not both", param_hint="'--health-tcp'"
        )
    if health_path is not None:
        spec["health"] = {"type": "http", "path": health_path}
    elif health_tcp:
        spec["health"] = {"type": "tcp"}
    if "health" in spec and port is None:
        raise typer.BadParameter(
            "a health check probes the project's endpoint: give --port too", param_hint="'--port'"
        )
    params = {"start": "false" if no_start else "true"}
    created = False
    with _runtime(ctx).client() as api:
        try:
            answer = api.post(
                f"/projects/{name}/deployments", spec, params=params, if_match=if_match
            )
        except ApiError as exc:
            if exc.status != 404 or exc.error != "not_found" or if_match is not None:
                raise
            api.post("/projects", {"name": name})
            created = True
            answer = api.post(f"/projects/{name}/deployments", spec, params=params)
    if output is Output.JSON:
        if wait:
            line = {"type": "write", **answer, "project_created": created}
            sys.stdout.write(json.dumps(line) + "\n")
        else:
            print_json({**answer, "project_created": created})
    else:
        if created:
            say(f"{name}: project created")
        result = WriteResult.model_validate(answer)
        shown = Deployment.model_validate(answer["deployment"])
        say(
            f"{name}: {result.message} ({shown.image}); desired {result.project.desired_state}, "
            f"generation {result.project.generation}"
        )
        if not wait and result.project.desired_state == "running":
            say(f"see it converge with `tether watch {name}`")
    if wait:
        _wait(ctx, name, output, timeout)


@projects_app.command("create")
def projects_create(ctx: typer.Context, name: Name, output: OutputOpt = Output.TABLE) -> None:
    """Create an empty project (`tether deploy` also creates one)."""
    _write(ctx, name, output, lambda api: api.post("/projects", {"name": name}))


# Reads


@projects_app.command("list")
def projects_list(ctx: typer.Context, output: OutputOpt = Output.TABLE) -> None:
    """List your projects (an admin token lists everyone's)."""
    with _runtime(ctx).client() as api:
        answer = api.get("/projects")
    if output is Output.JSON:
        print_json(answer)
        return
    render.projects_table([ProjectView.model_validate(v) for v in answer])


def _events(api: ApiClient, name: str, *, after: int = 0, tail: int | None = None) -> list[Any]:
    """Every event after `after`, oldest first (the last `tail` of them if given)."""
    found: list[Any] = []
    while True:
        page = api.get(f"/projects/{name}/events", {"after": after, "limit": EVENTS_PAGE})
        found.extend(page)
        if len(page) < EVENTS_PAGE:
            break
        after = page[-1]["id"]
        if tail is not None:
            found = found[-tail:]
    return found[-tail:] if tail is not None else found


@app.command()
def status(
    ctx: typer.Context,
    name: Annotated[
        str | None,
        typer.Argument(
            help="One project, in detail (default: a table of all).", callback=_check_name
        ),
    ] = None,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Desired and observed state: every project, or one in detail."""
    with _runtime(ctx).client() as api:
        if name is None:
            answer = api.get("/projects")
            if output is Output.JSON:
                print_json(answer)
            else:
                render.status_table([ProjectView.model_validate(v) for v in answer])
            return
        answer = api.get(f"/projects/{name}")
        if output is Output.JSON:
            print_json(answer)
            return
        recent = _events(api, name, tail=RECENT_EVENTS)
    render.status_detail(
        ProjectView.model_validate(answer), [Event.model_validate(e) for e in recent]
    )


@app.command()
def deployments(ctx: typer.Context, name: Name, output: OutputOpt = Output.TABLE) -> None:
    """The project's deployments, oldest first, with the targeted one marked."""
    with _runtime(ctx).client() as api:
        answer = api.get(f"/projects/{name}/deployments")
        if output is Output.JSON:
            print_json(answer)
            return
        view = ProjectView.model_validate(api.get(f"/projects/{name}"))
    render.deployments_table([Deployment.model_validate(d) for d in answer], view.project)


@app.command()
def events(
    ctx: typer.Context,
    name: Name,
    after: Annotated[
        int, typer.Option("--after", metavar="ID", min=0, help="Only events after this id.")
    ] = 0,
    tail: Annotated[
        int | None, typer.Option("--tail", metavar="N", min=1, help="Only the last N events.")
    ] = None,
    follow_: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-f",
            help="Then print each new event as it happens, until Ctrl-C (one per line; "
            "JSON lines with -o json).",
        ),
    ] = False,
    output: OutputOpt = Output.TABLE,
) -> None:
    """The project's history: desired changes, actions, refusals, health, convergence."""
    if follow_:
        follow.run_follow_events(
            _runtime(ctx).config(), name, after=after, tail=tail, output=output
        )
        return
    with _runtime(ctx).client() as api:
        found = _events(api, name, after=after, tail=tail)
    if output is Output.JSON:
        print_json(found)
        return
    render.events_table([Event.model_validate(e) for e in found], name)


@app.command()
def watch(
    ctx: typer.Context,
    name: Annotated[
        str | None,
        typer.Argument(
            help="One project (default: every project you can see).", callback=_check_name
        ),
    ] = None,
    timeout: Timeout = None,
    output: Annotated[
        Output,
        typer.Option(
            "--output",
            "-o",
            help="table: a live view on a terminal, else one line per change; json: JSON lines.",
            case_sensitive=False,
        ),
    ] = Output.TABLE,
) -> None:
    """Watch projects converge, live, until they are as desired.

    Exit codes, like `kubectl rollout status`: 0 when the operator has acted on the current
    generation and the project is Ready (or stopped, as desired); 1 when it is Stalled or the
    rollout of its deployment failed; 2 after --timeout. Without NAME: every project, exit 0
    when all of them are as desired, 1 if any is not.
    """
    watching.run(_runtime(ctx).config(), name, output=output, timeout_s=timeout)


_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    text = value.strip()
    match = _DURATION.fullmatch(text)
    if match:
        return datetime.now(UTC) - timedelta(seconds=float(match[1]) * _UNITS[match[2]])
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is neither a duration (30s, 10m, 2h, 1d) nor a time (2024-05-01T12:00:00Z)",
            param_hint="'--since'",
        ) from None
    return when if when.tzinfo is not None else when.astimezone()


@app.command()
def logs(
    ctx: typer.Context,
    name: Name,
    follow_: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-f",
            help="Keep printing new output, across restarts and new deployments, until Ctrl-C.",
        ),
    ] = False,
    tail: Annotated[
        int | None,
        typer.Option("--tail", metavar="N", min=0, help="Only the last N lines of output."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="T",
            help="Only output from then on: a duration ago (30s, 10m, 2h) or a time "
            "(2024-05-01T12:00:00Z).",
        ),
    ] = None,
    output: Annotated[
        Output,
        typer.Option(
            "--output",
            "-o",
            help="table: the output as it was written; json: one JSON object per line.",
            case_sensitive=False,
        ),
    ] = Output.TABLE,
) -> None:
    """The output of the project's container (stdout to stdout, stderr to stderr)."""
    follow.run_logs(
        _runtime(ctx).config(),
        name,
        follow=follow_,
        tail=tail,
        since=_since(since),
        output=output,
    )


@app.command()
def login(
    ctx: typer.Context,
    url: Annotated[
        str | None, typer.Option("--url", help=f"The tether API, e.g. {config.DEFAULT_URL}.")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", help="An API token (asked for if omitted on a terminal)."),
    ] = None,
) -> None:
    """Check a token against the API and save both in the config file (mode 0600)."""
    env = _runtime(ctx).env
    path = config.config_path(env)
    try:
        saved_url = config.read_file(path).get("url")
    except CliError:
        saved_url = None  # a broken file is what login replaces
    url = config.check_url(url or env.get("TETHER_URL") or saved_url or config.DEFAULT_URL, "--url")
    if not token:
        if not sys.stdin.isatty():
            raise CliError("give the API token with --token TOKEN", exit_code=EXIT_USAGE)
        token = str(typer.prompt("API token", hide_input=True)).strip()
    settings = config.ClientConfig(url=url, token=token, timeout_s=config.timeout(env), path=path)
    with ApiClient(settings) as api:
        visible = api.get("/projects")
    config.save(path, url=url, token=token)
    say(f"logged in to {url} ({len(visible)} projects visible); saved to {path}")
    if env.get("TETHER_TOKEN") and env["TETHER_TOKEN"] != token:
        say("note: TETHER_TOKEN is set in this environment and overrides the saved token")


# Server commands: they read TETHER_* settings, not the CLI's config file, and import the server
# side (uvicorn, the store, the operator) only when run, which keeps the client commands quick.


@app.command()
def migrate(ctx: typer.Context) -> None:
    """Apply the pending database migrations (each once, safe to run concurrently)."""
    from tether.cli import server

    server.migrate(server.load_settings(_runtime(ctx).env))


@app.command()
def api(ctx: typer.Context, log_format: LogFormatOpt = None, log_level: LogLevelOpt = None) -> None:
    """Serve the HTTP API on TETHER_API_HOST:TETHER_API_PORT (run `tether migrate` first)."""
    from tether.cli import server

    settings = server.load_settings(_runtime(ctx).env, log_format=log_format, log_level=log_level)
    server.configure_logs(settings)
    server.api(settings)


@app.command()
def operator(
    ctx: typer.Context, log_format: LogFormatOpt = None, log_level: LogLevelOpt = None
) -> None:
    """Run the reconciler until SIGINT/SIGTERM, then drain and exit 0."""
    from tether.cli import server

    settings = server.load_settings(_runtime(ctx).env, log_format=log_format, log_level=log_level)
    server.configure_logs(settings)
    server.operator(settings)


@app.command()
def up(ctx: typer.Context, log_format: LogFormatOpt = None, log_level: LogLevelOpt = None) -> None:
    """Run tether on this machine: Postgres in Docker, migrations, the API and the operator.

    Ctrl-C stops everything, including the Postgres container; its data stays in a volume.
    """
    from tether.cli import server

    env = _runtime(ctx).env
    settings = server.load_settings(env, log_format=log_format, log_level=log_level)
    server.configure_logs(settings)
    server.up(settings, env)


def _check_owner(value: str) -> str:
    if not re.fullmatch(PROJECT_NAME_PATTERN, value):
        raise typer.BadParameter(
            f"{value!r} is not an owner name: use a lowercase letter, then up to 62 of a-z, 0-9 "
            "or '-'"
        )
    return value


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    owner: Annotated[
        str,
        typer.Option("--owner", help="Whose projects the token acts on.", callback=_check_owner),
    ],
    admin: Annotated[
        bool, typer.Option("--admin", help="See and change every owner's projects.")
    ] = False,
) -> None:
    """Create an API token and print it (only once: it is stored hashed)."""
    from tether.cli import server

    token = server.create_token(server.load_settings(_runtime(ctx).env), owner, admin=admin)
    sys.stdout.write(token + "\n")
    sys.stderr.write(
        f"created a{'n admin' if admin else ''} token for {owner}; it is shown only once. "
        "Use it with `tether login --token TOKEN` or TETHER_TOKEN\n"
    )


# Entry points


@runtime_checkable
class _CommandLineError(Protocol):
    """How click (vendored by typer) reports a bad command line: UsageError, BadParameter, ..."""

    exit_code: int

    def format_message(self) -> str: ...


def _fail(message: str) -> None:
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()


def run(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """Run `tether` with these arguments and environment; return the exit code."""
    runtime = Runtime(env=dict(os.environ) if env is None else env)
    command = typer.main.get_command(app)
    try:
        code = command.main(args=list(argv), prog_name="tether", standalone_mode=False, obj=runtime)
    except CliError as exc:
        _fail(exc.message)
        return exc.exit_code
    except typer.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):
            _fail("interrupted")
            return EXIT_INTERRUPTED
        _fail("aborted")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        _fail("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:
        if not isinstance(exc, _CommandLineError):
            raise
        where = getattr(getattr(exc, "ctx", None), "command_path", None) or "tether"
        _fail(f"{' '.join(exc.format_message().split())} (see `{where} --help`)")
        return exc.exit_code
    return code if isinstance(code, int) else 0


def main() -> None:
    sys.exit(run(sys.argv[1:]))
