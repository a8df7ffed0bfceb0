"""The swarm planner on its own: a few table cases, and a property test that drives it against a
small model of Swarm (services, tasks, update states, nodes that go down or are drained) from
random observed states, with and without a volume (which pins the project to one node).

Pure: no Docker, no Postgres, no event loop. Times are fixed, never read from the clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from convergence import CONVERGING, PLANNING, deleted, event, plans_nothing
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.api.models import Deployment, HttpCheck, VolumeMount
from tether.operator.desired import Desired, Memory, Volume, Want, effective_want
from tether.operator.routing import HELD, RemoveRoute, Route, SetRoute
from tether.operator.runtime import Decision, FailRollout, Finalize
from tether.operator.swarm.planner import (
    PENDING_TOO_LONG_S,
    Action,
    CreateService,
    RemoveService,
    UpdateService,
    at_rest,
    plan,
)
from tether.operator.swarm.state import (
    Labels,
    Node,
    Observed,
    Service,
    ServiceSummary,
    Task,
    UpdateState,
    alive,
    serves,
)

PROJECT = "shop"
TOKEN = 1
T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
OLDER, FALLBACK, TARGET = 1, 2, 3


def s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


DATA = Volume("data", f"tether.test.{PROJECT}.data")


def want(
    version: int, *, token: int | None = TOKEN, deadline: int = 60, volumes: bool = False
) -> Want:
    spec = Deployment(
        volumes=[VolumeMount(name="data", path="/data")] if volumes else [],
        project=PROJECT,
        version=version,
        image=f"shop:{version}",
        port=8080,
        health=HttpCheck(type="http", path="/healthz", interval_s=2.0),
        ready_deadline_s=deadline,
        created_by="t",
        created_at=T0 - timedelta(days=1),
    )
    return Want(spec, f"spec-v{version}", token, f"tether-{PROJECT}-v{version}-r{TOKEN}")


def desired(
    target: Want | None,
    fallback: Want | None = None,
    *,
    running: bool = True,
    deleting: bool = False,
    changed_at: datetime = T0 - timedelta(hours=1),
) -> Desired:
    mounts = any(w is not None and w.deployment.volumes for w in (target, fallback))
    return Desired(
        PROJECT,
        7,
        running,
        deleting,
        20000,
        target,
        fallback,
        changed_at,
        volumes=(DATA,) if mounts else (),
    )


NODES = {
    "n1": Node("n1", "node-1", "10.9.0.1", "ready", "active", "manager"),
    "n2": Node("n2", "node-2", "10.9.0.2", "ready", "active", "worker"),
    "n3": Node("n3", "node-3", "10.9.0.3", "ready", "active", "worker"),
}


def service(version: int, *, replicas: int = 1, **kw: object) -> Service:
    base = Service("svc", "tether-shop", 10, version, f"spec-v{version}", TOKEN, replicas)
    return replace(base, **kw)  # type: ignore[arg-type]


def task(tid: str, version: int, state: str = "running", node: str = "n1", **kw: object) -> Task:
    upstream = f"{NODES[node].address}:3{tid[-1:].encode()[0] % 10}000" if node else None
    base = Task(
        tid,
        "svc",
        node,
        state,
        "running",
        version,
        f"spec-v{version}",
        TOKEN,
        T0 - s(600),
        upstream=upstream,
        created_at=T0 - s(600),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def look(
    *services: Service,
    tasks: tuple[Task, ...] = (),
    healthy: tuple[str, ...] = (),
    route: Route | None = None,
    nodes: dict[str, Node] | None = None,
) -> Observed:
    return Observed(
        services, tasks, nodes or NODES, T0, {t.id: t.id in healthy for t in tasks}, route
    )


def to(t: Task) -> Route:
    assert t.upstream is not None
    return Route("http", t.upstream, (T0 - s(300)).timestamp(), PROJECT)


V3, V2 = want(TARGET), want(FALLBACK, token=None)


# --- table cases ---------------------------------------------------------------------------------


def test_no_service_is_created_with_one_replica() -> None:
    assert plan(desired(V3), look(), Memory()).action == CreateService(V3, 1)


def test_a_ready_task_is_routed_then_ready() -> None:
    svc, t = service(TARGET), task("t1", TARGET)
    decision = plan(desired(V3), look(svc, tasks=(t,), healthy=("t1",)), Memory())
    assert isinstance(decision.action, SetRoute)
    assert decision.action.route.upstream == t.upstream
    rest = plan(desired(V3), look(svc, tasks=(t,), healthy=("t1",), route=to(t)), Memory())
    assert (rest.action, rest.ready, rest.ready_version, rest.requeue_after) == (
        None,
        True,
        TARGET,
        None,
    )


def test_a_new_deployment_updates_the_service_and_the_old_task_serves_meanwhile() -> None:
    old_svc, old = service(FALLBACK), task("t1", FALLBACK)
    d = desired(V3, V2)
    decision = plan(d, look(old_svc, tasks=(old,), healthy=("t1",), route=to(old)), Memory())
    assert decision.action == UpdateService(old_svc, V3, 1)
    assert decision.action.label == "update service to v3"
    updating = service(TARGET, update_state="updating", index=11, updated_at=T0 - s(5))
    new = task("t2", TARGET, "starting", node="n2")
    waiting = plan(d, look(updating, tasks=(old, new), healthy=("t1",), route=to(old)), Memory())
    assert (waiting.action, waiting.reason) == (None, "Starting")


def test_a_stop_scales_to_zero_then_waits_for_the_task_to_go() -> None:
    svc, t = service(TARGET), task("t1", TARGET)
    d = desired(V3, running=False)
    assert plan(d, look(svc, tasks=(t,)), Memory()).action == UpdateService(svc, V3, 0)
    scaled = service(TARGET, replicas=0)
    stopping = replace(t, desired_state="shutdown")
    assert plan(d, look(scaled, tasks=(stopping,)), Memory()).reason == "Stopping"
    gone = replace(stopping, state="shutdown")
    assert plan(d, look(scaled, tasks=(gone,)), Memory()).phase == "Stopped"


def test_a_restart_token_change_updates_the_service() -> None:
    svc = service(TARGET, restart_token=TOKEN - 1)
    decision = plan(desired(V3), look(svc, tasks=(task("t1", TARGET),)), Memory())
    assert decision.action == UpdateService(svc, V3, 1)


def test_drift_is_put_back() -> None:
    scaled = service(TARGET, replicas=3)
    assert plan(desired(V3), look(scaled), Memory()).action == UpdateService(scaled, V3, 1)
    edited = service(TARGET, edited=True)
    decision = plan(desired(V3), look(edited), Memory())
    assert (decision.action, decision.reason) == (UpdateService(edited, V3, 1), "Drift")


def test_a_swarm_rollback_of_the_target_fails_the_rollout() -> None:
    rolled = service(
        FALLBACK,
        update_state="rollback_completed",
        previous=Labels(TARGET, "spec-v3", TOKEN),
        update_message="update rolled back due to failure or early termination of task x",
    )
    decision = plan(desired(V3, V2), look(rolled), Memory())
    assert decision.action == FailRollout(TARGET)
    assert "Swarm rolled it back" in decision.message


def test_a_route_to_a_task_on_a_node_that_is_down_is_held() -> None:
    t = task("t1", TARGET)
    down = {**NODES, "n1": replace(NODES["n1"], state="down")}
    decision = plan(
        desired(V3), look(service(TARGET), tasks=(t,), route=to(t), nodes=down), Memory()
    )
    assert isinstance(decision.action, SetRoute)
    assert decision.action.route.held
    assert "node-1 (down)" in decision.message


def test_a_task_pending_too_long_is_reported_with_swarms_reason() -> None:
    pending = task(
        "t1",
        TARGET,
        "pending",
        node="",
        since=T0 - s(PENDING_TOO_LONG_S + 1),
        error="no suitable node (insufficient resources on 3 nodes)",
    )
    decision = plan(desired(V3), look(service(TARGET), tasks=(pending,)), Memory())
    assert (decision.reason, decision.stalled) == ("Unschedulable", True)
    assert "insufficient resources" in decision.message


def test_a_task_error_is_reported() -> None:
    failed = task("t1", TARGET, "failed", error="task: non-zero exit (1)", desired_state="shutdown")
    decision = plan(desired(V3), look(service(TARGET), tasks=(failed,)), Memory())
    assert (decision.reason, decision.phase) == ("TaskFailed", "CrashLoop")
    assert "non-zero exit (1)" in decision.message


def test_a_second_service_is_removed_once_the_kept_one_serves() -> None:
    kept, t = service(TARGET), task("t1", TARGET)
    extra = service(TARGET, id="svc2", name="tether-shop-copy")
    decision = plan(
        desired(V3), look(kept, extra, tasks=(t,), healthy=("t1",), route=to(t)), Memory()
    )
    assert decision.action == RemoveService(extra)


def test_a_crash_loop_after_a_move_does_not_start_the_ready_deadline_over() -> None:
    """The task Swarm started when the Ready one's node went down has the deadline from its
    creation; the ones a crash loop started after it do not get it again."""
    lost = task("t0", TARGET, node="n1", desired_state="shutdown")
    moved = task(
        "t1",
        TARGET,
        "failed",
        node="n2",
        created_at=T0 - s(100),
        error="exit (1)",
        desired_state="shutdown",
    )
    newest = task("t2", TARGET, node="n3", since=T0 - s(2), created_at=T0 - s(4))
    down = {**NODES, "n1": replace(NODES["n1"], state="down")}
    decision = plan(
        desired(want(TARGET, deadline=20)),
        look(service(TARGET), tasks=(lost, moved, newest), nodes=down),
        Memory(ready_container="t0"),
    )
    assert (decision.reason, decision.stalled) == ("Unhealthy", True), decision


# --- property: a model of Swarm -------------------------------------------------------------------
#
# The model holds the project's services (with the labels of the spec tether wrote, replicas, an
# update state and the previous spec), their tasks, three nodes, the proxy's route, and a clock.
# Each step observes the model, asks the planner, and applies the action as Swarm would:
# CreateService adds a service; UpdateService is refused unless it names the service's current
# index (Swarm's compare-and-swap), writes the spec, and starts a start-first update when the task
# template changed (not for a change of replicas alone); RemoveService takes the service and its
# tasks. Between steps Swarm works (`tick`): tasks start on a node that is up and active (pending
# when there is none), an update starts the new task beside the old one and shuts the old one down
# once Swarm's own health check finds the new one healthy, a new task that never answers fails
# after FAIL_AFTER_S and the update rolls back to the previous spec, tasks on a node that is down
# are replaced elsewhere after RESCHEDULE_S, and tasks on a drained node at once. Health is an
# oracle per deployment: a task answers once it has run for its deployment's drawn delay, or
# never; Swarm's own health check agrees, one check interval later. A scenario may take a node
# down, or drain it, part-way.

FAIL_AFTER_S = 8.0
HEALTH_INTERVAL_S = 1.0  # the HEALTHCHECK's interval: at least a second (see the driver)
RESCHEDULE_S = 6.0
START_S = 1.0
MAX_ACTIONS = 24
MAX_STEPS = 300
Template = tuple[int, str, int, bool]  # version, spec hash, restart token, edited


class Refused(AssertionError):
    """Swarm would refuse this action."""


def template_of(x: Service) -> Template:
    return (x.version, x.spec_hash, x.restart_token, x.edited)


@dataclass
class SwarmModel:
    services: dict[str, Service]
    tasks: dict[str, Task]
    nodes: dict[str, Node]
    now: datetime
    healthy_after: dict[int, float | None]
    route: Route | None = None
    templates: dict[str, Template] = field(default_factory=dict)  # task id → its template
    started: dict[str, datetime] = field(default_factory=dict)  # task id → running since
    down_since: dict[str, datetime] = field(default_factory=dict)
    serial: int = 0
    most_services: int = 0
    # The versions whose tasks mount a volume: Swarm creates it on the node of the first such task
    # placed, and one placed anywhere else would start on an empty one; every spec tether writes
    # once it is there must pin the service to that node. (Until tether's first write, Swarm may
    # place a replacement anywhere: the window the docs name. Scenarios with a volume draw one
    # service at most: a second one, unpinned, places its task anywhere until tether removes it.)
    mounts: frozenset[int] = frozenset()
    volume_at: str | None = None
    empty_elsewhere: list[str] = field(default_factory=list)

    def answers(self, t: Task) -> bool:
        delay = self.healthy_after.get(t.version)
        since = self.started.get(t.id)
        return (
            serves(t, self.nodes)
            and delay is not None
            and since is not None
            and (self.now - since).total_seconds() >= delay
        )

    def swarm_healthy(self, t: Task) -> bool:
        """Swarm's own health check runs first one interval after the start: tether's probe,
        paced from 50 ms, finds the endpoint answering before Swarm does."""
        since = self.started.get(t.id)
        return (
            self.answers(t)
            and since is not None
            and (self.now - since).total_seconds()
            >= (self.healthy_after.get(t.version) or 0.0) + HEALTH_INTERVAL_S
        )

    def routed(self) -> Task | None:
        if self.route is None or self.route.held:
            return None
        return next((t for t in self.tasks.values() if t.upstream == self.route.upstream), None)

    def observe(self, d: Desired, probing: bool) -> Observed:
        tasks = tuple(self.tasks.values())
        healthy = {t.id: self.answers(t) for t in tasks} if probing else {}
        return Observed(
            tuple(self.services.values()), tasks, dict(self.nodes), self.now, healthy, self.route
        )

    # Swarm's side

    def _place(self, svc: Service | None) -> Node | None:
        usable = [
            n
            for n in self.nodes.values()
            if n.up
            and n.availability == "active"
            and (svc is None or not svc.volume_node or n.id == svc.volume_node)
        ]
        return usable[self.serial % len(usable)] if usable else None

    def _new_task(self, svc: Service) -> None:
        self.serial += 1
        tid = f"t{self.serial}"
        node = self._place(svc)
        if node is not None and svc.version in self.mounts and self.volume_at is None:
            self.volume_at = node.id
        self.tasks[tid] = Task(
            tid,
            svc.id,
            node.id if node else "",
            "starting" if node else "pending",
            "running",
            svc.version,
            svc.spec_hash,
            svc.restart_token,
            self.now,
            upstream=f"{node.address}:{30000 + self.serial}" if node else None,
            error="" if node else "no suitable node (1 node not available for new tasks)",
            created_at=self.now,
        )
        self.templates[tid] = template_of(svc)

    def _end(self, t: Task, state: str, error: str = "") -> None:
        self.tasks[t.id] = replace(t, state=state, desired_state="shutdown", error=error)

    def tick(self) -> None:
        for t in list(self.tasks.values()):
            node = self.nodes.get(t.node_id)
            gone = node is None or not node.up
            svc = self.services.get(t.service_id)
            pinned = svc.volume_node if svc is not None else ""
            if t.desired_state == "running" and pinned and t.node_id and t.node_id != pinned:
                self._end(t, "shutdown")  # its node no longer meets the service's constraint
            elif t.desired_state == "running" and node is not None and node.availability == "drain":
                self._end(t, "shutdown")
            elif t.desired_state == "running" and gone and t.node_id:
                since = self.down_since.get(t.node_id, self.now)
                if (self.now - since).total_seconds() >= RESCHEDULE_S:
                    self.tasks[t.id] = replace(t, desired_state="shutdown")  # still "running"
            elif t.state == "pending" and self._place(self.services.get(t.service_id)) is not None:
                del self.tasks[t.id]  # replaced by a placed one below
            elif (  # a node that is down runs nothing, and reports nothing
                t.state == "starting"
                and not gone
                and (self.now - t.since).total_seconds() >= START_S
            ):
                self.tasks[t.id] = replace(t, state="running", since=self.now)
                self.started[t.id] = self.now
            elif t.state == "running" and t.desired_state == "shutdown" and not gone:
                self._end(t, "shutdown")
            elif (
                t.state == "running"
                and not self.answers(t)
                and (self.now - self.started.get(t.id, t.since)).total_seconds() >= FAIL_AFTER_S
                and self.healthy_after.get(t.version) is None
            ):
                self._end(t, "failed", "task: non-zero exit (1): unhealthy container")
        for svc in list(self.services.values()):
            self._orchestrate(svc)

    def _orchestrate(self, svc: Service) -> None:
        mine = [t for t in self.tasks.values() if t.service_id == svc.id]
        current = [
            t
            for t in mine
            if t.desired_state == "running" and self.templates.get(t.id) == template_of(svc)
        ]
        dirty = [
            t
            for t in mine
            if t.desired_state == "running" and self.templates.get(t.id) != template_of(svc)
        ]
        if svc.update_state == "rollback_started":  # the spec is back already: it finishes
            svc = self.services[svc.id] = replace(svc, update_state="rollback_completed")
        if svc.update_state == "updating" and svc.replicas == 0:
            for t in current + dirty:
                self._end(t, "shutdown")
            self.services[svc.id] = replace(svc, update_state="completed")
            return
        if svc.update_state == "updating":
            failed = [
                t
                for t in mine
                if t.state == "failed" and self.templates.get(t.id) == template_of(svc)
            ]
            if failed and svc.previous is not None:
                back = Labels(svc.version, svc.spec_hash, svc.restart_token)
                prev = svc.previous
                self.services[svc.id] = replace(
                    svc,
                    version=prev.version,
                    spec_hash=prev.spec_hash,
                    restart_token=prev.restart_token,
                    edited=False,
                    previous=back,
                    update_state="rollback_completed",
                    update_message="update rolled back due to failure of a task",
                    index=svc.index + 1,
                )
                for t in current:
                    self._end(t, "shutdown")
                return
            if not current:
                self._new_task(svc)
                return
            if any(self.swarm_healthy(t) for t in current):
                for t in dirty:
                    self._end(t, "shutdown")
                self.services[svc.id] = replace(svc, update_state="completed")
            return
        live = [t for t in current if t.state != "failed"]
        if len(live) < svc.replicas:
            self._new_task(svc)
        for extra in live[svc.replicas :]:
            self._end(extra, "shutdown")
        if svc.replicas == 0:
            for t in dirty:
                self._end(t, "shutdown")

    def wait(self, seconds: float) -> None:
        until = self.now + s(seconds) + s(0.001)
        while self.now < until:
            self.now = min(until, self.now + s(0.5))
            self.tick()

    # tether's side

    def apply(self, action: Action) -> None:
        if isinstance(action, SetRoute):
            self.route = action.route
        elif isinstance(action, RemoveRoute):
            self.route = None
        elif isinstance(action, CreateService):
            assert not self.services, f"{action} while {list(self.services)} exist"
            self.serial += 1
            w = action.want
            self.services[f"s{self.serial}"] = Service(
                f"s{self.serial}",
                "tether-shop",
                1,
                w.version,
                w.spec_hash,
                w.restart_token or 0,
                action.replicas,
                updated_at=self.now,
            )
        elif isinstance(action, UpdateService):
            current = self.services.get(action.service.id)
            if current is None or current.index != action.service.index:
                raise Refused(f"update out of sequence: {action.service} is now {current}")
            assert action.node == current.volume_node or not current.volume_node, (
                f"{action} moves the pin off {current.volume_node}: the volume stays there"
            )
            if self.volume_at is not None and action.node != self.volume_at:
                self.empty_elsewhere.append(f"{action.label}: not pinned to {self.volume_at}")
            w = action.want
            written = replace(
                current,
                volume_node=action.node,
                version=w.version,
                spec_hash=w.spec_hash,
                restart_token=w.restart_token or 0,
                edited=False,
                replicas=action.replicas,
                index=current.index + 1,
                updated_at=self.now,
            )
            if template_of(written) != template_of(current):
                written = replace(
                    written,
                    update_state="updating",
                    update_message="update in progress",
                    previous=Labels(current.version, current.spec_hash, current.restart_token),
                )
            self.services[current.id] = written
        elif isinstance(action, RemoveService):
            current = self.services.pop(action.service.id, None)
            if current is None or current.index != action.service.index:
                raise Refused(f"{action} on a stale view: {current}")
            for t in [t for t in self.tasks.values() if t.service_id == current.id]:
                del self.tasks[t.id]
        else:
            raise AssertionError(action)
        self.most_services = max(self.most_services, len(self.services))
        self.now += s(0.2)
        self.tick()


NODE_STATES = ("ready", "ready", "ready", "down")
TASK_STATES = ("pending", "starting", "running", "running", "failed", "shutdown", "rejected")
UPDATE_STATES: tuple[UpdateState | None, ...] = (
    None,
    None,
    "updating",
    "paused",
    "completed",
    "rollback_started",
    "rollback_paused",
    "rollback_completed",
)


@dataclass(frozen=True)
class Scenario:
    desired: Desired
    memory: Memory
    model: SwarmModel
    trouble: str | None  # "down" or "drain": what happens to the routed task's node
    trouble_after: int  # ... after this many actions (or once the planner rests)
    services_before: int


def labels_of(version: int, token: int) -> tuple[int, str, int]:
    return version, f"spec-v{version}", token


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    deadline = draw(st.sampled_from([10, 20, 40]))
    mode = draw(st.sampled_from(["running", "running", "running", "stopped", "deleting"]))
    volumes = draw(st.booleans())
    target = want(TARGET, deadline=deadline, volumes=volumes) if draw(st.integers(0, 5)) else None
    fallback = (
        want(FALLBACK, token=None, deadline=deadline, volumes=volumes)
        if draw(st.booleans())
        else None
    )
    d = desired(
        target,
        fallback,
        running=mode == "running",
        deleting=mode == "deleting",
        changed_at=T0 - s(draw(st.integers(0, 600))),
    )
    nodes = {
        nid: replace(
            node,
            state=draw(st.sampled_from(NODE_STATES)),
            availability=draw(st.sampled_from(["active", "active", "drain"])),
        )
        for nid, node in NODES.items()
    }
    services: dict[str, Service] = {}
    tasks: dict[str, Task] = {}
    templates: dict[str, Template] = {}
    started: dict[str, datetime] = {}
    for i in range(draw(st.integers(0, 1 if volumes else 2))):  # see `mounts`
        version = draw(st.sampled_from([TARGET, FALLBACK, OLDER]))
        token = draw(st.sampled_from([TOKEN, TOKEN - 1]))
        v, h, tok = labels_of(version, token)
        previous = draw(
            st.sampled_from([None, Labels(*labels_of(FALLBACK, 0)), Labels(*labels_of(TARGET, 1))])
        )
        svc = Service(
            f"s{i}",
            "tether-shop" if i == 0 else f"tether-shop-{i}",
            draw(st.integers(1, 50)),
            v,
            h,
            tok,
            draw(st.sampled_from([0, 1, 1, 2])),
            edited=draw(st.booleans()),
            update_state=draw(st.sampled_from(UPDATE_STATES)),
            previous=previous,
            updated_at=T0 - s(draw(st.integers(0, 600))),
            volume_node=draw(st.sampled_from(["", *nodes])) if volumes else "",
        )
        services[svc.id] = svc
        for j in range(draw(st.integers(0, 3))):
            tid = f"old{i}{j}"
            state = draw(st.sampled_from(TASK_STATES))
            node = svc.volume_node or draw(st.sampled_from(list(nodes)))
            tv = draw(st.sampled_from([v, FALLBACK, OLDER]))
            placed = state != "pending"
            tasks[tid] = Task(
                tid,
                svc.id,
                node if placed else "",
                state,
                "running" if state in ("pending", "starting", "running") else "shutdown",
                tv,
                f"spec-v{tv}",
                tok,
                T0 - s(draw(st.integers(0, 120))),
                upstream=f"{nodes[node].address}:{31000 + len(tasks)}" if placed else None,
                error="task: non-zero exit (1)" if state in ("failed", "rejected") else "",
                created_at=T0 - s(draw(st.integers(0, 120))),
            )
            templates[tid] = (tv, f"spec-v{tv}", tok, draw(st.booleans()))
            if state == "running":
                started[tid] = tasks[tid].since
    upstreams = [t.upstream for t in tasks.values() if t.upstream]
    since = (T0 - s(draw(st.integers(0, 120)))).timestamp()
    route = draw(
        st.sampled_from(
            [
                None,
                Route("http", HELD, since, PROJECT),
                Route("http", "10.9.0.9:39999", since, PROJECT),
                *(Route("http", u, since, PROJECT) for u in upstreams),
            ]
        )
    )
    answers = st.one_of(st.none(), st.floats(0, 2 * deadline))
    model = SwarmModel(
        services,
        tasks,
        nodes,
        T0,
        {TARGET: draw(answers), FALLBACK: draw(answers), OLDER: draw(answers)},
        route,
        templates,
        started,
        {nid: T0 - s(60) for nid, n in nodes.items() if not n.up},
        most_services=len(services),
        mounts=frozenset(w.version for w in (target, fallback) if w is not None and volumes),
        volume_at=next((x.volume_node for x in services.values() if x.volume_node), None)
        or first_mounted(tasks, volumes, target, fallback),
    )
    memory = Memory(
        failed_version=draw(st.sampled_from([None, TARGET])),
        ready_container=draw(st.sampled_from([None, *tasks])),
    )
    trouble = draw(st.sampled_from([None, None, "down", "drain"]))
    return Scenario(d, memory, model, trouble, draw(st.integers(0, 6)), len(services))


def first_mounted(tasks: dict[str, Task], volumes: bool, *wants: Want | None) -> str | None:
    """Where the volume is in an unpinned scenario: on the node of the first task placed that
    mounted it, whatever became of that task."""
    mounting = {w.version for w in wants if w is not None and volumes}
    placed = [t for t in tasks.values() if t.node_id and t.version in mounting]
    first = min(placed, key=lambda t: (t.created_at or t.since, t.id), default=None)
    return first.node_id if first is not None else None


def make_trouble(model: SwarmModel, trouble: str) -> None:
    """The node of the routed task (or of any running one) goes down, or is drained."""
    victim = model.routed() or next((t for t in model.tasks.values() if t.state == "running"), None)
    if victim is None or victim.node_id not in model.nodes:
        return
    node = model.nodes[victim.node_id]
    if trouble == "down":
        model.nodes[node.id] = replace(node, state="down")
        model.down_since[node.id] = model.now
    else:
        model.nodes[node.id] = replace(node, availability="drain")
    event("trouble", trouble)
    model.tick()


def check_step(d: Desired, memory: Memory, model: SwarmModel, action: Action) -> None:
    routed = model.routed()
    if isinstance(action, CreateService):
        assert not model.services, "a second service for the project"
        assert d.running
        assert not d.deleting
    if isinstance(action, RemoveService) and d.running and not d.deleting:
        assert routed is None or routed.service_id != action.service.id, (
            f"{action} while its task serves the endpoint"
        )
    if isinstance(action, SetRoute) and not action.route.held:
        to = [t for t in model.tasks.values() if t.upstream == action.route.upstream]
        assert to, f"{action} to no task"
        assert model.answers(to[0]), f"{action} to what does not answer: {to}"
    if d.deleting:
        assert not isinstance(action, CreateService | FailRollout)
        assert not (isinstance(action, UpdateService) and action.replicas > 0)
    if isinstance(action, FailRollout):
        assert d.target is not None
        assert d.fallback is not None
        assert action.version == d.target.version != memory.failed_version


def check_pin(model: SwarmModel) -> None:
    """Once pinned, the project runs on its volume's node or nowhere; tether never wrote a spec
    that lets it run elsewhere once the volume was somewhere."""
    assert not model.empty_elsewhere, model.empty_elsewhere
    for svc in model.services.values():
        if not svc.volume_node:
            continue
        assert model.volume_at in (None, svc.volume_node), (svc, model.volume_at)
        away = [
            t
            for t in model.tasks.values()
            if t.service_id == svc.id
            and t.version in model.mounts
            and t.state == "running"
            and t.node_id != svc.volume_node
        ]
        assert not away, f"running off the volume's node {svc.volume_node}: {away}"


def run(scenario: Scenario) -> tuple[Decision, SwarmModel, Memory, list[Action]]:
    d, memory, model = scenario.desired, scenario.memory, scenario.model
    actions: list[Action] = []
    troubled = scenario.trouble is None
    for _ in range(MAX_STEPS):
        if not troubled and len(actions) >= scenario.trouble_after:
            assert scenario.trouble is not None
            make_trouble(model, scenario.trouble)
            troubled = True
        check_pin(model)
        decision = plan(d, model.observe(d, d.running and not d.deleting), memory)
        memory = decision.memory
        action = decision.action
        if action is None:
            rests = decision.requeue_after is None or decision.stalled
            polls_dead = decision.reason == "Unhealthy" and (
                decision.workload is None
                or model.healthy_after.get(decision.workload.version) is None
            )
            if (rests or polls_dead) and troubled:
                event("outcome", decision.reason)
                event("actions", len(actions))
                return decision, model, memory, actions
            if rests or polls_dead:  # at rest before the trouble was due: it comes now
                assert scenario.trouble is not None
                make_trouble(model, scenario.trouble)
                troubled = True
                continue
            model.wait(decision.requeue_after or 1.0)
            continue
        actions.append(action)
        assert len(actions) <= MAX_ACTIONS, f"no convergence: {[a.label for a in actions]}"
        check_step(d, memory, model, action)
        if isinstance(action, FailRollout):
            memory = replace(memory, failed_version=action.version)
            continue
        if isinstance(action, Finalize):
            return decision, model, memory, actions
        model.apply(action)
    raise AssertionError(
        f"no rest after {MAX_STEPS} steps: {[a.label for a in actions]}, "
        f"last: {decision.reason}: {decision.message}"
    )


def usable_nodes(model: SwarmModel) -> bool:
    return any(n.up and n.availability == "active" for n in model.nodes.values())


@given(scenarios())
@settings(CONVERGING, max_examples=500)
def test_plans_converge_against_a_model_of_swarm(scenario: Scenario) -> None:
    decision, model, memory, _ = run(scenario)
    d = scenario.desired
    assert model.most_services <= max(1, scenario.services_before)  # never a second one
    services = list(model.services.values())
    if deleted(decision, d, services):
        return
    want = effective_want(d, memory)
    if not d.running or want is None:
        assert model.route is None
        assert len(services) <= 1
        assert all(x.replicas == 0 for x in services)
        assert not any(alive(t, model.nodes) for t in model.tasks.values())
        assert decision.phase == "Stopped"
        return
    assert len(services) == 1, services
    [svc] = services
    if decision.ready:
        assert want.matches(svc)
        assert svc.replicas == 1
        assert not svc.edited
        routed = model.routed()
        assert routed is not None
        assert model.answers(routed)
        assert want.matches(routed)
        assert decision.ready_version == want.version
        if d.volumes_of(want):
            assert svc.volume_node == routed.node_id == model.volume_at
        return
    # Not Ready at rest: only where nothing could be.
    never = model.healthy_after.get(want.version) is None
    assert decision.stalled or decision.reason == "Unhealthy", decision
    if decision.reason == "Unschedulable":
        assert not usable_nodes(model)
    elif decision.reason == "VolumeNodeLost":
        node = model.nodes.get(svc.volume_node)
        assert node is None or not node.up or node.availability != "active", decision
    else:
        assert decision.reason in ("Unhealthy", "RolledBack", "UpdatePaused"), decision
        if decision.reason == "Unhealthy":
            assert never or decision.workload is not None
    if model.route is not None and not model.route.held:
        routed = model.routed()
        assert routed is not None
        assert model.answers(routed)


def one_task(version: int, healthy_after: dict[int, float | None]) -> SwarmModel:
    """The project's service at `version`, its one task Ready on node-1 and routed to."""
    t = task("t0", version)
    return SwarmModel(
        {"svc": service(version)},
        {"t0": t},
        dict(NODES),
        T0,
        healthy_after,
        to(t),
        {"t0": (version, f"spec-v{version}", TOKEN, False)},
        {"t0": T0 - s(600)},
    )


def test_a_healthy_rollout_updates_in_place_and_follows_the_new_task() -> None:
    model = one_task(FALLBACK, {FALLBACK: 0.0, TARGET: 2.0})
    decision, model, _, actions = run(Scenario(desired(V3, V2), Memory(), model, None, 0, 1))
    # The route moves before Swarm retires the old task: never held, never refused.
    assert [a.label for a in actions] == ["update service to v3", "route v3"]
    assert decision.ready_version == TARGET
    routed = model.routed()
    assert routed is not None
    assert routed.version == TARGET


def test_a_rollout_that_never_answers_is_rolled_back_by_swarm_and_the_old_task_serves_on() -> None:
    model = one_task(FALLBACK, {FALLBACK: 0.0, TARGET: None})
    decision, model, memory, actions = run(Scenario(desired(V3, V2), Memory(), model, None, 0, 1))
    assert [a.label for a in actions] == ["update service to v3", "fail-rollout v3"]
    assert memory.failed_version == TARGET
    assert (decision.ready, decision.ready_version) == (True, FALLBACK)
    assert model.routed() == model.tasks["t0"]  # never stopped


def test_node_loss_moves_the_task_and_the_route_follows() -> None:
    model = one_task(TARGET, {TARGET: 0.5})
    ready_before = Memory(ready_container="t0")  # as the pass that found it Ready recorded
    decision, model, _, actions = run(Scenario(desired(V3), ready_before, model, "down", 0, 1))
    assert [a.label for a in actions] == ["hold", "route v3"]
    routed = model.routed()
    assert decision.ready
    assert routed is not None
    assert routed.node_id != "n1"


def test_a_drain_moves_the_task_and_the_route_follows() -> None:
    model = one_task(TARGET, {TARGET: 0.5})
    ready_before = Memory(ready_container="t0")
    decision, model, _, actions = run(Scenario(desired(V3), ready_before, model, "drain", 0, 1))
    assert [a.label for a in actions] == ["hold", "route v3"]
    routed = model.routed()
    assert decision.ready
    assert routed is not None
    assert routed.node_id != "n1"


@given(scenarios())
@settings(PLANNING, max_examples=300)
def test_the_resync_rests_only_where_the_planner_would(scenario: Scenario) -> None:
    d, memory, model = scenario.desired, scenario.memory, scenario.model
    summaries = [
        ServiceSummary(x, tuple(t for t in model.tasks.values() if t.service_id == x.id))
        for x in model.services.values()
    ]
    if not at_rest(d, memory, summaries, model.nodes, model.route):
        return
    plans_nothing(plan, d, model.observe(d, True), memory, scenario)


def test_a_task_placed_with_volumes_pins_the_service_to_its_node() -> None:
    v3 = want(TARGET, volumes=True)
    t = task("t1", TARGET, "starting", node="n2")
    decision = plan(desired(v3), look(service(TARGET), tasks=(t,)), Memory())
    assert decision.action == UpdateService(service(TARGET), v3, 1, "n2")
    assert (decision.reason, decision.action.label) == ("PinVolumes", "pin v3 to its volumes' node")


def test_the_lost_node_of_the_volumes_stalls_the_project_and_keeps_the_pin() -> None:
    v3 = want(TARGET, volumes=True)
    pinned = service(TARGET, volume_node="n2")
    lost = replace(task("t1", TARGET, node="n2"), desired_state="shutdown")
    pending = task("t2", TARGET, "pending", node="", error="no suitable node")
    down = {**NODES, "n2": replace(NODES["n2"], state="down")}
    observed = look(pinned, tasks=(lost, pending), nodes=down)
    decision = plan(desired(v3), observed, Memory())
    assert (decision.action, decision.reason, decision.stalled) == (None, "VolumeNodeLost", True)
    assert "node-2, which is down" in decision.message
    assert "data" in decision.message
    # A deploy meanwhile is written with the pin: Swarm still cannot move the project.
    v4 = want(TARGET + 1, volumes=True)
    update = plan(desired(v4, v3), observed, Memory()).action
    assert isinstance(update, UpdateService)
    assert update.node == "n2"
