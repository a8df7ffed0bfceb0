"""`tether operator` as a process: SIGTERM drains and exits 0; SIGKILL mid-replace leaves nothing
a restarted operator cannot finish; a standby takes over when the active operator dies.

High availability (the `test_ha_*` tests): three operators on one database, each reaching Docker
through a counting proxy of its own, so that every Docker call is attributed to one operator, and
Postgres through a TCP proxy that can be cut. The active one is SIGKILLed, SIGSTOPped or cut off;
a standby takes over, the stale one makes no Docker call and no accepted write, and no two
operators ever called Docker in overlapping lease periods."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiodocker
import pytest
import standardwebhooks
from faultproxy import CREATE, START, Call, Delay, FaultProxy, summary, unix_socket_of
from httpload import Load
from receiver import Receiver
from support import elapsed, project_containers, remove_containers, wait_for
from tcpproxy import TcpProxy

from tether.api.errors import StoreUnavailable
from tether.api.models import (
    ConditionType,
    DeploymentSpec,
    DesiredState,
    HttpCheck,
    Principal,
)
from tether.api.store import PortRange, Store
from tether.api.webhooks import WebhookCreate
from tether.operator.labels import (
    LABEL_INSTALLATION,
    LABEL_PROJECT,
    LABEL_RESTART,
    LABEL_VERSION,
)

pytestmark = pytest.mark.docker

TETHER = str(Path(sys.executable).parent / "tether")
ALICE = Principal(owner="alice")
SPEC = DeploymentSpec(
    image="tether-test/workload:latest",
    port=8080,
    health=HttpCheck(type="http", path="/healthz"),
    stop_grace_s=2,
)


@pytest.fixture
def installation() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def docker_api(installation: str) -> AsyncIterator[aiodocker.Docker]:
    docker = aiodocker.Docker()
    yield docker
    await remove_containers(docker, installation)
    await docker.close()


Spawn = Callable[..., Awaitable[asyncio.subprocess.Process]]


@pytest.fixture
async def spawn(
    database_url: str,
    port_range: PortRange,
    installation: str,
    tmp_path: Path,
    docker_api: aiodocker.Docker,
    proxy_process: Any,
) -> AsyncIterator[Spawn]:
    """Operator processes (`spawn(TETHER_X=...)` to add settings) routing through the test's
    own HAProxy, killed before `docker_api` removes the test's containers."""
    processes: list[asyncio.subprocess.Process] = []
    env = {
        **os.environ,
        "TETHER_DATABASE_URL": database_url,
        "TETHER_INSTALLATION_ID": installation,
        "TETHER_PORT_RANGE": f"{port_range.first}-{port_range.last}",
        "TETHER_LEASE_TTL_S": "3",
        "TETHER_LOG_FORMAT": "json",
        "TETHER_OPERATOR_PORT": "0",  # several operators at once: each its own endpoint
        "TETHER_PROXY_DIR": str(proxy_process.config.directory),
        "TETHER_PROXY_SOCKET": str(proxy_process.config.socket),
    }

    async def start(**settings: str) -> asyncio.subprocess.Process:
        with (tmp_path / f"operator-{len(processes)}.log").open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                TETHER, "operator", env={**env, **settings}, stdout=log, stderr=log
            )
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def ready_at(store: Store, version: int) -> bool:
    snap = await store.desired("shop")
    if snap is None or snap.status is None:
        return False
    ready = snap.status.condition(ConditionType.READY)
    return (
        snap.status.observed_generation == snap.project.generation
        and ready is not None
        and ready.status == "True"
        and snap.status.running_version == version
    )


async def test_sigterm_drains_and_exits_zero(
    docker_proxy: FaultProxy,
    spawn: Spawn,
    store: Store,
    tmp_path: Path,
    docker_api: aiodocker.Docker,
    installation: str,
) -> None:
    """SIGTERM while a pass is in flight (the proxy holds its start): the pass is let finish, its
    outcome logged, and only then does the process exit 0."""
    held_s = 4.0
    hold = docker_proxy.inject(START, Delay(held_s), times=1, project="shop")
    process = await spawn(TETHER_DOCKER_URL=docker_proxy.url)
    await store.create_project("shop", ALICE)
    await store.deploy("shop", SPEC, ALICE)

    async def in_flight() -> bool:
        return hold.hits == 1

    await wait_for(in_flight, "the pass's start held by the proxy", within_s=30)
    process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        assert await process.wait() == 0
    exited = time.monotonic()
    [start] = docker_proxy.calls_to(START, project="shop")
    assert exited - start.at >= held_s, "exited before the held start was answered"
    lines = [
        json.loads(line)
        for line in (tmp_path / "operator-0.log").read_text().splitlines()
        if line.startswith("{")
    ]
    said = [line["event"] for line in lines]
    draining = said.index("draining in-flight passes")
    assert lines[draining]["passes"] == 1
    [finished] = [n for n, line in enumerate(lines) if n > draining and line["event"] == "pass"]
    assert lines[finished]["project"] == "shop"
    assert lines[finished]["action"][:2] == ["create v1", "start v1"]
    assert lines[finished]["result"] != "crashed"
    assert said.index("operator stopped") > finished
    # Carried out, not cut short: the container the drained pass started runs.
    [container] = await project_containers(docker_api, installation, "shop")
    assert container["State"]["Running"]


@contextlib.asynccontextmanager
async def container_events(docker: aiodocker.Docker, installation: str) -> AsyncIterator[Any]:
    """Docker's events of the test's containers, from now on."""
    events = docker.events.subscribe(
        filters={"type": ["container"], "label": [f"{LABEL_INSTALLATION}={installation}"]}
    )
    try:
        yield events
    finally:
        await docker.events.stop()


async def reported(events: Any, action: str, version: str) -> None:
    """Until Docker reports `action` done on a container of deployment `version`."""
    async with asyncio.timeout(30):
        while True:
            event = await events.get()
            assert event is not None, "the Docker events stream ended"
            labels = event["Actor"]["Attributes"]
            if event["Action"] == action and labels.get(LABEL_VERSION) == version:
                return


async def restarted_to_v2(
    spawn: Spawn, store: Store, docker_api: aiodocker.Docker, installation: str
) -> dict[str, Any]:
    """A new operator started; once it has v2 Ready and one container left, that container."""
    await spawn()
    await wait_for(lambda: ready_at(store, 2), "v2 Ready after the restart", within_s=60)

    async def only_one() -> list[dict[str, Any]] | None:
        found = await project_containers(docker_api, installation, "shop")
        return found if len(found) == 1 else None

    [survivor] = await wait_for(only_one, "the v1 container drained and removed")
    return dict(survivor)


@pytest.mark.parametrize(
    ("version", "action"),
    [("1", "stop"), ("2", "create"), ("2", "start")],
    ids=["after-stopping-v1", "after-creating-v2", "after-starting-v2"],
)
async def test_killed_mid_replace_a_restarted_operator_converges_without_duplicates(
    version: str,
    action: str,
    spawn: Spawn,
    store: Store,
    docker_api: aiodocker.Docker,
    installation: str,
) -> None:
    first = await spawn()
    await store.create_project("shop", ALICE)
    await store.deploy("shop", SPEC, ALICE)
    await wait_for(lambda: ready_at(store, 1), "v1 Ready")
    async with container_events(docker_api, installation) as events:
        await store.deploy("shop", SPEC.model_copy(update={"env": {"RELEASE": "2"}}), ALICE)
        await reported(events, action, version)
        first.kill()  # the moment Docker reports the step done
        await first.wait()

    survivor = await restarted_to_v2(spawn, store, docker_api, installation)
    assert survivor["Config"]["Labels"][LABEL_VERSION] == "2"
    assert survivor["State"]["Running"]


LOADED = SPEC.model_copy(
    update={
        "env": {"RELEASE": "1"},
        "health": HttpCheck(type="http", path="/healthz", interval_s=0.2, timeout_s=1),
        "drain_timeout_s": 5,
    }
)


def published(container: dict[str, Any]) -> str:
    """The loopback `address:port` Docker published the container's port on."""
    [bound] = container["NetworkSettings"]["Ports"]["8080/tcp"]
    return f"{bound['HostIp']}:{bound['HostPort']}"


async def route_switched(haproxy: Any, port: int, old: str) -> bool:
    route = await haproxy.route(port)
    return route is not None and route.upstream not in (old, "held")


@pytest.mark.parametrize("step", ["start", "route"], ids=["v2-started", "route-switched"])
async def test_killed_mid_rollout_under_load_no_request_fails_and_the_route_is_the_ready_one(
    step: str,
    spawn: Spawn,
    store: Store,
    docker_api: aiodocker.Docker,
    installation: str,
    proxy_process: Any,
) -> None:
    """16 keep-alive clients that never retry, through the proxy, while a start-first rollout of
    v2 loses its operator (SIGKILL) and a new one finishes it: no request fails, answers come
    from v1 and then v2 only, and at the end one container is left, Ready, and the route read
    back from HAProxy goes to its port."""
    first = await spawn()
    await store.create_project("shop", ALICE)
    await store.deploy("shop", LOADED, ALICE)
    await wait_for(lambda: ready_at(store, 1), "v1 Ready")
    snap = await store.desired("shop")
    assert snap is not None
    assert snap.status is not None
    assert snap.status.route is not None
    port, v1_route = snap.project.host_port, snap.status.route
    load = Load("127.0.0.1", port)
    load.start()
    try:
        await load.wait_for_answers(200)
        async with container_events(docker_api, installation) as events:
            update = {"env": {"RELEASE": "2"}}
            await store.deploy("shop", LOADED.model_copy(update=update), ALICE)
            if step == "start":  # v2 started beside v1, not routed yet
                await reported(events, "start", "2")
            else:  # routed to v2, v1 draining
                await wait_for(
                    lambda: route_switched(proxy_process.client, port, v1_route),
                    "the route switched to v2",
                    within_s=30,
                    every_s=0.005,
                )
            first.kill()
            await first.wait()
        await load.wait_for_answers(100)  # served while no operator runs
        survivor = await restarted_to_v2(spawn, store, docker_api, installation)
        settled = time.monotonic()
        await load.wait_for_answers(200)
    finally:
        tally = await load.stop()
    assert not tally.failures, f"{len(tally.failures)} failed, e.g. {tally.failures[:3]}"
    assert set(tally.versions()) == {"1", "2"}
    assert set(tally.versions(since=settled)) == {"2"}
    assert survivor["Config"]["Labels"][LABEL_VERSION] == "2"
    assert survivor["State"]["Running"]
    route = await proxy_process.client.route(port)
    assert route is not None
    assert route.upstream == published(survivor)
    final = await store.desired("shop")
    assert final is not None
    assert final.status is not None
    assert final.status.route == route.upstream
    assert final.status.serving_container_id == survivor["Id"]


async def test_a_standby_takes_over_when_the_active_operator_dies(
    spawn: Spawn, store: Store, docker_api: aiodocker.Docker, installation: str
) -> None:
    active = await spawn()
    await store.create_project("shop", ALICE)
    await store.deploy("shop", SPEC, ALICE)
    await wait_for(lambda: ready_at(store, 1), "shop Ready")
    await spawn()  # the standby
    active.kill()
    await active.wait()
    died = time.monotonic()

    [container] = await project_containers(docker_api, installation, "shop")
    await docker_api.containers.container(container["Id"]).kill()

    async def running_again() -> bool:
        found = await project_containers(docker_api, installation, "shop")
        return len(found) == 1 and found[0]["State"]["Running"]

    await wait_for(running_again, "the standby to repair the kill", within_s=30)
    # Lease TTL is 3 s here; renewal every TTL/3: the standby acts within about one TTL.
    assert time.monotonic() - died < 15


# High availability: three operators on one database, each reaching Docker through a counting
# proxy of its own and Postgres through a TCP proxy that can be cut (tests/tcpproxy.py).


@dataclass
class Member:
    """One `tether operator` process of a fleet, and what it reaches the world through."""

    index: int
    process: asyncio.subprocess.Process
    docker: FaultProxy
    postgres: TcpProxy
    log: Path

    def lines(self) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    found.append(json.loads(line))
        return found

    def holder(self) -> str:
        """The lease holder name this operator logged at its start."""
        return str(next(line["holder"] for line in self.lines() if "holder" in line))

    def acquisitions(self) -> list[tuple[int, float]]:
        """(epoch, monotonic time) of each lease acquisition this operator logged."""
        return [
            (line["epoch"], line["monotonic"])
            for line in self.lines()
            if line["event"] == "lease acquired: this operator is active"
        ]

    def losses(self) -> list[dict[str, Any]]:
        return [
            line
            for line in self.lines()
            if line["event"] == "lease lost: this operator is a standby again"
        ]

    def docker_calls(self, since: float = 0.0) -> list[Call]:
        return [c for c in self.docker.calls if c.at >= since]


class Fleet:
    def __init__(
        self, database_url: str, env: dict[str, str], directory: Path, upstream: str
    ) -> None:
        self._url = urlsplit(database_url)
        self._env = env
        self._directory = directory
        self._upstream = upstream
        self.members: list[Member] = []

    async def spawn(self, ttl_s: float) -> Member:
        index = len(self.members)
        docker = FaultProxy(str(self._directory / f"d{index}.sock"), self._upstream)
        await docker.start()
        assert self._url.hostname is not None
        assert self._url.port is not None
        postgres = TcpProxy(self._url.hostname, self._url.port)
        await postgres.start()
        netloc = self._url.netloc.rsplit("@", 1)[0] + f"@127.0.0.1:{postgres.port}"
        log = self._directory / f"operator-{index}.log"
        env = {
            **self._env,
            "TETHER_DATABASE_URL": urlunsplit(self._url._replace(netloc=netloc)),
            "TETHER_DOCKER_URL": docker.url,
            "TETHER_LEASE_TTL_S": str(ttl_s),
        }
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                TETHER, "operator", env=env, stdout=out, stderr=out
            )
        member = Member(index, process, docker, postgres, log)
        self.members.append(member)
        return member

    def tenures(self) -> list[tuple[int, float, Member]]:
        """Every acquisition by any member: (epoch, monotonic time, member), by epoch."""
        found = [(e, t, m) for m in self.members for e, t in m.acquisitions()]
        found.sort(key=lambda tenure: tenure[0])
        return found

    def active(self) -> Member | None:
        """The member that took the newest epoch, if it still runs."""
        tenures = self.tenures()
        if not tenures:
            return None
        member = tenures[-1][2]
        return member if member.process.returncode is None else None

    async def takeover(self, after_epoch: int, within_s: float) -> tuple[int, float, Member]:
        """Wait for an acquisition of a newer epoch than `after_epoch`."""

        async def newer() -> tuple[int, float, Member] | None:
            tenures = [t for t in self.tenures() if t[0] > after_epoch]
            return tenures[0] if tenures else None

        found: tuple[int, float, Member] = await wait_for(
            newer, f"an operator to take over from epoch {after_epoch}", within_s=within_s
        )
        return found

    def check_no_overlap(self) -> int:
        """Every Docker call any member made fell in a lease period (from its acquisition to the
        next epoch's) of that member: no two operators acted on Docker in overlapping periods.
        Returns how many calls were checked."""
        tenures = self.tenures()
        assert [e for e, _, _ in tenures] == sorted({e for e, _, _ in tenures})
        starts = [t for _, t, _ in tenures]
        checked = 0
        for member in self.members:
            for call in member.docker.calls:
                period = bisect.bisect_right(starts, call.at) - 1
                assert period >= 0, f"operator {member.index} called Docker before any lease"
                epoch, _, holder = tenures[period]
                assert holder is member, (
                    f"operator {member.index} called Docker ({call.method} {call.path}) during "
                    f"epoch {epoch}, held by operator {holder.index}"
                )
                checked += 1
        return checked

    async def close(self) -> None:
        for member in self.members:
            if member.process.returncode is None:
                member.process.kill()
                await member.process.wait()
        for member in self.members:
            await member.docker.close()
            await member.postgres.close()


@pytest.fixture
async def fleet(
    database_url: str,
    port_range: PortRange,
    installation: str,
    docker_api: aiodocker.Docker,
    proxy_process: Any,
) -> AsyncIterator[Fleet]:
    """Operator processes routing through the test's own HAProxy, killed before `docker_api`
    removes the test's containers."""
    directory = Path(tempfile.mkdtemp(prefix="tether-ha-", dir="/tmp"))  # short socket paths
    env = {
        **os.environ,
        "TETHER_INSTALLATION_ID": installation,
        "TETHER_PORT_RANGE": f"{port_range.first}-{port_range.last}",
        "TETHER_LOG_FORMAT": "json",
        "TETHER_OPERATOR_PORT": "0",
        "TETHER_PROXY_DIR": str(proxy_process.config.directory),
        "TETHER_PROXY_SOCKET": str(proxy_process.config.socket),
    }
    upstream = unix_socket_of(os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock")
    running = Fleet(database_url, env, directory, upstream)
    try:
        yield running
    finally:
        await running.close()
        for member in running.members:  # kept for a failing test's report
            with contextlib.suppress(OSError):
                shutil.copy(member.log, Path(tempfile.gettempdir()) / f"ha-{member.log.name}")
        shutil.rmtree(directory, ignore_errors=True)


async def three_operators(fleet: Fleet, store: Store, ttl_s: float) -> Member:
    """Three operators, shop Ready at v1; returns the active one."""
    for _ in range(3):
        await fleet.spawn(ttl_s)
    await store.create_project("shop", ALICE)
    await store.deploy("shop", SPEC, ALICE)
    await wait_for(lambda: ready_at(store, 1), "shop Ready")
    active = fleet.active()
    assert active is not None
    return active


async def running_once(docker: aiodocker.Docker, installation: str) -> bool:
    found = await project_containers(docker, installation, "shop")
    return len(found) == 1 and bool(found[0]["State"]["Running"])


async def writes_accepted_from(store: Store, epoch: int, since: datetime) -> int:
    """Status and event rows written under `epoch` (or older) at or after `since`."""
    async with store._connection() as conn:  # the test reads the tables as they are
        events = await conn.fetchval(
            "SELECT count(*) FROM events WHERE epoch <= $1 AND created_at >= $2", epoch, since
        )
        statuses = await conn.fetchval(
            "SELECT count(*) FROM status WHERE epoch <= $1 AND updated_at >= $2", epoch, since
        )
    return int(events) + int(statuses)


async def test_ha_sigkill_of_the_active_a_standby_is_active_within_2_s_and_repairs(
    fleet: Fleet, store: Store, docker_api: aiodocker.Docker, installation: str
) -> None:
    active = await three_operators(fleet, store, ttl_s=10)
    [(epoch, _)] = active.acquisitions()
    active.process.kill()
    killed = time.monotonic()
    [container] = await project_containers(docker_api, installation, "shop")
    await docker_api.containers.container(container["Id"]).kill()

    new_epoch, took_over, successor = await fleet.takeover(epoch, within_s=10)
    assert successor is not active
    assert new_epoch == epoch + 1
    assert took_over - killed < 2.0, f"took over {took_over - killed:.2f} s after the kill"
    await wait_for(lambda: running_once(docker_api, installation), "the kill repaired")
    await wait_for(lambda: ready_at(store, 1), "shop Ready again")
    assert fleet.check_no_overlap() > 0


async def test_ha_sigterm_of_the_active_hands_over_in_well_under_a_second(
    fleet: Fleet, store: Store
) -> None:
    """A rolling restart: SIGTERM drains the active operator, which releases its lease; a
    standby is active well under a second after the active one has exited."""
    active = await three_operators(fleet, store, ttl_s=10)
    [(epoch, _)] = active.acquisitions()
    signalled = time.monotonic()
    active.process.terminate()
    assert await active.process.wait() == 0
    new_epoch, took_over, successor = await fleet.takeover(epoch, within_s=10)
    assert successor is not active
    assert new_epoch == epoch + 1
    took = took_over - signalled
    print(f"SIGTERM hand-over: a standby was active {took:.3f} s after the signal")
    assert took < 1.0, f"took over {took:.2f} s after SIGTERM"
    assert fleet.check_no_overlap() > 0


@pytest.mark.parametrize("fault", ["sigstop", "postgres-cut"])
async def test_ha_a_hung_or_cut_off_active_is_replaced_and_fenced(
    fault: str,
    fleet: Fleet,
    store: Store,
    docker_api: aiodocker.Docker,
    installation: str,
) -> None:
    """SIGSTOP for 20 s, or its Postgres connections cut (no close), while the desired state
    changes: a standby takes over within the lease TTL and converges the change; the stale
    operator then makes no Docker call and no write is accepted from it, and it is a standby."""
    ttl_s = 5.0
    stale = await three_operators(fleet, store, ttl_s=ttl_s)
    [(epoch, _)] = stale.acquisitions()
    if fault == "sigstop":
        stale.process.send_signal(signal.SIGSTOP)
    else:
        stale.postgres.cut()
    broken = time.monotonic()
    await store.deploy("shop", SPEC.model_copy(update={"env": {"RELEASE": "2"}}), ALICE)

    new_epoch, took_over, successor = await fleet.takeover(epoch, within_s=20)
    assert successor is not stale
    assert took_over - broken < ttl_s + 3, f"took over {took_over - broken:.2f} s after"
    lease = await store.lease()
    assert lease is not None
    assert lease.epoch == new_epoch
    assert lease.holder == successor.holder()
    await wait_for(lambda: ready_at(store, 2), "v2 Ready through the new active operator")

    if fault == "sigstop":
        await wait_for(lambda: elapsed(broken, 20.0), "20 s stopped", within_s=25)
        stale.process.send_signal(signal.SIGCONT)
    else:
        stale.postgres.restore()
    healed = time.monotonic()

    async def standby_again() -> list[dict[str, Any]]:
        return stale.losses()

    [loss] = await wait_for(standby_again, "the stale operator back to standby", within_s=20)
    assert loss["epoch"] == epoch
    # It made no Docker call once the new epoch began (and none at all since it was healed),
    # and the database accepted nothing it wrote since.
    assert stale.docker_calls(since=took_over) == [], summary(stale.docker_calls(took_over))
    assert stale.docker_calls(since=healed) == []
    assert await writes_accepted_from(store, epoch, lease.acquired_at or datetime.now(UTC)) == 0
    assert [e for e, _ in stale.acquisitions()] == [epoch]
    assert fleet.active() is successor
    assert await ready_at(store, 2)
    assert await running_once(docker_api, installation)
    assert fleet.check_no_overlap() > 0


CHAOS_S = 60.0  # the issue allows 2 minutes; 60 s keeps CI's time in check
CHAOS_PROJECTS = ("alpha", "beta", "gamma")


@dataclass(frozen=True)
class Acknowledged:
    """A write that was answered as a change: what it made the project want."""

    generation: int
    desired_state: str
    target_version: int | None
    restart_token: int


async def converged_as_desired(
    store: Store, docker: aiodocker.Docker, installation: str, name: str
) -> bool:
    snap = await store.desired(name)
    assert snap is not None
    status = snap.status
    if status is None or status.observed_generation != snap.project.generation:
        return False
    listed = await docker.containers.list(
        all=True,
        filters={"label": [f"{LABEL_INSTALLATION}={installation}", f"{LABEL_PROJECT}={name}"]},
    )
    running = [c for c in [await c.show() for c in listed] if c["State"]["Running"]]
    if snap.project.desired_state == "stopped":
        return not running
    ready = status.condition(ConditionType.READY)
    if ready is None or ready.status != "True" or len(running) != 1:
        return False
    labels = running[0]["Config"]["Labels"]
    return labels[LABEL_VERSION] == str(snap.project.target_version) and labels[
        LABEL_RESTART
    ] == str(snap.project.restart_token)


async def pause(seconds: float) -> None:
    """The chaos run's pacing (nothing waits on it for a condition)."""
    began = time.monotonic()
    await wait_for(lambda: elapsed(began, seconds), f"{seconds:.1f} s", within_s=seconds + 5)


async def test_ha_chaos_random_writes_while_the_active_operator_is_killed_or_stopped(
    fleet: Fleet,
    database_url: str,
    port_range: PortRange,
    store: Store,
    docker_api: aiodocker.Docker,
    installation: str,
) -> None:
    """For CHAOS_S: two clients write at random (start, stop, restart, deploy) while every few
    seconds the active operator is SIGKILLed (and replaced) or SIGSTOPped (and continued a few
    seconds later). At the end every project converges to its last acknowledged write, no two
    operators called Docker in overlapping lease periods, and no container was created twice
    for one desire (deployment and restart token)."""
    rng = random.Random()
    for _ in range(3):
        await fleet.spawn(ttl_s=4)
    for name in CHAOS_PROJECTS:
        await store.create_project(name, ALICE)
        await store.deploy(name, SPEC, ALICE)
    acknowledged: dict[str, list[Acknowledged]] = {name: [] for name in CHAOS_PROJECTS}
    ends = time.monotonic() + CHAOS_S

    async def client() -> int:
        own = await Store.connect(database_url, port_range, max_size=2)
        writes = 0
        try:
            while time.monotonic() < ends:
                name = rng.choice(CHAOS_PROJECTS)
                verb = rng.choice(["start", "stop", "restart", "deploy"])
                try:
                    if verb == "deploy":
                        spec = SPEC.model_copy(update={"env": {"RELEASE": uuid.uuid4().hex[:6]}})
                        result, _ = await own.deploy(name, spec, ALICE)
                    elif verb == "restart":
                        result = await own.restart(name, ALICE)
                    else:
                        state = DesiredState.RUNNING if verb == "start" else DesiredState.STOPPED
                        result = await own.set_desired_state(name, state, ALICE)
                except StoreUnavailable:
                    # Refused, "nothing was changed" (a SIGSTOPped operator's open transaction
                    # can hold the project's row past the client's timeout): not acknowledged.
                    continue
                writes += 1
                if result.changed:
                    p = result.project
                    acknowledged[name].append(
                        Acknowledged(
                            p.generation, p.desired_state, p.target_version, p.restart_token
                        )
                    )
                await pause(rng.uniform(0.5, 2.5))  # a client's pace
        finally:
            await own.close()
        return writes

    async def chaos() -> list[str]:
        done: list[str] = []
        stopped: list[Member] = []
        while time.monotonic() < ends:
            await pause(rng.uniform(3.0, 6.0))
            active = fleet.active()
            if active is None or active in stopped:
                continue
            if rng.random() < 0.5:
                active.process.kill()
                await active.process.wait()
                await fleet.spawn(ttl_s=4)
                done.append(f"kill {active.index}")
            else:
                active.process.send_signal(signal.SIGSTOP)
                stopped.append(active)
                done.append(f"stop {active.index}")
            for member in list(stopped):  # continue those stopped a while ago
                if member is not active and rng.random() < 0.6:
                    member.process.send_signal(signal.SIGCONT)
                    stopped.remove(member)
        for member in stopped:
            member.process.send_signal(signal.SIGCONT)
        return done

    writes_a, writes_b, faults = await asyncio.gather(client(), client(), chaos())
    assert writes_a + writes_b > 20
    assert any(f.startswith("kill") for f in faults)
    assert any(f.startswith("stop") for f in faults)

    for name in CHAOS_PROJECTS:
        await wait_for(
            lambda name=name: converged_as_desired(store, docker_api, installation, name),
            f"{name} converged to its last acknowledged write",
            within_s=90,
        )
        # No acknowledged write lost: the project is at its last acknowledged change.
        snap = await store.desired(name)
        assert snap is not None
        last = max(acknowledged[name], key=lambda a: a.generation, default=None)
        if last is not None:
            p = snap.project
            assert (p.generation, p.desired_state, p.target_version, p.restart_token) == (
                last.generation,
                last.desired_state,
                last.target_version,
                last.restart_token,
            )
        desired_events = [
            e for e in await store.events(name, ALICE, limit=10_000) if e.kind == "desired"
        ]
        assert len(desired_events) == 2 + len(acknowledged[name])  # created, v1, then each

    checked = fleet.check_no_overlap()
    creates = Counter(
        (c.project, (c.labels or {}).get(LABEL_VERSION), (c.labels or {}).get(LABEL_RESTART))
        for m in fleet.members
        for c in m.docker.calls
        if c.endpoint == CREATE and c.status == 201
    )
    twice = {key: n for key, n in creates.items() if n > 1}
    assert not twice, f"containers created more than once for one desire: {twice}"
    epochs = [e for e, _, _ in fleet.tenures()]
    print(
        f"chaos: {writes_a + writes_b} writes, faults {faults}, epochs {epochs[-1]}, "
        f"{checked} Docker calls checked, {sum(creates.values())} creates"
    )


async def test_killed_mid_delivery_a_restarted_operator_delivers_the_webhook(
    spawn: Spawn, store: Store, tmp_path: Path
) -> None:
    """SIGKILL while a webhook attempt is in flight (the receiver holds it): the next operator's
    tenure sends it again at once (not only when the dead one's claim runs out, 65 s here), with
    the same webhook-id, signed; no operator's log holds the secret or the URL's token."""
    receiver = Receiver(mode="silent")
    await receiver.start()
    try:
        created = await store.create_webhook(
            WebhookCreate(url=f"{receiver.url}?token=hunter2", events=["deleted"]), ALICE
        )
        hook = created.webhook.id
        await store.create_project("shop", ALICE)
        destroyed = await store.destroy("shop", ALICE)
        assert await store.finish_deletion("shop", destroyed.project.generation)
        first = await spawn(TETHER_WEBHOOK_TIMEOUT_S="60")

        async def held() -> bool:
            return len(receiver.received) == 1

        await wait_for(held, "the attempt in flight, held by the receiver", within_s=30)
        [in_flight] = await store.deliveries(hook, ALICE, limit=10)
        assert (in_flight.state, in_flight.attempts) == ("pending", 1)
        first.kill()
        await first.wait()
        receiver.mode = "ok"
        began = time.monotonic()
        await spawn(TETHER_WEBHOOK_TIMEOUT_S="60")

        async def delivered() -> Any:
            [d] = await store.deliveries(hook, ALICE, limit=10)
            return d if d.state == "delivered" else None

        done = await wait_for(delivered, "the delivery resumed by the next operator", within_s=30)
        resumed_after = time.monotonic() - began
    finally:
        await receiver.stop()
    assert done.attempts == 2
    assert resumed_after < 60, "resumed by the new tenure, not by the claim running out"
    killed, resumed = receiver.received
    assert killed.headers["webhook-id"] == resumed.headers["webhook-id"] == done.message_id
    payload = standardwebhooks.Webhook(created.secret).verify(resumed.body, resumed.headers)
    assert payload["type"] == "deleted"

    def read_logs() -> str:
        return "".join((tmp_path / f"operator-{n}.log").read_text() for n in (0, 1))

    async def attempt_logged() -> bool:
        # The operator records the delivery, then logs its attempt: the line may come after.
        return '"webhook attempt"' in read_logs()

    await wait_for(attempt_logged, "the log line of the resumed attempt")
    logs = read_logs()
    assert created.secret not in logs
    assert created.secret.removeprefix("whsec_") not in logs
    assert "hunter2" not in logs
