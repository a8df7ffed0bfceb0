"""The web console in a real browser: Debian's headless chromium driven by Playwright, against the
API (uvicorn) and an operator on a real Postgres and the real Docker engine, with the `tether` CLI
run in-process beside it, as a person would use both.

Proves issue 13: the seed story across both clients, owner isolation, a forged cross-site POST
refused, the live marker across a lost connection, a `docker kill` shown live with its repair;
and takes the screenshots in docs/console/ that docs/console.md shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiodocker
import pytest
import uvicorn
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect
from starlette.types import ASGIApp, Receive, Scope, Send
from support import Operators, remove_containers, serving, wait_for

from tether.api.app import create_app
from tether.api.models import DeploymentSpec, Principal
from tether.api.settings import Settings
from tether.api.store import Store
from tether.cli.main import run
from tether.cli.server import bind
from tether.operator.engine.docker.driver import DockerDriver
from tether.operator.engine.docker.logs import ContainerLogs
from tether.operator.labels import LABEL_INSTALLATION, LABEL_PROJECT

pytestmark = pytest.mark.docker

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WORKLOAD = "tether-test/workload:latest"
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"
WIDE = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
UI_S = 20_000  # ms: how long the page may take to show what the API says

expect.set_options(timeout=UI_S)

ALICE = Principal(owner="alice")
BOB = Principal(owner="bob")


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run `make provision` (it installs Debian's chromium)")
    profile = tempfile.mkdtemp(prefix="tether-chromium-")
    try:
        async with async_playwright() as pw:
            # A persistent context would pin one profile; launch() gives each run a fresh one,
            # made under `profile` (TMPDIR) and removed with it.
            os.environ["TMPDIR"] = profile
            launched = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                yield launched
            finally:
                await launched.close()
    finally:
        os.environ.pop("TMPDIR", None)
        shutil.rmtree(profile, ignore_errors=True)


@dataclass
class Console:
    """One person's browser on the console: its page and every URL it asked for."""

    url: str
    context: BrowserContext
    page: Page
    requested: list[str]

    async def sign_in(self, token: str) -> None:
        await self.page.goto(self.url + "/")
        await self.page.get_by_label("API token").fill(token)
        await self.page.get_by_role("button", name="Sign in").click()
        await expect(self.page.get_by_role("heading", name="Projects")).to_be_visible()

    def row(self, name: str, column: str) -> Any:
        return self.page.locator(f'tr[data-project="{name}"] [data-col="{column}"]')

    def offsite(self) -> list[str]:
        return [u for u in self.requested if not u.startswith((self.url, "data:"))]


@contextlib.asynccontextmanager
async def console_for(browser: Browser, url: str, viewport: Mapping[str, int] = WIDE) -> Any:
    context = await browser.new_context(viewport=dict(viewport))  # type: ignore[arg-type]
    context.set_default_timeout(UI_S)
    page = await context.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    try:
        yield Console(url, context, page, requested)
    finally:
        await context.close()


class Cli:
    """`tether ...` in-process (in a thread: the API runs on this test's event loop)."""

    def __init__(self, capsys: pytest.CaptureFixture[str], env: Mapping[str, str]) -> None:
        self._capsys = capsys
        self._env = dict(env)

    async def ok(self, *argv: str) -> str:
        self._capsys.readouterr()
        code = await asyncio.to_thread(run, list(argv), self._env)
        out, err = self._capsys.readouterr()
        assert code == 0, (argv, code, out, err)
        assert not re.search(r"\b409\b", out + err)
        return out


@dataclass
class Stack:
    url: str
    cli: Cli
    docker: aiodocker.Docker
    settings: Settings


@pytest.fixture
async def stack(
    store: Store,
    settings: Settings,
    database_url: str,
    tokens: Any,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> AsyncIterator[Stack]:
    """The API (with Docker access, for logs) and an operator, on this test's database."""
    log_source = ContainerLogs(DockerDriver(settings.docker_url, settings.installation_id))
    app = create_app(store, log_source=log_source)
    operators = Operators()
    operator_store = await Store.connect(database_url, settings.ports)
    docker = aiodocker.Docker()
    try:
        operators.start(settings, operator_store)
        async with serving(app) as url:
            env = {
                "TETHER_CONFIG": str(tmp_path / "config.json"),
                "TETHER_URL": url,
                "TETHER_TOKEN": tokens.alice,
            }
            try:
                yield Stack(url, Cli(capsys, env), docker, settings)
            finally:
                app.state.watches.shutdown()
    finally:
        await operators.stop()
        await operator_store.close()
        await log_source.close()
        try:
            await remove_containers(docker, settings.installation_id)
        finally:
            await docker.close()


async def record_verdicts(page: Page) -> None:
    """Keep every verdict the project page shows, however briefly (read by `verdicts`)."""
    await page.evaluate(
        """() => {
            window.seenVerdicts = [];
            const el = document.getElementById("verdict");
            new MutationObserver(() => window.seenVerdicts.push(el.dataset.verdict))
                .observe(el, {attributes: true, childList: true, subtree: true});
        }"""
    )


async def verdicts(page: Page) -> list[str]:
    seen: list[str] = await page.evaluate("() => window.seenVerdicts")
    return seen


async def test_seed_story_across_cli_and_console_and_a_docker_kill(
    stack: Stack, browser: Browser, tokens: Any
) -> None:
    cli = stack.cli
    async with console_for(browser, stack.url) as console:
        page = console.page
        await console.sign_in(tokens.alice)
        await expect(page.locator("#live")).to_have_attribute("data-state", "live")

        # Deployed from the CLI: the open projects page shows it Ready, without a reload.
        await cli.ok(
            "deploy", "shop", "--image", WORKLOAD, "--port", "8080", "--health-path", "/healthz"
        )
        await expect(console.row("shop", "ready")).to_have_text("yes")
        await expect(console.row("shop", "desired")).to_have_text("running")
        await expect(console.row("shop", "deployment")).to_have_text("v1")
        await expect(console.row("shop", "endpoint")).to_have_text(re.compile(r"127\.0\.0\.1:\d+"))
        await expect(console.row("shop", "age")).to_have_text(re.compile(r"\d+ s ago"))
        await page.screenshot(path=str(SHOTS / "projects.png"))

        # The project page: stop in the console; the CLI says stopped.
        await page.get_by_role("link", name="shop", exact=True).click()
        verdict = page.locator("#verdict")
        await expect(verdict).to_have_attribute("data-verdict", "ready")
        await page.get_by_role("button", name="Stop", exact=True).click()
        await expect(page.locator("#outcome [data-outcome]")).to_have_text(
            re.compile(r"^desired stopped.*: stopped as desired$")
        )
        await expect(verdict).to_have_attribute("data-verdict", "stopped")
        status = await cli.ok("status")
        assert re.search(r"^shop\s+stopped\s+Stopped\s", status, re.MULTILINE), status

        # Started from the CLI: the page shows it converging, then Ready.
        await record_verdicts(page)
        await cli.ok("start", "shop")
        await expect(verdict).to_have_attribute("data-verdict", "ready")
        seen = await verdicts(page)
        assert "converging" in seen, seen
        assert seen[-1] == "ready", seen

        # A second Start: a desire already met, said so, and no error.
        await page.get_by_role("button", name="Start", exact=True).click()
        await expect(page.locator('#outcome [data-outcome="unchanged"]')).to_have_text(
            "already desired running; tether is keeping it running"
        )
        await expect(page.locator("#refusal")).to_be_empty()
        await expect(page.locator('[data-field="endpoint"] a')).to_have_text(
            re.compile(r"127\.0\.0\.1:\d+")
        )
        await expect(page.locator('#conditions [data-condition="Ready"] td').first).to_have_text(
            "True"
        )
        await expect(page.locator('#deployments [data-version="1"] th')).to_contain_text("target")
        await page.get_by_label("Follow").check()
        await expect(page.locator("#logs")).to_contain_text("── ")
        await page.screenshot(path=str(SHOTS / "project.png"), full_page=True)

        # docker kill, outside tether: the open page shows the crash, then the repair.
        listed = await stack.docker.containers.list(
            filters={
                "label": [
                    f"{LABEL_INSTALLATION}={stack.settings.installation_id}",
                    f"{LABEL_PROJECT}=shop",
                ]
            }
        )
        assert len(listed) == 1, listed
        await listed[0].kill()
        crashes = page.locator('[data-field="crashes"]')
        await expect(crashes).to_have_text(re.compile(r"^1, last exit code \d+, \d+ s ago$"))
        await expect(verdict).to_have_attribute("data-verdict", "ready")
        await expect(page.locator('[data-field="ready"]')).to_have_text("yes")
        crash = page.locator("#events li", has_text=re.compile(r"exited with code \d+; restarting"))
        await expect(crash).to_have_count(1)
        await expect(crash).to_contain_text(re.compile(r"\d+ s ago · start v1 · action"))

        # Restart of a project with no deployment: refused, with what to run first.
        await page.get_by_role("link", name="Projects").first.click()
        await page.get_by_label("New project").fill("empty")
        await page.get_by_role("button", name="Create").click()
        await expect(page.get_by_role("heading", name=re.compile("empty"))).to_be_visible()
        await page.get_by_role("button", name="Restart").click()
        refusal = page.locator("#refusal")
        await expect(refusal).to_contain_text("no deployment")
        await expect(refusal).to_contain_text("Hint: run `tether deploy empty --image IMAGE` first")
        await expect(page.locator('#outcome [data-outcome="ready"]')).to_have_count(0)

        # Readable on a phone: nothing wider than the screen.
        await page.set_viewport_size(PHONE)
        await page.get_by_role("link", name="Projects").first.click()
        await page.get_by_role("link", name="shop", exact=True).click()
        await expect(verdict).to_have_attribute("data-verdict", "ready")
        width = await page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= PHONE["width"], width
        await page.screenshot(path=str(SHOTS / "project-phone.png"))

        # Destroy asks first; then the project is gone.
        await page.get_by_role("button", name="Destroy…").click()
        await page.get_by_role("button", name="Destroy shop").click()
        await expect(verdict).to_have_attribute("data-verdict", "deleted")
        await expect(page.locator("#outcome [data-outcome]")).to_have_text(
            re.compile(r"^deletion requested.*: shop is gone$")
        )
        assert console.offsite() == []


class Recorder:
    """ASGI middleware keeping (method, path, status) of every answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.answers: list[tuple[str, str, int]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def recording(message: Any) -> None:
            if message["type"] == "http.response.start":
                self.answers.append((scope["method"], scope["path"], message["status"]))
            await send(message)

        await self.app(scope, receive, recording if scope["type"] == "http" else send)


async def test_owner_isolation_and_a_forged_cross_site_post(
    store: Store, browser: Browser, tokens: Any
) -> None:
    await store.create_project("shop", ALICE)
    await store.create_project("secret", BOB)
    spec = DeploymentSpec(image=WORKLOAD)
    await store.deploy("shop", spec, ALICE, start=False)
    before = await store.get_project("shop", ALICE)
    app = Recorder(create_app(store))
    async with serving(app) as url, console_for(browser, url) as console:
        page = console.page
        await console.sign_in(tokens.alice)
        await expect(console.row("shop", "desired")).to_have_text("stopped")
        await expect(page.locator("#projects-summary")).to_have_text("1 project, 0 ready")
        await expect(page.locator('tr[data-project="secret"]')).to_have_count(0)

        # Bob's project, by its URL: not found, as the API says.
        answer = await page.goto(url + "/projects/secret")
        assert answer is not None
        assert answer.status == 404
        await expect(page.get_by_role("heading", name="Not found")).to_be_visible()
        await expect(page.locator(".problem")).to_contain_text("no project named 'secret'")

        # The cookie: HttpOnly, SameSite=Strict, expiring; no script can read it.
        (cookie,) = await console.context.cookies()
        assert cookie["httpOnly"]
        assert cookie["sameSite"] == "Strict"
        assert cookie["expires"] > 0
        assert await page.evaluate("() => document.cookie") == ""

        # A page on another origin of the same site (the browser sends the cookie along) posts
        # a form and a no-cors fetch at the API: refused, nothing changed.
        attacker = forged_page(url)
        async with serving(attacker) as evil:
            await page.goto(evil + "/")
            await expect(page.locator("body")).to_contain_text("csrf_refused")
        forged = [a for a in app.answers if a[0] == "POST" and a[1].startswith("/v1/")]
        assert sorted(forged) == [
            ("POST", "/v1/projects", 403),
            ("POST", "/v1/projects/shop/start", 403),
        ], app.answers
        after = await store.get_project("shop", ALICE)
        assert after.project == before.project
        assert [v.project.name for v in await store.list_projects(ALICE)] == ["shop"]

        # Signed out: the session is over, for the page and for its cookie.
        await page.goto(url + "/")
        await page.get_by_role("button", name="Sign out").click()
        await expect(page.get_by_label("API token")).to_be_visible()
        assert await console.context.cookies() == []
        assert len(app.app.state.console_sessions) == 0  # type: ignore[attr-defined]


def forged_page(target: str) -> ASGIApp:
    """Another site's page: on load, a no-cors fetch and a form POST to the console's API."""
    html = f"""<!doctype html><html><body>
<form id="f" method="post" action="{target}/v1/projects/shop/start">
<input name="x" value="1"></form>
<script>
fetch("{target}/v1/projects", {{method: "POST", mode: "no-cors", credentials: "include",
  headers: {{"Content-Type": "text/plain"}}, body: '{{"name": "forged"}}'}})
  .finally(() => document.getElementById("f").submit());
</script></body></html>""".encode()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/html")],
            }
        )
        await send({"type": "http.response.body", "body": html})

    return app


@contextlib.asynccontextmanager
async def served_on(app: ASGIApp, port: int) -> AsyncIterator[None]:
    """`app` on this port until the block ends; open streams are cut at once then."""
    sock = bind("127.0.0.1", port)
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="critical", lifespan="off", timeout_graceful_shutdown=0.2)
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))

    async def started() -> bool:
        return server.started

    try:
        await wait_for(started, "uvicorn to start", within_s=10)
        yield
    finally:
        server.should_exit = True
        await task
        sock.close()


async def test_projects_page_marks_a_lost_connection_and_catches_up(
    store: Store, browser: Browser, tokens: Any
) -> None:
    app = create_app(store)
    with bind("127.0.0.1", 0) as probe:
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    async with console_for(browser, url) as console:
        async with served_on(app, port):
            await console.sign_in(tokens.alice)
            await expect(console.page.locator("#live")).to_have_text("Live")
        marker = console.page.locator("#live")
        await expect(marker).to_have_attribute("data-state", "reconnecting")
        await expect(marker).to_have_text("Connection lost: reconnecting…")
        await store.create_project("while-away", ALICE)  # notified while nobody listened
        async with served_on(app, port):
            await expect(marker).to_have_attribute("data-state", "live")
            await expect(console.row("while-away", "name")).to_have_text("while-away")
            app.state.watches.shutdown()


@pytest.fixture(autouse=True, scope="module")
def screenshots_folder() -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
