"""Named volumes against a real Docker engine, Postgres and HAProxy: data a deployment writes is
read by the next, and survives every replacement, restart, rollback, crash loop and outside
removal of the container; destroy keeps the volumes unless asked, and then removes exactly that
project's.

Each deployment's command appends its RELEASE to /data/log at every start and serves a copy of
it at /log on the project's endpoint: the log is what the volume holds, as the user's own
workload reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiodocker
import httpx
import pytest
from faultproxy import (
    VOLUME_CREATE,
    VOLUME_REMOVE,
    Drop,
    FaultProxy,
    Respond,
    server_error,
)
from scenarios.harness import PrivateEngine
from support import Operators, project_containers, remove_containers, serving, wait_for

from tether.api.app import create_app
from tether.api.models import (
    ConditionType,
    DeploymentSpec,
    DesiredSnapshot,
    DesiredState,
    HttpCheck,
    Principal,
    VolumeMount,
)
from tether.api.settings import Settings
from tether.api.store import Store
from tether.operator.desired import Volume, volume_name
from tether.operator.engine.docker.archive import DockerArchives
from tether.operator.engine.docker.driver import DockerDriver
from tether.operator.labels import LABEL_INSTALLATION, LABEL_VERSION

pytestmark = pytest.mark.docker

ALICE = Principal(owner="alice")
HEALTHY = DeploymentSpec(
    image="tether-test/workload:latest",
    port=8080,
    health=HttpCheck(type="http", path="/healthz"),
    ready_deadline_s=30,
    stop_grace_s=2,
)

DATA = VolumeMount(name="data", path="/data")
APPEND = "echo $RELEASE >> /data/log && cp /data/log /www/log && exec serve"


def release(n: str, **changes: Any) -> DeploymentSpec:
    """A deployment as a client sends it: validated, so that its volumes choose its strategy
    unless it sets one."""
    spec = {
        "image": HEALTHY.image,
        "port": 8080,
        "health": {"type": "http", "path": "/healthz"},
        "ready_deadline_s": 30,
        "stop_grace_s": 2,
        "command": ["sh", "-c", APPEND],
        "env": {"RELEASE": n},
        "volumes": [DATA.model_dump()],
    }
    return DeploymentSpec.model_validate(spec | changes)


async def docker_volumes(docker: aiodocker.Docker) -> set[str]:
    """Every tether volume on the engine, of any installation: what a test must leave as it was
    but for what it asked to remove. (Other tests on this engine make anonymous volumes at any
    time, e.g. Postgres containers': they are not in the comparison.)"""
    listed = await docker.volumes.list(filters={"label": [LABEL_INSTALLATION]})
    return {v["Name"] for v in listed.get("Volumes") or []}


async def remove_volumes(docker: aiodocker.Docker, installation: str) -> None:
    listed = await docker.volumes.list(filters={"label": [f"{LABEL_INSTALLATION}={installation}"]})
    for volume in listed.get("Volumes") or []:
        await docker._query_json(f"volumes/{volume['Name']}", method="DELETE")


@pytest.fixture
async def docker_api(settings: Settings) -> AsyncIterator[aiodocker.Docker]:
    """Docker as an outside actor sees it. Afterwards the test's containers, then the test's
    volumes (which tether itself never removes unless asked) go."""
    docker = aiodocker.Docker()
    yield docker
    await remove_containers(docker, settings.installation_id)
    await remove_volumes(docker, settings.installation_id)
    await docker.close()


@pytest.fixture
async def operator(
    settings: Settings, store: Store, docker_api: aiodocker.Docker
) -> AsyncIterator[None]:
    """An operator of the test's installation, stopped before `docker_api` cleans up."""
    operators = Operators()
    operators.start(settings, store)
    yield
    await operators.stop()


async def snapshot(store: Store, name: str) -> DesiredSnapshot:
    found = await store.desired(name)
    assert found is not None
    return found


async def converged(store: Store, name: str, *, ready: bool = False) -> DesiredSnapshot | None:
    """The snapshot once the operator is done with the current generation (and Ready)."""
    snap = await snapshot(store, name)
    status = snap.status
    if status is None or status.observed_generation != snap.project.generation:
        return None
    reconciling = status.condition(ConditionType.RECONCILING)
    is_ready = status.condition(ConditionType.READY)
    if reconciling is None or reconciling.status != "False":
        return None
    return snap if not ready or (is_ready and is_ready.status == "True") else None


async def ready(store: Store, name: str) -> DesiredSnapshot | None:
    return await converged(store, name, ready=True)


async def served_log(snap: DesiredSnapshot) -> list[str]:
    async with httpx.AsyncClient() as http:
        answer = await http.get(f"http://127.0.0.1:{snap.project.host_port}/log", timeout=5)
    answer.raise_for_status()
    return answer.text.split()


async def ready_at(store: Store, version: int, what: str, *, name: str = "shop") -> DesiredSnapshot:
    async def running() -> DesiredSnapshot | None:
        snap = await ready(store, name)
        return snap if snap and snap.status and snap.status.running_version == version else None

    return await wait_for(running, what)


async def v1_ready(store: Store) -> DesiredSnapshot:
    """Project shop, deployed with its volume, once v1 is Ready."""
    await store.create_project("shop", ALICE)
    await store.deploy("shop", release("1"), ALICE)
    return await ready_at(store, 1, "v1 Ready")


async def test_data_written_by_v1_is_read_by_v2_then_kept_through_restart_and_rollback(
    operator: None, store: Store, docker_api: aiodocker.Docker, settings: Settings
) -> None:
    first = await v1_ready(store)
    assert await served_log(first) == ["1"]
    [container] = await project_containers(docker_api, settings.installation_id, "shop")
    [mount] = container["Mounts"]
    assert (mount["Type"], mount["Name"], mount["Destination"], mount["RW"]) == (
        "volume",
        volume_name(settings.installation_id, "shop", "data"),
        "/data",
        True,
    )

    _, v2 = await store.deploy("shop", release("2"), ALICE)
    assert v2.strategy == "stop-first"  # a writable volume: one writer at a time
    assert await served_log(await ready_at(store, 2, "v2 Ready")) == ["1", "2"]

    await store.restart("shop", ALICE)
    restarted = await wait_for(
        lambda: _after(store, lambda s: s.project.restart_token == 1), "restarted"
    )
    assert await served_log(restarted) == ["1", "2", "2"]

    await store.rollback("shop", ALICE)
    assert await served_log(await ready_at(store, 1, "back on v1")) == ["1", "2", "2", "1"]
    volumes = await store.volumes("shop", ALICE)
    assert [(v.name, v.in_target) for v in volumes] == [("data", True)]
    assert volumes[0].mounted_by == [
        c["Name"].lstrip("/")
        for c in await project_containers(docker_api, settings.installation_id, "shop")
    ]


async def _after(store: Store, check: Any) -> DesiredSnapshot | None:
    snap = await ready(store, "shop")
    return snap if snap and check(snap) else None


async def test_data_survives_a_crash_loop_and_a_failed_rollout(
    operator: None, store: Store
) -> None:
    await v1_ready(store)
    crashing = release(
        "2",
        command=["sh", "-c", "echo crash >> /data/log; exit 3"],
        ready_deadline_s=4,
    )
    await store.deploy("shop", crashing, ALICE)

    async def rolled_back() -> DesiredSnapshot | None:
        snap = await ready(store, "shop")
        return snap if snap and snap.status and snap.status.failed_version == 2 else None

    snap = await wait_for(rolled_back, "v1 back after v2's crash loop")
    log = await served_log(snap)
    # v1's data as v1 wrote it, what v2 itself wrote while it crashed, and v1's start again.
    assert log[0] == "1"
    assert log[-1] == "1"
    assert set(log[1:-1]) == {"crash"}
    assert len(log) >= 4  # it crashed at least twice


async def test_data_survives_docker_rm_f_of_the_container(
    operator: None, store: Store, docker_api: aiodocker.Docker
) -> None:
    first = await v1_ready(store)
    assert first.status is not None
    await docker_api.containers.container(first.status.container_id).delete(force=True)

    async def replaced() -> DesiredSnapshot | None:
        snap = await ready(store, "shop")
        fresh = snap and snap.status and snap.status.container_id != first.status.container_id
        return snap if fresh else None

    assert await served_log(await wait_for(replaced, "a fresh container")) == ["1", "1"]


async def test_a_volume_dropped_from_the_spec_is_kept_unmounted(
    operator: None, store: Store, docker_api: aiodocker.Docker, settings: Settings
) -> None:
    await v1_ready(store)
    await store.deploy("shop", HEALTHY, ALICE)
    await ready_at(store, 2, "v2 Ready, without the volume")
    name = volume_name(settings.installation_id, "shop", "data")
    assert name in await docker_volumes(docker_api)

    async def unmounted() -> bool:
        volumes = await store.volumes("shop", ALICE)
        return [(v.name, v.in_target, v.mounted_by) for v in volumes] == [("data", False, [])]

    await wait_for(unmounted, "the volume listed as unmounted")
    await store.deploy("shop", release("3"), ALICE)
    assert await served_log(await ready_at(store, 3, "v3 Ready")) == ["1", "3"]


async def destroyed(store: Store, name: str) -> bool:
    return await store.desired(name) is None


async def test_destroy_keeps_the_volumes_and_delete_volumes_removes_exactly_the_projects(
    operator: None,
    store: Store,
    docker_api: aiodocker.Docker,
    settings: Settings,
) -> None:
    # Another installation's volume of a project of the same name, and another project's.
    other = DockerDriver(settings.docker_url, f"{settings.installation_id}x")
    theirs = Volume("data", volume_name(other.installation, "shop", "data"))
    try:
        await other.create_volume("shop", "alice", theirs)
        for name in ("shop", "mine"):
            await store.create_project(name, ALICE)
            await store.deploy(name, release("1"), ALICE)
        await ready_at(store, 1, "shop Ready")
        await wait_for(lambda: ready(store, "mine"), "mine Ready")
        before = await docker_volumes(docker_api)
        shop = volume_name(settings.installation_id, "shop", "data")
        mine = volume_name(settings.installation_id, "mine", "data")
        assert {shop, mine, theirs.docker_name} <= before

        answer = await store.destroy("mine", ALICE)
        assert "volumes are kept" in answer.message
        await wait_for(lambda: destroyed(store, "mine"), "mine destroyed")
        assert await docker_volumes(docker_api) == before

        # A project of the same name mounts the kept data again.
        await store.create_project("mine", ALICE)
        await store.deploy("mine", release("2"), ALICE)
        again = await wait_for(lambda: ready(store, "mine"), "mine Ready again")
        assert await served_log(again) == ["1", "2"]

        answer = await store.destroy("shop", ALICE, delete_volumes=True)
        assert "volumes are removed" in answer.message
        await wait_for(lambda: destroyed(store, "shop"), "shop destroyed")
        assert await docker_volumes(docker_api) == before - {shop}
    finally:
        await remove_volumes(docker_api, other.installation)
        await other.close()


async def test_a_stopped_project_keeps_its_volume_and_a_start_mounts_it_again(
    operator: None, store: Store
) -> None:
    await v1_ready(store)
    await store.set_desired_state("shop", DesiredState.STOPPED, ALICE)
    await wait_for(lambda: converged(store, "shop"), "stopped")
    await store.set_desired_state("shop", DesiredState.RUNNING, ALICE)
    assert await served_log(await ready_at(store, 1, "running again")) == ["1", "1"]


async def test_a_volume_of_another_owners_destroyed_project_is_not_mounted(
    operator: None, store: Store
) -> None:
    await v1_ready(store)
    await store.destroy("shop", ALICE)
    await wait_for(lambda: destroyed(store, "shop"), "shop destroyed")
    bob = ALICE.model_copy(update={"owner": "bob"})
    await store.create_project("shop", bob)
    await store.deploy("shop", release("2"), bob)

    async def stalled() -> DesiredSnapshot | None:
        snap = await snapshot(store, "shop")
        found = snap.status.condition(ConditionType.STALLED) if snap.status else None
        now = found is not None and found.observed_generation == snap.project.generation
        return snap if found and now and found.status == "True" else None

    snap = await wait_for(stalled, "refused: alice's data")
    assert snap.status is not None
    condition = snap.status.condition(ConditionType.STALLED)
    assert condition is not None
    assert "owned by 'alice'" in condition.message
    assert snap.status.container_id is None


@pytest.fixture
async def proxied(
    settings: Settings, store: Store, docker_api: aiodocker.Docker, docker_proxy: FaultProxy
) -> AsyncIterator[None]:
    """An operator talking to Docker through the lying proxy."""
    driver = DockerDriver(docker_proxy.url, settings.installation_id)
    operators = Operators()
    operators.start(settings, store, driver)
    yield
    await operators.stop()
    await driver.close()


async def test_volume_calls_failing_or_lying_converge_and_remove_nothing(
    proxied: None,
    store: Store,
    docker_api: aiodocker.Docker,
    docker_proxy: FaultProxy,
    settings: Settings,
) -> None:
    # Creates fail (5xx, each pass's three tries), then one is carried out but its answer lost.
    docker_proxy.inject(VOLUME_CREATE, server_error(500), times=4)
    docker_proxy.inject(VOLUME_CREATE, Drop(after_forward=True), times=1)
    first = await v1_ready(store)
    assert await served_log(first) == ["1"]
    creates = docker_proxy.calls_to(VOLUME_CREATE, project="shop")
    assert [c.fault for c in creates][:5] == ["respond 500"] * 4 + ["drop after forwarding"]
    shop = volume_name(settings.installation_id, "shop", "data")
    await store.create_project("other", ALICE)
    await store.deploy("other", release("1"), ALICE)
    await wait_for(lambda: ready(store, "other"), "other Ready")
    before = await docker_volumes(docker_api)
    assert {shop, volume_name(settings.installation_id, "other", "data")} <= before

    # Removes answered with errors and with the lie that the volume is in use.
    docker_proxy.inject(VOLUME_REMOVE, server_error(503), times=4)
    docker_proxy.inject(VOLUME_REMOVE, Respond(409, {"message": "volume is in use"}), times=2)
    assert not docker_proxy.calls_to(VOLUME_REMOVE), "a pass removed a volume"
    await store.destroy("shop", ALICE, delete_volumes=True)
    await wait_for(lambda: destroyed(store, "shop"), "shop destroyed", within_s=60)
    assert await docker_volumes(docker_api) == before - {shop}
    removes = docker_proxy.calls_to(VOLUME_REMOVE)
    assert {c.container for c in removes} == {shop}
    assert [c.status for c in removes][-1] in (200, 204)
    assert await served_log(await ready_at(store, 1, "other untouched", name="other")) == ["1"]


ARCHIVE_LIMIT = 2 * 1024 * 1024
# v1 also writes 300 kB of random bytes once: what a round trip must carry exactly.
BLOB = "[ -f /data/blob ] || head -c 300000 /dev/urandom > /data/blob; " + APPEND


@pytest.fixture
async def api(
    settings: Settings, store: Store, tokens: Any, docker_api: aiodocker.Docker
) -> AsyncIterator[httpx.AsyncClient]:
    """The HTTP API with Docker access for volume archives (a 2 MiB limit), as alice."""
    archives = DockerArchives(DockerDriver(settings.docker_url, settings.installation_id))
    app = create_app(store, archives=archives, archive_limit=ARCHIVE_LIMIT)
    try:
        async with serving(app) as url:
            headers = {"Authorization": f"Bearer {tokens.alice}"}
            async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
                yield http
    finally:
        await archives.close()


def archive_path(project: str, volume: str = "data") -> str:
    return f"/v1/projects/{project}/volumes/{volume}/archive"


def digests(archive: bytes) -> dict[str, str]:
    """Each file's name and the SHA-256 of its bytes."""
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
        return {
            m.name: hashlib.sha256(tar.extractfile(m).read()).hexdigest()  # type: ignore[union-attr]
            for m in tar
            if m.isfile()
        }


def tar_of(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


async def stopped(store: Store, name: str) -> DesiredSnapshot:
    await store.set_desired_state(name, DesiredState.STOPPED, ALICE)

    async def done() -> DesiredSnapshot | None:
        snap = await converged(store, name)
        return snap if snap and snap.status and snap.status.phase == "Stopped" else None

    return await wait_for(done, f"{name} stopped")


async def exported(api: httpx.AsyncClient, project: str) -> bytes:
    answer = await api.get(archive_path(project))
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/x-tar"
    return answer.content


async def test_export_then_import_round_trips_the_bytes(
    operator: None, store: Store, api: httpx.AsyncClient
) -> None:
    await store.create_project("shop", ALICE)
    await store.deploy("shop", release("1", command=["sh", "-c", BLOB]), ALICE)
    await ready_at(store, 1, "v1 Ready")
    running = await api.get(archive_path("shop"))
    assert running.status_code == 409
    assert running.json()["error"] == "not_stopped"
    assert "tether stop shop --wait" in running.json()["hint"]

    await stopped(store, "shop")
    archive = await exported(api, "shop")
    files = digests(archive)
    assert set(files) == {"data/blob", "data/log"}

    # Into another project's volume, which does not exist yet: the import creates it.
    await store.create_project("copy", ALICE)
    await store.deploy("copy", release("2"), ALICE, start=False)
    await wait_for(lambda: converged(store, "copy"), "copy converged, stopped")
    answer = await api.put(
        archive_path("copy"), content=archive, headers={"Content-Type": "application/x-tar"}
    )
    assert answer.status_code == 204, answer.text
    assert digests(await exported(api, "copy")) == files

    await store.set_desired_state("copy", DesiredState.RUNNING, ALICE)
    copy = await ready_at(store, 1, "copy Ready", name="copy")
    assert await served_log(copy) == ["1", "2"]  # shop's data, then copy's own start


@pytest.mark.parametrize(
    ("archive", "status", "error"),
    [
        (b"this is not a tar archive" * 40, 400, "not a readable tar archive"),
        (tar_of({"etc/passwd": b"x"}), 400, "is not inside data/"),
        (tar_of({"data/../../etc/passwd": b"x"}), 400, "is not inside data/"),
        (tar_of({"data/big": b"0" * (ARCHIVE_LIMIT + 1)}), 413, "import limit"),
        (b"", 400, "the upload is not a readable tar archive"),
    ],
)
async def test_a_bad_archive_is_refused_and_the_volume_is_unchanged(
    operator: None,
    store: Store,
    api: httpx.AsyncClient,
    archive: bytes,
    status: int,
    error: str,
) -> None:
    await v1_ready(store)
    await stopped(store, "shop")
    before = await exported(api, "shop")
    answer = await api.put(archive_path("shop"), content=archive)
    assert answer.status_code == status, answer.text
    assert error in answer.json()["message"]
    assert await exported(api, "shop") == before


async def test_archives_of_an_unknown_volume_or_project_are_not_found(
    operator: None, store: Store, api: httpx.AsyncClient
) -> None:
    await v1_ready(store)
    await stopped(store, "shop")
    missing = await api.get(archive_path("shop", "other"))
    assert missing.status_code == 404
    assert "tether volumes shop" in missing.json()["hint"]
    assert (await api.get(archive_path("nope"))).status_code == 404


TETHER = str(Path(sys.executable).parent / "tether")


async def test_the_cli_exports_to_stdout_and_imports_from_stdin(
    operator: None, store: Store, api: httpx.AsyncClient, tokens: Any, tmp_path: Path
) -> None:
    await store.create_project("shop", ALICE)
    await store.deploy("shop", release("1", command=["sh", "-c", BLOB]), ALICE)
    await ready_at(store, 1, "v1 Ready")
    env = {"TETHER_URL": str(api.base_url), "TETHER_TOKEN": tokens.alice, "PATH": "/usr/bin:/bin"}
    env["TETHER_CONFIG"] = str(tmp_path / "config.json")
    backup = tmp_path / "shop-data.tar"

    def tether(*argv: str, stdin: Path | None = None, stdout: Path | None = None) -> Any:
        with contextlib.ExitStack() as files:
            given = files.enter_context(stdin.open("rb")) if stdin else subprocess.DEVNULL
            taken = files.enter_context(stdout.open("wb")) if stdout else subprocess.PIPE
            return subprocess.run(
                [TETHER, *argv],
                env=env,
                stdin=given,
                stdout=taken,
                stderr=subprocess.PIPE,
                check=False,
                timeout=60,
            )

    refused = await asyncio.to_thread(tether, "volume", "export", "shop", "data", stdout=backup)
    assert refused.returncode == 1
    assert "run `tether stop shop --wait` first" in refused.stderr.decode()

    await stopped(store, "shop")
    done = await asyncio.to_thread(tether, "volume", "export", "shop", "data", stdout=backup)
    assert done.returncode == 0, done.stderr
    files = digests(backup.read_bytes())
    assert set(files) == {"data/blob", "data/log"}
    imported = await asyncio.to_thread(tether, "volume", "import", "shop", "data", stdin=backup)
    assert imported.returncode == 0, imported.stderr
    assert f"imported {backup.stat().st_size} bytes" in imported.stdout.decode()
    assert digests(await exported(api, "shop")) == files


@pytest.mark.parametrize(
    ("version", "action"),
    [("1", "stop"), ("2", "create"), ("2", "start")],
    ids=["after-stopping-v1", "after-creating-v2", "after-starting-v2"],
)
async def test_an_operator_killed_mid_replacement_loses_no_data(
    version: str,
    action: str,
    store: Store,
    settings: Settings,
    docker_api: aiodocker.Docker,
    tmp_path: Path,
) -> None:
    """`tether operator` SIGKILLed the moment Docker reports a step of a stop-first replacement
    done (v1 stopped; v2 created; v2 started): the next operator finishes it on the same data."""
    env = {
        **os.environ,
        "TETHER_DATABASE_URL": settings.database_url,
        "TETHER_INSTALLATION_ID": settings.installation_id,
        "TETHER_PORT_RANGE": settings.port_range,
        "TETHER_LEASE_TTL_S": "3",
        "TETHER_OPERATOR_PORT": "0",
        "TETHER_PROXY_DIR": settings.proxy_dir,
        "TETHER_PROXY_SOCKET": settings.proxy_socket,
    }
    processes: list[asyncio.subprocess.Process] = []

    async def spawn() -> asyncio.subprocess.Process:
        with (tmp_path / f"operator-{len(processes)}.log").open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                TETHER, "operator", env=env, stdout=log, stderr=log
            )
        processes.append(process)
        return process

    try:
        first = await spawn()
        await v1_ready(store)
        labels = [f"{LABEL_INSTALLATION}={settings.installation_id}"]
        events = docker_api.events.subscribe(filters={"type": ["container"], "label": labels})
        try:
            await store.deploy("shop", release("2"), ALICE)
            async with asyncio.timeout(30):
                while (event := await events.get()) is not None:
                    seen = event["Actor"]["Attributes"]
                    if event["Action"] == action and seen.get(LABEL_VERSION) == version:
                        break
            first.kill()
            await first.wait()
        finally:
            await docker_api.events.stop()
        await spawn()
        assert await served_log(await ready_at(store, 2, "v2 Ready after the restart")) == [
            "1",
            "2",
        ]
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def test_volumes_are_listed_with_their_size_measured_once_a_resync_period(
    settings: Settings, store: Store, docker_api: aiodocker.Docker
) -> None:
    operators = Operators()
    operators.start(settings.model_copy(update={"resync_interval_s": 0.5}), store)
    try:
        await store.create_project("shop", ALICE)
        await store.deploy("shop", release("1", command=["sh", "-c", BLOB]), ALICE)
        await ready_at(store, 1, "v1 Ready")

        async def measured() -> list[Any] | None:
            found = await store.volumes("shop", ALICE)
            return found if found and (found[0].size_bytes or 0) >= 300_000 else None

        [volume] = await wait_for(measured, "the volume's size measured")
        assert volume.name == "data"
        assert volume.created_at is not None
        assert volume.size_bytes is not None
        assert volume.size_bytes < 400_000  # the blob and the log, not the image
    finally:
        await operators.stop()


@pytest.fixture
async def private_engine() -> AsyncIterator[PrivateEngine]:
    """A Docker engine of the test's own, so that restarting it disturbs no one else's
    containers (the machine's engine is shared by the rest of the suite, never restarted)."""
    # A short path: containerd's sockets live under it, and unix socket paths are short.
    directory = Path(tempfile.mkdtemp(prefix="tdk-", dir="/tmp"))
    engine = PrivateEngine(directory)
    try:
        await engine.setup()
        yield engine
    finally:
        await engine.teardown()
        shutil.rmtree(directory, ignore_errors=True)


async def test_data_survives_a_docker_engine_restart(
    private_engine: PrivateEngine, settings: Settings, store: Store
) -> None:
    on_private = settings.model_copy(update={"docker_url": private_engine.url})
    operators = Operators()
    operators.start(on_private, store)
    try:
        first = await v1_ready(store)
        assert first.status is not None
        docker = aiodocker.Docker(url=private_engine.url)
        try:
            container = docker.containers.container(first.status.container_id)
            before = (await container.show())["State"]["StartedAt"]
            await private_engine.stop()  # the container stops with it
            await private_engine.start()

            async def started_again() -> bool:
                state = (await container.show())["State"]
                return bool(state["Running"]) and state["StartedAt"] != before

            await wait_for(started_again, "the container started again by the operator", 90)

            async def serves_both_starts() -> list[str] | None:
                try:
                    log = await served_log(await snapshot(store, "shop"))
                except httpx.HTTPError:
                    return None  # not routed to the restarted container yet
                return log if log == ["1", "1"] else None

            await wait_for(serves_both_starts, "the data of both starts served")
            listed = await docker.volumes.list()
            names = {v["Name"] for v in listed.get("Volumes") or []}
        finally:
            await docker.close()
        assert volume_name(settings.installation_id, "shop", "data") in names
    finally:
        await operators.stop()


@pytest.mark.parametrize(
    "volume",
    [
        {"name": "data", "path": "/data", "source": "/srv/data"},
        {"name": "data", "path": "/data", "type": "bind"},
        {"name": "/srv/data", "path": "/data"},
    ],
)
async def test_the_api_refuses_host_paths_saying_why_and_what_to_do(
    client: httpx.AsyncClient, volume: dict[str, str]
) -> None:
    await client.post("/v1/projects", json={"name": "shop"})
    spec = {"image": HEALTHY.image, "volumes": [volume]}
    answer = await client.post("/v1/projects/shop/deployments", json=spec)
    assert answer.status_code == 422, answer.text
    assert "never a host path" in answer.text
    assert "tether volume import" in answer.text
    assert (await client.get("/v1/projects/shop/deployments")).json() == []
