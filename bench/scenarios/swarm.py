"""10. Swarm: tether's swarm runtime (`TETHER_RUNTIME=swarm`) on a 3-node Swarm of the run's own
(scripts/swarm-cluster through tests/swarmcluster.py: node1 a drained manager, node2 and node3
workers, one dockerd per network namespace), against Swarm driven directly through the manager's
Engine API (the floor).

- One project, write → Ready, interleaved run by run (the order alternating): a fresh deploy
  (tether: project and deployment written; floor: `POST /services/create`) and a new deployment of
  a running project (tether: a deployment with a changed env; floor: `POST /services/{id}/update`
  of the same change after reading the service's version, as `docker service update` does).
  tether's Ready is the operator's `converged Ready` record (its probe through the task's node
  address answered, the proxy routed, status written); the floor's is the first answer of the
  task's endpoint at its node address and published port, found by listing the service's tasks
  every 20 ms and probing each running task's endpoint.
- 50 projects stopped → running: tether: 50 desired-state writes (8 at a time) until every
  project recorded Ready; floor: one service list (for the versions), then 50 scale updates
  (replicas 0 → 1, 8 at a time, like tether's 8 workers) until every endpoint answered.
- One resync's Docker calls at 100 and 1,000 services: the operator process stops (its proxy
  stays: a resync reads its routes), the projects are written desired stopped and their services
  created directly on the manager at replicas 0 (tether's spec for them, labelled as tether labels
  them), and `Operator.resync()` runs in this process on the swarm runtime `tether operator`
  builds, every call through `SwarmDriver.call` counted.

The floor's services have the spec tether wrote for the first project (read back from the
manager: same image, health check, host-mode port, update and rollback config), relabelled so
that they belong to no tether installation. The whole cluster is torn down at the end.
"""

from __future__ import annotations

import asyncio
import copy
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import aiodocker

from docker_floor import bounded, probe
from harness import OPERATOR_ROLE, REPO, Run, load_average
from measures import percentile, ratio
from tether.api.settings import Settings
from tether.api.store import Store
from tether.operator.labels import LABEL_INSTALLATION, LABEL_PROJECT
from tether.operator.runtimes import swarm_runtime
from tether.operator.service import Operator
from tether.operator.swarm.docker.spec import service_name
from tether.operator.swarm.planner import RECHECK_S
from tether_side import OWNER, SPEC, OperatorProcess, Tether

SCENARIO = "swarm"
NODES = 3
CONCURRENCY = 8  # tether's default TETHER_DOCKER_CHANGES
POLL_S = 0.02  # how often the floor lists a service's tasks
ROUND = "BENCH_ROUND"  # the env variable a new deployment changes
READY_WITHIN_S = 300.0


class Floor:
    """Services driven directly through the manager's Engine API, with tether's spec."""

    def __init__(self, manager: aiodocker.Docker, addresses: dict[str, str], owner: str) -> None:
        self.manager = manager
        self.addresses = addresses  # Swarm node id → its address (where host-mode ports answer)
        self.owner = owner  # the floor's services carry this as their installation label
        self.template: dict[str, Any] = {}

    def spec(
        self, name: str, replicas: int, *, installation: str | None = None, project: str = ""
    ) -> dict[str, Any]:
        spec = copy.deepcopy(self.template)
        spec["Name"] = name
        for labels in (spec["Labels"], spec["TaskTemplate"]["ContainerSpec"]["Labels"]):
            labels[LABEL_INSTALLATION] = installation or self.owner
            labels[LABEL_PROJECT] = project or name
        spec["Mode"] = {"Replicated": {"Replicas": replicas}}
        return spec

    async def create(self, spec: dict[str, Any]) -> str:
        created = await self.manager._query_json("services/create", method="POST", data=spec)
        return str(created["ID"])

    async def update(self, service_id: str, spec: dict[str, Any], version: int) -> None:
        await self.manager._query_json(
            f"services/{service_id}/update", method="POST", params={"version": version}, data=spec
        )

    async def new_round(self, service_id: str, value: str) -> None:
        """A new deployment: the env changed, as `docker service update --env-add` writes it."""
        shown = await self.manager.services.inspect(service_id)
        spec = shown["Spec"]
        spec["TaskTemplate"]["ContainerSpec"]["Env"] = [f"{ROUND}={value}"]
        await self.update(service_id, spec, shown["Version"]["Index"])

    async def scale(self, service_ids: list[str], replicas: int) -> None:
        """One list for the versions, then one update per service, 8 at a time."""
        listed = await self.manager.services.list(
            filters={"label": [f"{LABEL_INSTALLATION}={self.owner}"]}
        )
        shown = {s["ID"]: s for s in listed if s["ID"] in service_ids}

        async def one(service_id: str) -> None:
            spec = shown[service_id]["Spec"]
            spec["Mode"] = {"Replicated": {"Replicas": replicas}}
            await self.update(service_id, spec, shown[service_id]["Version"]["Index"])

        await bounded(CONCURRENCY, service_ids, one)

    async def serving(
        self, service_ids: list[str], value: str | None = None, within_s: float = READY_WITHIN_S
    ) -> dict[str, float]:
        """When each service's running task (with `ROUND=value`, if given) first answered on
        its node address and published port (Unix seconds)."""
        answered: dict[str, float] = {}
        deadline = time.monotonic() + within_s
        while len(answered) < len(service_ids):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(service_ids) - len(answered)} floor services did not answer "
                    f"within {within_s} s"
                )
            tasks = await self.manager.tasks.list(filters={"service": service_ids})
            candidates = {
                task["ServiceID"]: endpoint
                for task in tasks
                if task["ServiceID"] not in answered
                and (endpoint := self._endpoint(task, value)) is not None
            }

            async def check(service_id: str, endpoint: tuple[str, int]) -> None:
                if await probe(endpoint[1], host=endpoint[0], timeout_s=0.5):
                    answered.setdefault(service_id, time.time())

            await asyncio.gather(*(check(s, e) for s, e in candidates.items()))
            await asyncio.sleep(POLL_S)
        return answered

    def _endpoint(self, task: dict[str, Any], value: str | None) -> tuple[str, int] | None:
        status = task.get("Status") or {}
        if status.get("State") != "running" or task.get("DesiredState") != "running":
            return None
        if value is not None:
            env = task["Spec"]["ContainerSpec"].get("Env") or []
            if f"{ROUND}={value}" not in env:
                return None
        ports = (status.get("PortStatus") or {}).get("Ports") or []
        address = self.addresses.get(task.get("NodeID", ""))
        if not ports or address is None:
            return None
        return address, int(ports[0]["PublishedPort"])

    async def stopped(self, service_ids: list[str], within_s: float = READY_WITHIN_S) -> None:
        deadline = time.monotonic() + within_s
        while True:
            tasks = await self.manager.tasks.list(filters={"service": service_ids})
            if not any((t.get("Status") or {}).get("State") == "running" for t in tasks):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"floor services still running after {within_s} s")
            await asyncio.sleep(0.1)


async def measure(run: Run, **plan: Any) -> dict[str, Any]:
    """`plan`: `_measure`'s sizes (iterations, bulk_size, bulk_repeats, survey_sizes,
    survey_repeats)."""
    # The cluster is the tests' own (tests/swarmcluster.py), so the bench builds it the same way.
    sys.path.insert(0, str(REPO / "tests"))
    import swarmcluster

    results: dict[str, Any] = {"load_average": [load_average()], "nodes": NODES}
    began = time.monotonic()
    cluster = await asyncio.to_thread(swarmcluster.up, NODES)
    results["cluster_up_s"] = round(time.monotonic() - began, 1)
    try:
        manager = aiodocker.Docker(url=cluster.manager_url)
        try:
            results.update(await _measure(run, cluster, manager, **plan))
        finally:
            await manager.close()
    finally:
        await asyncio.to_thread(swarmcluster.down, cluster.number)
    results["load_average"].append(load_average())
    return results


async def _measure(
    run: Run,
    cluster: Any,
    manager: aiodocker.Docker,
    *,
    iterations: int,
    bulk_size: int,
    bulk_repeats: int,
    survey_sizes: tuple[int, ...],
    survey_repeats: int,
) -> dict[str, Any]:
    database = await run.database(SCENARIO)
    ports = run.ports(max(survey_sizes) + 16)
    installation = run.installation(SCENARIO)
    operator = OperatorProcess(
        run,
        database,
        installation,
        ports,
        SCENARIO,
        runtime="swarm",
        docker_url=cluster.manager_url,
    )
    await operator.start()
    tether = await Tether.open(database, ports, None, installation)
    addresses = {node.id: node.address for node in cluster.nodes}
    floor = Floor(manager, addresses, run.installation(f"{SCENARIO}-floor"))
    results: dict[str, Any] = {}
    try:
        [write] = await tether.create(["solo"], start=True)
        await tether.converged([write], "Ready", timeout_s=READY_WITHIN_S)
        [service] = await manager.services.list(
            filters={"label": [f"{LABEL_INSTALLATION}={installation}", f"{LABEL_PROJECT}=solo"]}
        )
        floor.template = service["Spec"]
        results["single"] = await _single(run, tether, floor, iterations)
        results["bulk"] = await _bulk(tether, floor, bulk_size, bulk_repeats)
        # The operator stops acting; its proxy stays up (a resync reads the routes).
        await run.stop_child(operator.child)
        settings = Settings(
            database_url=database.dsn(OPERATOR_ROLE),
            installation_id=installation,
            port_range=f"{ports.first}-{ports.last}",
            docker_url=cluster.manager_url,
            runtime="swarm",
            proxy_dir=operator._env["TETHER_PROXY_DIR"],
            proxy_socket=operator._env["TETHER_PROXY_SOCKET"],
        )
        results["survey"] = await _survey(
            tether, floor, settings, survey_sizes, survey_repeats, installation
        )
    finally:
        await tether.close()
        await operator.stop()
    return results


async def _single(run: Run, tether: Tether, floor: Floor, iterations: int) -> dict[str, Any]:
    fresh: dict[str, list[float]] = {"tether": [], "floor": []}
    update: dict[str, list[float]] = {"tether": [], "floor": []}
    solo = await floor.create(floor.spec(f"bench-{run.id}-solo", 1))
    await floor.serving([solo])

    async def tether_fresh(i: int) -> None:
        name = f"fresh-{i}"
        await tether.store.create_project(name, OWNER)
        write = await tether.deploy(name, spec=SPEC)
        ready = (await tether.converged([write], "Ready", timeout_s=READY_WITHIN_S))[name]
        fresh["tether"].append((ready - write.acked) * 1000)
        await tether.destroy(name)
        await tether.gone(name, timeout_s=READY_WITHIN_S)

    async def floor_fresh(i: int) -> None:
        spec = floor.spec(f"bench-{run.id}-fresh-{i}", 1)
        began = time.time()
        service_id = await floor.create(spec)
        ready = (await floor.serving([service_id]))[service_id]
        fresh["floor"].append((ready - began) * 1000)
        await floor.manager.services.delete(service_id)

    async def tether_update(i: int) -> None:
        spec = SPEC.model_copy(update={"env": {ROUND: str(i)}})
        write = await tether.deploy("solo", spec=spec)
        ready = (await tether.converged([write], "Ready", timeout_s=READY_WITHIN_S))["solo"]
        update["tether"].append((ready - write.acked) * 1000)

    async def floor_update(i: int) -> None:
        began = time.time()
        await floor.new_round(solo, str(i))
        ready = (await floor.serving([solo], str(i)))[solo]
        update["floor"].append((ready - began) * 1000)

    for i in range(iterations):
        for pair in ((tether_fresh, floor_fresh), (tether_update, floor_update)):
            for arm in pair if i % 2 == 0 else pair[::-1]:
                await arm(i)
    await floor.manager.services.delete(solo)
    return {"iterations": iterations, "fresh_deploy": fresh, "new_deployment": update}


async def _bulk(tether: Tether, floor: Floor, size: int, repeats: int) -> dict[str, Any]:
    names = [f"bulk-{i:03d}" for i in range(size)]
    writes = await tether.create(names, start=True)
    await tether.converged(writes, "Ready", timeout_s=READY_WITHIN_S)
    await tether.converged(await tether.set_many(names, False), "Stopped", READY_WITHIN_S)
    ids = await bounded(
        CONCURRENCY, names, lambda n: floor.create(floor.spec(f"{floor.owner}-{n}", 1))
    )
    await floor.serving(ids)
    await floor.scale(ids, 0)
    await floor.stopped(ids)
    runs: dict[str, list[float]] = {"tether": [], "floor": []}

    async def tether_arm() -> None:
        began = time.time()
        writes = await tether.set_many(names, True)
        ready = await tether.converged(writes, "Ready", timeout_s=READY_WITHIN_S)
        runs["tether"].append(max(ready.values()) - began)
        await tether.converged(await tether.set_many(names, False), "Stopped", READY_WITHIN_S)

    async def floor_arm() -> None:
        began = time.time()
        await floor.scale(ids, 1)
        ready = await floor.serving(ids)
        runs["floor"].append(max(ready.values()) - began)
        await floor.scale(ids, 0)
        await floor.stopped(ids)

    for r in range(repeats):
        pair: list[Callable[[], Awaitable[None]]] = [tether_arm, floor_arm]
        for arm in pair if r % 2 == 0 else pair[::-1]:
            await arm()
    await bounded(CONCURRENCY, ids, floor.manager.services.delete)
    return {"size": size, "repeats": repeats, "concurrency": CONCURRENCY, "runs": runs}


async def _survey(
    tether: Tether,
    floor: Floor,
    settings: Settings,
    sizes: tuple[int, ...],
    repeats: int,
    installation: str,
) -> dict[str, Any]:
    store = await Store.connect(settings.database_url, settings.ports)
    runtime = swarm_runtime(settings)
    calls: Counter[str] = Counter()
    original = runtime.driver.call

    async def counted(operation: str, call: Callable[[], Awaitable[Any]]) -> Any:
        async def request() -> Any:  # each try is one HTTP request: retries count too
            calls[operation] += 1
            return await call()

        return await original(operation, request)

    runtime.driver.call = counted  # type: ignore[method-assign]
    operator = Operator(settings, store, runtime)
    operator.lease.assume_held()  # a resync run by hand, unfenced
    label = {"label": [f"{LABEL_INSTALLATION}={installation}"]}
    out: dict[str, Any] = {"sizes": list(sizes), "repeats": repeats}
    made = 0
    try:
        for size in sizes:
            have = len(await floor.manager.services.list(filters=label))
            names = [f"s{i:04d}" for i in range(made, made + max(0, size - have))]
            made += len(names)
            began = time.monotonic()
            await tether.create(names, start=False)
            await bounded(
                16,
                names,
                lambda n: floor.create(
                    floor.spec(service_name(installation, n), 0, installation=installation,
                               project=n)
                ),
            )  # fmt: skip
            created_s = time.monotonic() - began
            services = len(await floor.manager.services.list(filters=label))
            tasks = len(await floor.manager.tasks.list())
            await operator.resync()  # warm-up
            samples = []
            for _ in range(repeats):
                calls.clear()
                wall0 = time.perf_counter()
                queued = await operator.resync()
                wall = (time.perf_counter() - wall0) * 1000
                samples.append({"calls": dict(calls), "wall_ms": wall, "queued": queued})
            projects = len(await store.desired_all())
            out[str(size)] = {
                "services": services,
                "projects": projects,
                "tasks": tasks,
                "created": len(names),
                "created_s": round(created_s, 1),
                "samples": samples,
            }
    finally:
        await runtime.close()
        await store.close()
    return out


# The report's section


def _spread(values: list[float]) -> str:
    return (
        f"{percentile(values, 25):,.0f}–{percentile(values, 75):,.0f} "
        f"(min {min(values):,.0f}, max {max(values):,.0f})"
    )


def section(d: Any, data: dict[str, Any], plots: Any, docs: Any) -> None:
    """10. Swarm: write → Ready, 50 projects started, a resync's Docker calls"""
    single, bulk, survey = data["single"], data["bulk"], data["survey"]
    d(
        "## 10. Swarm: write → Ready and 50 projects started vs the Engine API driven directly; "
        "a resync's Docker calls",
        "",
        f"tether's swarm runtime (`TETHER_RUNTIME=swarm`, a `tether operator` process with its "
        f"defaults and `tether proxy`) on a {data['nodes']}-node Swarm built for the run on this "
        "machine (`scripts/swarm-cluster`: one dockerd per network namespace; node1 a drained "
        f"manager, node2 and node3 workers; built in {data['cluster_up_s']} s, torn down after), "
        "against the floor: services of the same spec (tether's, read back from the manager) "
        "driven directly through the manager's Engine API. tether: from the acknowledged write "
        "to the operator's `converged Ready` record (its probe through the task's node address "
        "answered, the proxy routed the endpoint, status written). Floor: from just before the "
        "API call to the first answer of the running task's endpoint at its node address and "
        "published port (its tasks listed every 20 ms, each running task's endpoint probed). "
        "Interleaved run by run, the order alternating. How: bench/scenarios/swarm.py; "
        "rerun this item alone (root, about 10 minutes) with `.venv/bin/python bench/run.py "
        "--only swarm --splice`.",
        "",
    )
    rows = []
    for case, label in (
        ("fresh_deploy", "fresh deploy (floor: `services/create`)"),
        ("new_deployment", "new deployment, changed env (floor: inspect + `services/{id}/update`)"),
    ):
        t, f = single[case]["tether"], single[case]["floor"]
        tm, fm = statistics.median(t), statistics.median(f)
        rows.append(
            [label, f"{tm:,.0f}", _spread(t), f"{fm:,.0f}", _spread(f), f"{ratio(tm, fm):.2f}×"]
        )
    d.table(
        [
            f"one project, ms ({single['iterations']} runs each)",
            "tether median",
            "tether p25–p75",
            "floor median",
            "floor p25–p75",
            "tether / floor",
        ],
        rows,
    )
    d(
        "Where tether's time goes in a fresh deploy: the pass that created the service looks "
        f"again every {RECHECK_S:g} s (`RECHECK_S` in operator/swarm/planner.py) while Swarm "
        "places and starts the task, and Swarm sends no task events, so tether's Ready lands on "
        "that grid: the operator's log of a run shows the create at +0.02 s and looks at +1.0, "
        "+2.0 and +3.0 s, the last one finding the task answering (the floor's answered at "
        "about 2.7 s), hence tether's narrow spread just above 3 s. In a new deployment the "
        "pass looks again after 1 s and then every 0.1 s while the service is `updating` (its "
        "log shows it), so Ready follows the new task's first answer closely. Looking again "
        "sooner while a task is starting (a task list every 0.1–0.2 s, as the floor polls) would "
        "take most of the fresh deploy's gap out; not done here.",
        "",
    )
    runs = bulk["runs"]
    each = [ratio(t, f) for t, f in zip(runs["tether"], runs["floor"], strict=False)]
    d.table(
        [f"{bulk['size']} projects stopped → running, s", "tether", "floor", "tether / floor"],
        [
            [f"repetition {i + 1}", f"{t:.1f}", f"{f:.1f}", f"{ratio(t, f):.2f}×"]
            for i, (t, f) in enumerate(zip(runs["tether"], runs["floor"], strict=False))
        ]
        + [
            [
                "median",
                f"{statistics.median(runs['tether']):.1f}",
                f"{statistics.median(runs['floor']):.1f}",
                f"{statistics.median(each):.2f}× ({min(each):.2f}–{max(each):.2f})",
            ]
        ],
    )
    d(
        f"Floor: one service list (for the versions), then {bulk['size']} scale updates "
        f"(replicas 0 → 1), {bulk['concurrency']} at a time like tether's "
        f"{bulk['concurrency']} workers, until every endpoint answered; tether: "
        f"{bulk['size']} desired-state writes, {bulk['concurrency']} at a time, until every "
        "project recorded Ready.",
        "",
    )
    rows, counts = [], {}
    for size in survey["sizes"]:
        at = survey[str(size)]
        per = [sum(s["calls"].values()) for s in at["samples"]]
        counts[size] = max(per)
        ops = Counter[str]()
        for s in at["samples"]:
            ops.update(s["calls"])
        by_op = ", ".join(f"{op} {n // len(at['samples'])}" for op, n in sorted(ops.items()))
        rows.append(
            [
                f"{at['services']:,}",
                f"{at['projects']:,}",
                f"{at['tasks']:,}",
                " / ".join(str(n) for n in per),
                by_op,
                f"{statistics.median([s['wall_ms'] for s in at['samples']]):,.0f}",
                " / ".join(str(s["queued"]) for s in at["samples"]),
                f"{at['created']:,} in {at['created_s']} s",
            ]
        )
    d.table(
        [
            "services",
            "projects",
            "tasks in the cluster",
            "Docker calls per resync",
            "by operation",
            "resync wall ms, median",
            "projects queued",
            "services created for it",
        ],
        rows,
    )
    small, large = min(counts), max(counts)
    mark = d.target(
        "10. swarm",
        f"a resync's Docker calls at {large:,} services vs {small:,}",
        f"{counts[large]} vs {counts[small]}",
        "the same",
        counts[large] == counts[small],
    )
    d(
        f"A resync's Docker calls, counted at `SwarmDriver.call` (every HTTP request the swarm "
        f"driver makes) over {survey['repeats']} resyncs at each size after a warm-up: "
        f"{counts[small]} at {small:,} services, {counts[large]} at {large:,} ({mark}). The "
        "resync ran in the bench's process (`Operator.resync()` on the runtime `tether "
        "operator` builds, the operator process stopped, its proxy still up); the projects "
        "are desired stopped and their services (tether's spec, replicas 0) were created "
        "directly on the manager. Those projects were never passed by an operator (no status "
        "yet), so each resync queues them (the queue is not worked here): queuing costs no "
        "Docker call; the passes that would follow are one project's calls each, as under any "
        "runtime.",
        "",
    )
    before, after = data["load_average"]
    d(
        f"Load average (1, 5, 15 min) before: {' '.join(before)}; after: {' '.join(after)} "
        "(2 cores, shared with the 3 nodes' dockerds and other sessions' work).",
        "",
    )
