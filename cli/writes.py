"""Desired-state writes: start, stop, restart, destroy, rollback, deploy, projects create.

Each prints the server's message (or its JSON answer); with `--wait` it then watches the project
until the operator has acted on the write (the same waiter as `tether watch`).
"""

# No `from __future__ import annotations` in the command modules: typer would eval each
# annotation string on every run (~25 ms of a command's 150; see cli/options.py).

import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tether.cli.options import (
    IfMatch,
    Name,
    OutputOpt,
    Timeout,
    Wait,
    check_wait,
    invocation,
)
from tether.cli.output import Output, json_line, print_json, say

if TYPE_CHECKING:
    from tether.cli.client import ApiClient


def _answer(answer: dict[str, Any], *, wait: bool) -> None:
    """The write's JSON answer: a document, or the first of the JSON lines `--wait` prints."""
    if wait:
        json_line({"type": "write", **answer})
    else:
        print_json(answer)


def _write(
    ctx: typer.Context,
    name: str,
    output: Output,
    send: Callable[["ApiClient"], Any],
    *,
    wait: bool = False,
    timeout: float | None = None,
    deleting: bool = False,
) -> None:
    check_wait(wait, timeout)
    with invocation(ctx).client() as api:
        answer = send(api)
    if output is Output.JSON:
        _answer(answer, wait=wait)
    else:
        say(f"{name}: {answer['message']}")
    if wait:
        _wait(ctx, name, output, timeout, deleting=deleting)


def _wait(
    ctx: typer.Context, name: str, output: Output, timeout: float | None, *, deleting: bool = False
) -> None:
    from tether.cli import watch

    watch.run(
        invocation(ctx).config(), name, output=output, timeout_s=timeout, expect_deletion=deleting
    )


def _desire(action: str, doc: str, *, deleting: bool = False) -> Callable[..., None]:
    """One command of start, stop, restart, destroy (`deleting`): a write to the project, and
    with `--wait` a watch until it is done."""

    def command(
        ctx: typer.Context,
        name: Name,
        if_match: IfMatch = None,
        wait: Wait = False,
        timeout: Timeout = None,
        output: OutputOpt = Output.TABLE,
    ) -> None:
        def send(api: "ApiClient") -> Any:
            if deleting:
                return api.delete(f"/projects/{name}", if_match=if_match)
            return api.post(f"/projects/{name}/{action}", if_match=if_match)

        _write(ctx, name, output, send, wait=wait, timeout=timeout, deleting=deleting)

    command.__doc__ = doc
    command.__name__ = action
    return command


start = _desire("start", "Want the project running (a no-op, and success, if it already is).")
stop = _desire("stop", "Want the project stopped (a no-op, and success, if it already is).")
restart = _desire(
    "restart", "Replace the project's container with a fresh one (and want it running)."
)
DeleteVolumes = Annotated[
    bool,
    typer.Option(
        "--delete-volumes",
        help="Also remove the project's volumes and the data in them, once its containers are "
        "gone (without it they are kept).",
    ),
]


def destroy(
    ctx: typer.Context,
    name: Name,
    delete_volumes: DeleteVolumes = False,
    if_match: IfMatch = None,
    wait: Wait = False,
    timeout: Timeout = None,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Delete the project: its containers are removed, then the project is gone. Its volumes
    are kept unless --delete-volumes."""
    params = {"delete_volumes": "true"} if delete_volumes else None
    _write(
        ctx,
        name,
        output,
        lambda api: api.delete(f"/projects/{name}", if_match=if_match, params=params),
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


To = Annotated[
    str | None,
    typer.Option(
        "--to",
        metavar="vN",
        help="The deployment to go back to (default: the one before the current target).",
    ),
]


def rollback(
    ctx: typer.Context,
    name: Name,
    to: To = None,
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


def projects_create(ctx: typer.Context, name: Name, output: OutputOpt = Output.TABLE) -> None:
    """Create an empty project (`tether deploy` also creates one)."""
    _write(ctx, name, output, lambda api: api.post("/projects", {"name": name}))


# deploy


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


def _health(path: str | None, tcp: bool) -> dict[str, str] | None:
    if path is not None and tcp:
        raise typer.BadParameter(
            "use either --health-path or --health-tcp, not both", param_hint="'--health-tcp'"
        )
    if path is not None:
        return {"type": "http", "path": path}
    return {"type": "tcp"} if tcp else None


# The spec's fields as the options that set them; and its rules as a user of the CLI reads them.
OPTION_OF = {
    "image": "--image",
    "env": "--env",
    "secret_env": "--secret-env",
    "port": "--port",
    "health": "--health-path / --health-tcp",
    "strategy": "--strategy",
    "drain_timeout_s": "--drain-timeout",
    "volumes": "--volume",
}


def _volumes(items: Sequence[str]) -> list[dict[str, Any]]:
    """`--volume NAME:PATH[:ro]`, as the spec's volumes (which check the rest)."""
    volumes: list[dict[str, Any]] = []
    for item in items:
        name, sep, rest = item.partition(":")
        path, _, mode = rest.partition(":")
        if not sep or not path or mode not in ("", "ro", "rw"):
            raise typer.BadParameter(
                f"{item!r} is not NAME:PATH[:ro] (e.g. --volume data:/var/lib/app)",
                param_hint="'--volume'",
            )
        volumes.append({"name": name, "path": path, "read_only": mode == "ro"})
    return volumes


def _spec(
    image: str,
    plain: dict[str, str],
    secrets: dict[str, str],
    port: int | None,
    health: dict[str, str] | None,
    replacement: dict[str, Any],
    volumes: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The deployment spec of these options, checked by `DeploymentSpec` itself (the API checks
    it again): a spec it refuses is a usage error that names the option."""
    from pydantic import ValidationError

    from tether.api.models import HEALTH_NEEDS_PORT, DeploymentSpec

    both = sorted(set(secrets) & set(plain))
    if both:
        raise typer.BadParameter(
            f"{', '.join(both)} given both as --env and as --secret-env: give each once",
            param_hint="'--secret-env'",
        )
    spec: dict[str, Any] = {"image": image, "env": {**plain, **secrets}, **replacement}
    if secrets:
        spec["secret_env"] = list(secrets)
    if port is not None:
        spec["port"] = port
    if health is not None:
        spec["health"] = health
    if volumes:
        spec["volumes"] = volumes
    try:
        DeploymentSpec.model_validate(spec)
    except ValidationError as exc:
        error = exc.errors()[0]
        message = str(error["msg"]).removeprefix("Value error, ")
        if message == HEALTH_NEEDS_PORT:
            message, option = (
                "a health check probes the project's endpoint: give --port too",
                "--port",
            )
        else:
            option = OPTION_OF.get(str(error["loc"][0]) if error["loc"] else "", "--image")
        raise typer.BadParameter(message, param_hint=f"'{option}'") from exc
    return spec


def _deploy(
    api: "ApiClient", name: str, spec: dict[str, Any], params: dict[str, str], if_match: int | None
) -> tuple[dict[str, Any], bool]:
    """Create the deployment (and the project, if it does not exist); the answer, and whether
    the project was created."""
    from tether.cli.client import ApiError

    path = f"/projects/{name}/deployments"
    try:
        return api.post(path, spec, params=params, if_match=if_match), False
    except ApiError as exc:
        if exc.status != 404 or exc.error != "not_found" or if_match is not None:
            raise
    api.post("/projects", {"name": name})
    return api.post(path, spec, params=params), True


def _deployed(name: str, answer: dict[str, Any], created: bool, *, wait: bool) -> None:
    if created:
        say(f"{name}: project created")
    project = answer["project"]
    say(
        f"{name}: {answer['message']} ({answer['deployment']['image']}); desired "
        f"{project['desired_state']}, generation {project['generation']}"
    )
    if not wait and project["desired_state"] == "running":
        say(f"see it converge with `tether watch {name}`")


Image = Annotated[str, typer.Option("--image", "-i", help="Docker image, e.g. nginx:1.25.")]
Env = Annotated[
    list[str] | None,
    typer.Option("--env", "-e", metavar="KEY=VALUE", help="Environment variable (repeat)."),
]
SecretEnv = Annotated[
    list[str] | None,
    typer.Option(
        "--secret-env",
        "-s",
        metavar="KEY[=VALUE]",
        help="Secret environment variable (repeat): passed to the container, never shown. "
        "KEY alone takes the value of this shell's variable KEY.",
    ),
]
Port = Annotated[
    int | None,
    typer.Option("--port", "-p", help="Container port published on the project's endpoint."),
]
HealthPath = Annotated[
    str | None,
    typer.Option(
        "--health-path",
        metavar="PATH",
        help="Ready when GET PATH on the endpoint answers 2xx/3xx (needs --port).",
    ),
]
HealthTcp = Annotated[
    bool, typer.Option("--health-tcp", help="Ready when the endpoint accepts TCP (needs --port).")
]
NoStart = Annotated[
    bool, typer.Option("--no-start", help="Register the deployment without wanting it running.")
]
Strategy = Annotated[
    str | None,
    typer.Option(
        "--strategy",
        metavar="start-first|stop-first",
        help="How it replaces the running one (default start-first: the new one starts beside "
        "the old and gets the endpoint once ready; stop-first: for what cannot run twice, the "
        "default with a writable --volume).",
    ),
]
Volume = Annotated[
    list[str] | None,
    typer.Option(
        "--volume",
        "-v",
        metavar="NAME:PATH[:ro]",
        help="Mount the project's named volume NAME at PATH (repeat; ':ro' read-only). Created "
        "once, kept across deployments; a host path cannot be mounted.",
    ),
]
DrainTimeout = Annotated[
    int | None,
    typer.Option(
        "--drain-timeout",
        metavar="SECONDS",
        help="How long the old container may finish what it has in flight (default 30).",
    ),
]


def deploy(
    ctx: typer.Context,
    name: Name,
    image: Image,
    env: Env = None,
    secret_env: SecretEnv = None,
    port: Port = None,
    health_path: HealthPath = None,
    health_tcp: HealthTcp = False,
    no_start: NoStart = False,
    strategy: Strategy = None,
    drain_timeout: DrainTimeout = None,
    volume: Volume = None,
    if_match: IfMatch = None,
    wait: Wait = False,
    timeout: Timeout = None,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Create a new deployment of the project and target it (creating the project if needed)."""
    check_wait(wait, timeout)
    secrets = _secret_pairs(secret_env or [], invocation(ctx).env)
    replacement = {
        key: value
        for key, value in (("strategy", strategy), ("drain_timeout_s", drain_timeout))
        if value is not None
    }
    health = _health(health_path, health_tcp)
    spec = _spec(
        image, _env_pairs(env or []), secrets, port, health, replacement, _volumes(volume or [])
    )
    params = {"start": "false" if no_start else "true"}
    with invocation(ctx).client() as api:
        answer, created = _deploy(api, name, spec, params, if_match)
    if output is Output.JSON:
        _answer({**answer, "project_created": created}, wait=wait)
    else:
        _deployed(name, answer, created, wait=wait)
    if wait:
        _wait(ctx, name, output, timeout)
