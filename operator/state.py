"""What a reconcile pass knows: the desired state of one project and what Docker shows of it.

No external calls or any I/O activities are done here: plain values, built by the reconciler from
the store and the Docker driver, read by the planner.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime

from tether.api.models import Deployment

LABEL_PROJECT = "dev.tether.project"
LABEL_VERSION = "dev.tether.deployment"
LABEL_SPEC_HASH = "dev.tether.spec-hash"
LABEL_RESTART = "dev.tether.restart-token"
LABEL_INSTALLATION = "dev.tether.installation"

# Docker's container states that are on their way somewhere: wait and look again.
TRANSITIONAL = frozenset({"removing", "restarting"})


def spec_hash(deployment: Deployment, host_port: int, publish_address: str) -> str:
    """Identifies everything a container is created from, so a changed spec is never adopted."""
    # Marking a key secret changes nothing a container is created from.
    spec = deployment.model_dump(mode="json", exclude={"created_by", "created_at", "secret_env"})
    spec["endpoint"] = [publish_address, host_port]
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    return digest[:16]


@dataclass(frozen=True)
class Container:
    """One of the project's containers as `docker inspect` shows it, and the labels tether set."""

    id: str
    name: str
    state: str
    version: int
    restart_token: int
    spec_hash: str
    exit_code: int | None = None
    oom_killed: bool = False
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True)
class Want:
    """The deployment a project should be running, and how to recognise its container."""

    deployment: Deployment
    spec_hash: str
    restart_token: int | None  # None: any token will do (a fallback deployment)
    container_name: str

    @property
    def version(self) -> int:
        return self.deployment.version

    def matches(self, container: Container) -> bool:
        return (
            container.version == self.version
            and container.spec_hash == self.spec_hash
            and (self.restart_token is None or container.restart_token == self.restart_token)
        )


@dataclass(frozen=True)
class Desired:
    name: str
    generation: int
    running: bool
    deleting: bool
    target: Want | None
    fallback: Want | None  # the deployment last seen Ready: where a failed rollout goes back to
    changed_at: datetime  # the last desired change: exits before it are not crashes


@dataclass(frozen=True)
class Memory:
    """What earlier passes recorded in status, which Docker does not remember for us."""

    crash_count: int = 0
    last_crash_at: datetime | None = None
    failed_version: int | None = None
    ready_container: str | None = None  # the container last seen Ready
    # Containers Docker failed to start again and again (an engine restart can leave one so):
    # disposable, so replaced by a fresh one. Kept by the operator process, not in status.
    unstartable: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Observed:
    containers: tuple[Container, ...]
    now: datetime
    healthy: dict[str, bool] = field(default_factory=dict)  # container id → endpoint answered
