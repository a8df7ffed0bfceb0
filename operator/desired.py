"""What a project should be: its desired state as a pass sees it, whichever runtime runs it.

No external calls or any I/O activities are done here: plain values built from the store's
snapshot, read by the runtimes' planners.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from tether.api.models import ConditionType, Deployment, DesiredSnapshot


class Labelled(Protocol):
    """Something a runtime runs, as far as its tether labels tell which desire it serves."""

    @property
    def version(self) -> int: ...
    @property
    def spec_hash(self) -> str: ...
    @property
    def restart_token(self) -> int: ...


def spec_hash(deployment: Deployment) -> str:
    """Identifies everything a workload is created from, so a changed spec is never adopted.
    The stable endpoint is not part of it: the proxy owns it, and a workload only publishes its
    port where the proxy reaches it."""
    # Each resync rebuilds every project's desired state, and hashing was a tenth of an idle
    # operator's Python time (docs/benchmarks.md, idle): the hash is kept for the deployment it
    # was made from, and used again for one equal to it (a compare of fields, not an encoding).
    key = (deployment.project, deployment.version)
    known = _SPEC_HASHES.get(key)
    if known is not None and known[0] == deployment:
        return known[1]
    digest = _hash_spec(deployment)
    if known is None and len(_SPEC_HASHES) >= SPEC_HASHES_KEPT:
        del _SPEC_HASHES[next(iter(_SPEC_HASHES))]  # the oldest: any one would do
    _SPEC_HASHES[key] = (deployment, digest)
    return digest


# A target and a fallback for each of 10,000 projects, the most the benchmark grows to.
SPEC_HASHES_KEPT = 20_000
_SPEC_HASHES: dict[tuple[str, int], tuple[Deployment, str]] = {}


def _hash_spec(deployment: Deployment) -> str:
    # Marking a key secret changes nothing a workload is created from.
    exclude = {"created_by", "created_at", "secret_env"}
    if not deployment.volumes:
        exclude.add("volumes")  # what ran before volumes existed keeps its hash, so is adopted
    spec = deployment.model_dump(mode="json", exclude=exclude)
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    return digest[:16]


def workload_name(installation: str, project: str, version: int, restart_token: int) -> str:
    prefix = "tether-" if installation == "default" else f"tether-{installation}-"
    return f"{prefix}{project}-v{version}-r{restart_token}"


def volume_name(installation: str, project: str, volume: str) -> str:
    """The Docker volume of a project's volume. '.' appears in none of the three names, so no two
    installations, projects or volumes share one."""
    return f"tether.{installation}.{project}.{volume}"


@dataclass(frozen=True)
class Volume:
    """A named volume a wanted deployment mounts: the project's, in Docker as `docker_name`."""

    name: str
    docker_name: str


@dataclass(frozen=True)
class Want:
    """The deployment a project should be running, and how to recognise what runs it."""

    deployment: Deployment
    spec_hash: str
    restart_token: int | None  # None: any token will do (a fallback deployment)
    name: str  # of the container (or service) that runs it

    @property
    def version(self) -> int:
        return self.deployment.version

    def matches(self, workload: Labelled) -> bool:
        return (
            workload.version == self.version
            and workload.spec_hash == self.spec_hash
            and (self.restart_token is None or workload.restart_token == self.restart_token)
        )


@dataclass(frozen=True)
class Desired:
    name: str
    generation: int
    running: bool
    deleting: bool
    host_port: int
    target: Want | None
    fallback: Want | None  # the deployment last seen Ready: where a failed rollout goes back to
    changed_at: datetime  # the last desired change: exits before it are not crashes
    owner: str = ""
    # The project's volumes that the target or the fallback mounts: created before a container
    # that mounts them, never removed by a pass. Where they live pins where the project runs.
    volumes: tuple[Volume, ...] = ()
    # The deletion asked for removes the project's volumes too, once its workloads are gone.
    delete_volumes: bool = False

    def volumes_of(self, want: Want) -> tuple[Volume, ...]:
        names = {v.name for v in want.deployment.volumes}
        return tuple(v for v in self.volumes if v.name in names)


@dataclass(frozen=True)
class Memory:
    """What earlier passes recorded in status, which the runtime does not remember for us."""

    crash_count: int = 0
    last_crash_at: datetime | None = None
    failed_version: int | None = None
    ready_container: str | None = None  # the workload last seen Ready
    # How the last crash ended: kept when the crashed container is restarted in the same pass.
    last_exit_code: int | None = None
    oom_killed: bool = False


def build_desired(snapshot: DesiredSnapshot, installation: str) -> Desired:
    project = snapshot.project

    def want(deployment: Deployment, restart_token: int | None) -> Want:
        return Want(
            deployment=deployment,
            spec_hash=spec_hash(deployment),
            restart_token=restart_token,
            name=workload_name(
                installation, project.name, deployment.version, project.restart_token
            ),
        )

    target = want(snapshot.target, project.restart_token) if snapshot.target else None
    running = snapshot.running
    fallback = (
        want(running, None)
        if running is not None and (target is None or running.version != target.version)
        else None
    )
    mounted = {
        v.name: Volume(v.name, volume_name(installation, project.name, v.name))
        for w in (target, fallback)
        if w is not None
        for v in w.deployment.volumes
    }
    return Desired(
        owner=project.owner,
        volumes=tuple(mounted[name] for name in sorted(mounted)),
        delete_volumes=project.delete_volumes,
        name=project.name,
        generation=project.generation,
        running=project.desired_state == "running",
        deleting=project.deletion_requested,
        host_port=project.host_port,
        target=target,
        fallback=fallback,
        changed_at=project.updated_at,
    )


def memory_of(snapshot: DesiredSnapshot) -> Memory:
    status = snapshot.status
    if status is None:
        return Memory()
    same_generation = status.observed_generation == snapshot.project.generation
    return Memory(
        # A new desire (a deploy, a start after a stop) starts without the old crash backoff.
        crash_count=status.crash_count if same_generation else 0,
        last_crash_at=status.last_crash_at,
        failed_version=status.failed_version if same_generation else None,
        ready_container=status.ready_container_id,
        last_exit_code=status.last_exit_code,
        oom_killed=status.oom_killed,
    )


def effective_want(desired: Desired, memory: Memory) -> Want | None:
    """The target, unless its rollout failed at this generation: then the fallback."""
    target = desired.target
    if (
        target is not None
        and memory.failed_version == target.version
        and desired.fallback is not None
    ):
        return desired.fallback
    return target


def describe_desired(desired: Desired, memory: Memory) -> str:
    if desired.deleting:
        return "deleted"
    if not desired.running:
        return "stopped"
    want = effective_want(desired, memory)
    return f"running v{want.version}" if want else "running"


def status_settled(desired: Desired, snapshot: DesiredSnapshot) -> bool:
    """Whether the last pass found this very desire converged: the half of "at rest" that
    status tells; the runtime's survey tells the other half."""
    status = snapshot.status
    if status is None or status.observed_generation != desired.generation:
        return False
    reconciling = status.condition(ConditionType.RECONCILING)
    return reconciling is not None and reconciling.status == "False"
