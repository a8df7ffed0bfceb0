"""The `tether` command, in-process through `run(argv, env)`, against the real API server on real
Postgres (conftest): what people read, what programs parse, and the exit codes.

A failure is exactly one line on stderr that says what went wrong and what to do; bad arguments
exit 2 without contacting anything; success is 0 and nothing else is.
"""

from __future__ import annotations

import json
import socket
import stat
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cliuser import Cli
from support import free_port, serving

from tether.api.app import create_app
from tether.api.models import EventKind, NewEvent, Principal, Status
from tether.api.store import Store

IMAGE = "tether-test/workload:latest"
ALICE = Principal(owner="alice")


# Small, local files: read and written synchronously, also from async tests.


def saved(path: Path) -> Any:
    return json.loads(path.read_text())


def permissions(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return tmp_path / "home" / "tether" / "config.json"


@pytest.fixture
def nobody(capsys: pytest.CaptureFixture[str], config_file: Path) -> Cli:
    """No URL, no token: only a config file location of this test's own."""
    return Cli(capsys, {"TETHER_CONFIG": str(config_file)})


@pytest.fixture
def alice(nobody: Cli, api_url: str, tokens: Any) -> Cli:
    return nobody.as_(TETHER_URL=api_url, TETHER_TOKEN=tokens.alice)


@pytest.fixture
def bob(alice: Cli, tokens: Any) -> Cli:
    return alice.as_(TETHER_TOKEN=tokens.bob)


@pytest.fixture
def admin(alice: Cli, tokens: Any) -> Cli:
    return alice.as_(TETHER_TOKEN=tokens.admin)


@pytest.fixture
async def no_database_api_url() -> AsyncIterator[str]:
    """A real API whose Postgres is not there: every request needs it, so every answer is 503."""
    store = await Store.connect(f"postgresql://tether:tether@127.0.0.1:{free_port()}/tether")
    try:
        async with serving(create_app(store)) as url:
            yield url
    finally:
        await store.close()


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog) but never answers."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


# The tour, as the README gives it


async def test_tour(alice: Cli) -> None:
    created = await alice.ok("projects", "create", "shop")
    assert created.out == "shop: project created\n"
    again = await alice.ok("projects", "create", "shop")
    assert "already exists" in again.out

    deployed = await alice.ok(
        "deploy",
        "shop",
        "--image",
        IMAGE,
        "--env",
        "GREETING=hello",
        "-e",
        "QUERY=a=b",
        "--port",
        "8080",
        "--health-path",
        "/healthz",
    )
    assert "v1 created" in deployed.out
    assert "desired running" in deployed.out
    assert "project created" not in deployed.out

    [v1] = (await alice.ok("deployments", "shop", "-o", "json")).json()
    assert v1["version"] == 1
    assert v1["image"] == IMAGE
    assert v1["port"] == 8080
    assert v1["env"] == {"GREETING": "hello", "QUERY": "a=b"}
    assert v1["health"]["type"] == "http"
    assert v1["health"]["path"] == "/healthz"
    table = (await alice.ok("deployments", "shop")).out
    assert "v1" in table
    assert IMAGE in table
    assert "http /healthz" in table
    assert "target" in table

    listing = (await alice.ok("status")).out
    [header, row] = listing.splitlines()
    for column in ("NAME", "DESIRED", "PHASE", "READY", "DEPLOYMENT", "AGE", "MESSAGE"):
        assert column in header
    assert row.split()[:5] == ["shop", "running", "Pending", "-", "v1"]
    assert "waiting for the operator" in row
    [view] = (await alice.ok("status", "--output", "json")).json()
    assert view["project"]["name"] == "shop"
    assert view["project"]["desired_state"] == "running"

    detail = (await alice.ok("status", "shop")).out
    assert "deployment v1" in detail
    assert "waiting for the operator" in detail
    assert "recent events" in detail
    assert "Deployed" in detail
    one = (await alice.ok("status", "shop", "-o", "json")).json()
    assert one["project"]["target_version"] == 1
    assert one["status"] is None

    history = (await alice.ok("events", "shop", "-o", "json")).json()
    assert [e["reason"] for e in history] == ["Created", "Deployed"]
    assert "Deployed" in (await alice.ok("events", "shop")).out
    last = (await alice.ok("events", "shop", "--tail", "1", "-o", "json")).json()
    assert [e["reason"] for e in last] == ["Deployed"]
    after = await alice.ok("events", "shop", "--after", str(history[0]["id"]), "-o", "json")
    assert [e["reason"] for e in after.json()] == ["Deployed"]

    # Already running is a desire already satisfied: success, and it says so.
    start = await alice.ok("start", "shop")
    assert start.out == "shop: already desired running; tether is keeping it running\n"
    assert start.err == ""
    assert (await alice.ok("start", "shop", "-o", "json")).json()["changed"] is False

    assert (await alice.ok("stop", "shop")).out == "shop: desired stopped\n"
    assert "already desired stopped" in (await alice.ok("stop", "shop")).out

    v2 = await alice.ok(
        "deploy", "shop", "--image", IMAGE, "--health-tcp", "-p", "80", "--no-start"
    )
    assert "v2 created" in v2.out
    assert "desired stopped" in v2.out
    assert (await alice.ok("status", "shop", "-o", "json")).json()["project"][
        "desired_state"
    ] == "stopped"

    assert (await alice.ok("rollback", "shop")).out == "shop: rolling back to v1\n"
    assert "rolling back to v2" in (await alice.ok("rollback", "shop", "--to", "v2")).out
    assert "already targeting v2" in (await alice.ok("rollback", "shop", "--to", "2")).out
    missing = await alice("rollback", "shop", "--to", "v9")
    assert missing.code == 1
    assert "no deployment v9" in missing.failure_line

    restarted = await alice.ok("restart", "shop")
    assert "restart requested" in restarted.out
    assert (await alice.ok("status", "shop", "-o", "json")).json()["project"][
        "desired_state"
    ] == "running"

    assert "deletion requested" in (await alice.ok("destroy", "shop")).out
    assert "already requested" in (await alice.ok("destroy", "shop")).out
    gone = await alice("start", "shop")
    assert gone.code == 1
    assert "being destroyed" in gone.failure_line


async def test_refusals_say_what_to_run(alice: Cli) -> None:
    await alice.ok("projects", "create", "empty")
    for verb in ("restart", "start", "rollback"):
        refused = await alice(verb, "empty")
        assert refused.code == 1, refused
        assert "no deployment" in refused.failure_line
        assert "`tether deploy empty --image IMAGE`" in refused.failure_line
        assert refused.out == ""


async def test_deploy_creates_the_project_and_says_so(alice: Cli) -> None:
    first = await alice.ok("deploy", "web", "--image", IMAGE)
    assert first.out.splitlines()[0] == "web: project created"
    assert "v1 created" in first.out
    second = (await alice.ok("deploy", "web", "--image", IMAGE, "-o", "json")).json()
    assert second["project_created"] is False
    assert second["deployment"]["version"] == 2
    third = (await alice.ok("deploy", "api", "--image", IMAGE, "-o", "json")).json()
    assert third["project_created"] is True
    assert third["changed"] is True
    listed = (await alice.ok("projects", "list", "-o", "json")).json()
    assert [v["project"]["name"] for v in listed] == ["api", "web"]
    assert "web" in (await alice.ok("projects", "list")).out


async def test_if_match(alice: Cli) -> None:
    await alice.ok("deploy", "shop", "--image", IMAGE)
    generation = (await alice.ok("status", "shop", "-o", "json")).json()["project"]["generation"]
    stale = await alice("stop", "shop", "--if-match", str(generation + 5))
    assert stale.code == 1
    assert f"generation {generation}" in stale.failure_line
    assert "nothing was changed" in stale.failure_line
    assert "desired stopped" in (await alice.ok("stop", "shop", "--if-match", str(generation))).out


async def test_empty_views(alice: Cli) -> None:
    assert "no projects yet" in (await alice.ok("status")).out
    assert (await alice.ok("status", "-o", "json")).json() == []
    await alice.ok("projects", "create", "bare")
    assert "has no deployments" in (await alice.ok("deployments", "bare")).out
    assert (await alice.ok("deployments", "bare", "-o", "json")).json() == []


# Isolation between owners


async def test_another_owners_project_is_not_found(alice: Cli, bob: Cli, admin: Cli) -> None:
    await alice.ok("deploy", "shop", "--image", IMAGE)
    for argv in (("status", "shop"), ("start", "shop"), ("events", "shop"), ("destroy", "shop")):
        hidden = await bob(*argv)
        assert hidden.code == 1, argv
        assert "no project named 'shop'" in hidden.failure_line, argv
    # deploy creates a missing project, but this name is someone else's: refused, not taken over.
    taken = await bob("deploy", "shop", "--image", IMAGE)
    assert taken.code == 1
    assert "taken" in taken.failure_line
    assert (await bob.ok("status", "-o", "json")).json() == []
    everyone = (await admin.ok("status", "-o", "json")).json()
    assert [(v["project"]["name"], v["project"]["owner"]) for v in everyone] == [("shop", "alice")]


# Failures: one line, what went wrong and what to do


async def test_connection_refused_names_the_url_and_how_to_start(alice: Cli) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for argv in (("status",), ("start", "shop"), ("deploy", "shop", "--image", IMAGE)):
        refused = await alice.as_(TETHER_URL=url)(*argv)
        assert refused.code == 1
        assert url in refused.failure_line
        assert "refused" in refused.failure_line
        assert "`tether up`" in refused.failure_line
        assert "`tether api`" in refused.failure_line


async def test_bad_token_says_how_to_log_in(alice: Cli) -> None:
    denied = await alice.as_(TETHER_TOKEN="tth_not-a-token")("status")
    assert denied.code == 1
    assert "`tether login" in denied.failure_line
    assert "`tether token create" in denied.failure_line


async def test_no_token_says_how_to_log_in(nobody: Cli, api_url: str) -> None:
    missing = await nobody.as_(TETHER_URL=api_url)("projects", "list")
    assert missing.code == 1
    assert "no API token" in missing.failure_line
    assert "`tether login" in missing.failure_line


async def test_database_down_is_503_and_says_so(nobody: Cli, no_database_api_url: str) -> None:
    down = await nobody.as_(TETHER_URL=no_database_api_url, TETHER_TOKEN="tth_any")("status")
    assert down.code == 1
    assert "answered 503: the database is unreachable" in down.failure_line
    assert no_database_api_url in down.failure_line


async def test_timeout_names_the_url(nobody: Cli, silent_url: str) -> None:
    slow = await nobody.as_(TETHER_URL=silent_url, TETHER_TOKEN="tth_x", TETHER_TIMEOUT="0.3")(
        "status"
    )
    assert slow.code == 1
    assert silent_url in slow.failure_line
    assert "did not answer within 0.3 s" in slow.failure_line


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (("deploy", "shop", "--image", IMAGE, "--env", "FOO"), "'FOO' is not KEY=VALUE"),
        (("deploy", "shop", "--image", IMAGE, "--env", "=x"), "is not KEY=VALUE"),
        (("deploy", "shop", "--image", IMAGE, "--health-tcp"), "give --port too"),
        (
            ("deploy", "shop", "--image", IMAGE, "-p", "1", "--health-tcp", "--health-path", "/"),
            "not both",
        ),
        (("deploy", "shop", "--image", IMAGE, "--port", "70000"), "--port"),
        (("deploy", "shop"), "--image"),
        (("rollback", "shop", "--to", "vx"), "'vx' is not a deployment version"),
        (("rollback", "shop", "--to", "v0"), "is not a deployment version"),
        (("status", "Shop"), "'Shop' is not a project name"),
        (("start", "shop", "--if-match", "x"), "--if-match"),
        (("status", "-o", "yaml"), "--output"),
        (("token", "create", "--owner", "Not Valid"), "is not an owner name"),
        (("frobnicate",), "No such command"),
    ],
)
async def test_bad_arguments_exit_2(nobody: Cli, argv: tuple[str, ...], fragment: str) -> None:
    # The URL would refuse the connection: a usage error must be found before any request.
    bad = await nobody.as_(TETHER_URL=f"http://127.0.0.1:{free_port()}", TETHER_TOKEN="x")(*argv)
    assert bad.code == 2, bad
    assert fragment in bad.failure_line
    assert "--help`" in bad.failure_line


async def test_bad_url_exits_2(nobody: Cli) -> None:
    bad = await nobody.as_(TETHER_URL="localhost:8321", TETHER_TOKEN="x")("status")
    assert bad.code == 2
    assert "TETHER_URL must be an http:// or https:// URL" in bad.failure_line


async def test_help(nobody: Cli) -> None:
    bare = await nobody()
    assert bare.code == 2
    assert "deploy" in bare.out
    assert "status" in bare.out
    assert (await nobody.ok("--help")).out.count("Usage") == 1
    assert "--health-path" in (await nobody.ok("deploy", "--help")).out
    assert (await nobody("projects")).code == 2


# Login and the config file


async def test_login_saves_a_private_config(
    nobody: Cli, api_url: str, tokens: Any, config_file: Path
) -> None:
    logged_in = await nobody.ok("login", "--url", api_url + "/", "--token", tokens.alice)
    assert api_url in logged_in.out
    assert str(config_file) in logged_in.out
    assert permissions(config_file) == 0o600
    assert saved(config_file) == {"url": api_url, "token": tokens.alice}

    # The saved login is used without any TETHER_URL / TETHER_TOKEN.
    await nobody.ok("projects", "create", "shop")
    assert "shop" in (await nobody.ok("projects", "list")).out

    # A token the API refuses is not saved.
    refused = await nobody("login", "--url", api_url, "--token", "tth_wrong")
    assert refused.code == 1
    assert "`tether login" in refused.failure_line
    assert saved(config_file)["token"] == tokens.alice

    # The environment overrides the file.
    overridden = await nobody.as_(TETHER_TOKEN="tth_wrong")("status")
    assert overridden.code == 1
    assert "refused the token" in overridden.failure_line
    bob = await nobody.as_(TETHER_TOKEN=tokens.bob).ok("status", "-o", "json")
    assert bob.json() == []

    # Login again keeps the saved URL when none is given.
    again = await nobody.ok("login", "--token", tokens.bob)
    assert api_url in again.out
    assert saved(config_file) == {"url": api_url, "token": tokens.bob}


async def test_login_without_a_token_off_a_terminal_exits_2(nobody: Cli, api_url: str) -> None:
    asked = await nobody("login", "--url", api_url)
    assert asked.code == 2
    assert "--token" in asked.failure_line


async def test_a_broken_config_file_is_named_and_login_repairs_it(
    nobody: Cli, api_url: str, tokens: Any, config_file: Path
) -> None:
    write(config_file, "{not json")
    broken = await nobody("status")
    assert broken.code == 1
    assert str(config_file) in broken.failure_line
    assert "tether login" in broken.failure_line
    await nobody.ok("login", "--url", api_url, "--token", tokens.alice)
    await nobody.ok("status")


# Server commands against a database


async def test_migrate(nobody: Cli, new_database: Callable[[], Awaitable[str]]) -> None:
    dsn = await new_database()
    server = nobody.as_(TETHER_DATABASE_URL=dsn)
    applied = await server.ok("migrate")
    assert "applied migration 0001_initial" in applied.out
    password = dsn.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    assert f":{password}@" not in applied.out
    assert ":***@" in applied.out
    again = await server.ok("migrate")
    assert "nothing to apply" in again.out
    assert "applied migration" not in again.out


async def test_migrate_without_a_database_says_how_to_get_one(nobody: Cli) -> None:
    dsn = f"postgresql://tether:secret@127.0.0.1:{free_port()}/tether"
    down = await nobody.as_(TETHER_DATABASE_URL=dsn)("migrate")
    assert down.code == 1
    assert "cannot connect to Postgres" in down.failure_line
    assert "`tether up`" in down.failure_line
    assert "secret" not in down.failure_line


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("TETHER_DATABASE_URL", "mysql://db", "postgresql://"),
        ("TETHER_API_PORT", "http", "a whole number from 1 to 65535"),
        ("TETHER_PORT_RANGE", "1-2", "FIRST-LAST"),
        ("TETHER_LOG_LEVEL", "loud", "debug, info, warning or error"),
    ],
)
async def test_invalid_settings_name_the_variable(
    nobody: Cli, variable: str, value: str, fragment: str
) -> None:
    bad = await nobody.as_(**{variable: value})("migrate")
    assert bad.code == 2
    assert f"{variable}={value!r} is invalid" in bad.failure_line
    assert fragment in bad.failure_line


async def test_token_create(nobody: Cli, database_url: str, api_url: str, alice: Cli) -> None:
    await alice.ok("projects", "create", "shop")
    server = nobody.as_(TETHER_DATABASE_URL=database_url)
    created = await server.ok("token", "create", "--owner", "carol")
    token = created.out.strip()
    assert created.out == token + "\n"
    assert token.startswith("tth_")
    assert "shown only once" in created.err
    carol = nobody.as_(TETHER_URL=api_url, TETHER_TOKEN=token)
    assert (await carol.ok("status", "-o", "json")).json() == []

    root = (await server.ok("token", "create", "--owner", "root", "--admin")).out.strip()
    everyone = await nobody.as_(TETHER_URL=api_url, TETHER_TOKEN=root).ok("status", "-o", "json")
    assert [v["project"]["name"] for v in everyone.json()] == ["shop"]


async def test_token_create_on_an_unmigrated_database_says_migrate(
    nobody: Cli, new_database: Callable[[], Awaitable[str]]
) -> None:
    empty = nobody.as_(TETHER_DATABASE_URL=await new_database())
    refused = await empty("token", "create", "--owner", "carol")
    assert refused.code == 1
    assert "`tether migrate`" in refused.failure_line


@pytest.mark.parametrize(
    ("volume", "fragment"),
    [
        ("data", "is not NAME:PATH[:ro]"),
        ("data:/x:rx", "is not NAME:PATH[:ro]"),
        ("/srv/data:/data", "never a host path"),
        ("./data:/data", "never a host path"),
        ("Data:/data", "volume name 'Data' is invalid"),
        ("data:relative", "give an absolute path"),
        ("data:/a/../b", "give an absolute path"),
    ],
)
async def test_bad_volumes_exit_2_naming_the_option(
    nobody: Cli, volume: str, fragment: str
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    bad = await nobody.as_(TETHER_URL=url, TETHER_TOKEN="x")(
        "deploy", "shop", "--image", IMAGE, "--volume", volume
    )
    assert bad.code == 2, bad
    assert fragment in bad.failure
    assert "'--volume'" in bad.failure


async def test_volumes_deploy_list_and_destroy_with_or_without_them(alice: Cli) -> None:
    deployed = await alice.ok(
        "deploy",
        "shop",
        "--image",
        IMAGE,
        "-v",
        "data:/var/lib/app",
        "-v",
        "conf:/etc/app:ro",
        "-o",
        "json",
    )
    deployment = deployed.json()["deployment"]
    assert deployment["volumes"] == [
        {"name": "data", "path": "/var/lib/app", "read_only": False},
        {"name": "conf", "path": "/etc/app", "read_only": True},
    ]
    assert deployment["strategy"] == "stop-first"  # a writable volume, no --strategy given
    chosen = await alice.ok(
        "deploy",
        "shop",
        "--image",
        IMAGE,
        "-v",
        "data:/d",
        "--strategy",
        "start-first",
        "-o",
        "json",
    )
    assert chosen.json()["deployment"]["strategy"] == "start-first"
    twice = await alice("deploy", "shop", "--image", IMAGE, "-v", "a:/d", "-v", "b:/d")
    assert twice.code == 2
    assert "volume path '/d' is given more than once" in twice.failure
    # Nothing observed yet (no operator runs here): said, not an empty table.
    assert "has no volumes yet" in (await alice.ok("volumes", "shop")).out
    assert (await alice.ok("volumes", "shop", "-o", "json")).json() == []

    kept = await alice.ok("destroy", "shop")
    assert "its volumes are kept" in kept.out
    removed = await alice.ok("destroy", "shop", "--delete-volumes")
    assert "then its volumes are removed" in removed.out
    status = (await alice.ok("status", "shop", "-o", "json")).json()["project"]
    assert status["deletion_requested"]
    assert status["delete_volumes"]
    assert "already requested" in (await alice.ok("destroy", "shop", "--delete-volumes")).out


# Webhooks


async def test_webhook_commands(alice: Cli, bob: Cli, admin: Cli, store: Store) -> None:
    added = await alice.ok(
        "webhook", "add", "https://hooks.example.com/in?token=t0k", "--events", "stalled,converged"
    )
    [message, secret_line, _] = added.out.splitlines()
    assert message.startswith("webhook 1 added for stalled, converged of alice's projects")
    secret = secret_line.removeprefix("secret: ")
    assert secret.startswith("whsec_")

    listed = await alice.ok("webhook", "list")
    assert "https://hooks.example.com/in?token=****" in listed.out
    assert secret not in listed.out
    assert "t0k" not in listed.out
    assert (await bob.ok("webhook", "list", "-o", "json")).json() == []
    assert [h["id"] for h in (await admin.ok("webhook", "list", "-o", "json")).json()] == [1]

    await store.create_project("shop", ALICE)
    assert "has no deliveries yet" in (await alice.ok("webhook", "deliveries", "1")).out
    ready = NewEvent(EventKind.CONVERGED, "Ready", "v1 is ready")
    await store.write_status(Status(project="shop", phase="Running"), [ready], actor="operator")
    [line] = (await alice.ok("webhook", "deliveries", "1")).out.splitlines()
    assert line.startswith("msg_1  shop  converged  pending, 0 attempt(s), next attempt 20")
    hidden = await bob("webhook", "deliveries", "1")
    assert "no webhook 1" in hidden.failure
    assert "tether webhook list" in hidden.failure

    removed = await alice.ok("webhook", "remove", "1")
    assert "webhook 1 removed" in removed.out
    again = await alice("webhook", "remove", "1")
    assert "no webhook 1" in again.failure


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (("https://h.example.com/", "--events", "deployed"), "unknown event 'deployed': choose"),
        (("https://h.example.com/", "--events", ","), "no event named"),
        (("ftp://h.example.com/", "--events", "stalled"), "not an http:// or https:// URL"),
        (("https://u:p@h.example.com/", "--events", "stalled"), "carries credentials"),
    ],
)
async def test_webhook_add_refuses_bad_input_saying_what_to_do(
    alice: Cli, argv: tuple[str, ...], says: str
) -> None:
    refused = await alice("webhook", "add", *argv)
    assert says in refused.failure
    assert (await alice.ok("webhook", "list", "-o", "json")).json() == []
