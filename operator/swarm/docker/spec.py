"""The Swarm service spec tether writes for a deployment, and the fingerprint that tells whether
a service still has it (or was edited outside tether).

No external calls or any I/O activities are done here: dictionaries in the Engine API's shape
(`POST /services/create`, `POST /services/{id}/update`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from tether.api.models import Deployment, HealthCheck
from tether.operator.desired import Volume, Want
from tether.operator.labels import (
    LABEL_INSTALLATION,
    LABEL_OWNER,
    LABEL_PROJECT,
    LABEL_RESTART,
    LABEL_SPEC_HASH,
    LABEL_VERSION,
    LABEL_VOLUME,
)

LABEL_TEMPLATE = "dev.tether.template"  # the fingerprint of the task template tether wrote
# On a service: the id of the node that holds the project's volumes, the node its placement
# constraint names. Kept in the spec, so that every pass reads it back and no restart loses it.
LABEL_VOLUME_NODE = "dev.tether.volume-node"


@dataclass(frozen=True)
class Placement:
    """Where a service's task mounts the project's volumes, and the node it is pinned to."""

    installation: str
    project: str
    owner: str
    volumes: tuple[Volume, ...]  # the project's volumes the deployment mounts
    node: str = ""  # the node that holds them ("" while no task has mounted them yet)


NS = 1_000_000_000
# How long Swarm watches a new task after it starts before its update goes on; a task that
# fails meanwhile rolls the update back.
MONITOR_S = 5
# Swarm's own health check runs every this often at least: tether's probe (paced from 50 ms)
# finds the new task answering first and moves the route before Swarm stops the old task.
MIN_CHECK_INTERVAL_S = 1.0
CHECK_RETRIES = 3


def service_name(installation: str, project: str) -> str:
    return f"tether-{project}" if installation == "default" else f"tether-{installation}-{project}"


def project_of(name: str, installation: str) -> str | None:
    """The project a service of this installation's name belongs to (None: not one of ours)."""
    prefix = "tether-" if installation == "default" else f"tether-{installation}-"
    project = name.removeprefix(prefix)
    return project if project != name and project else None


def _healthcheck(check: HealthCheck, port: int, deadline_s: int) -> dict[str, Any]:
    """Swarm's view of the deployment's check, run inside the task's container (the image must
    have `wget` for an HTTP check, `nc` for a TCP one, as busybox does)."""
    if check.type == "http":
        test = ["CMD", "wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{port}{check.path}"]
    else:
        test = ["CMD-SHELL", f"nc -w {max(1, round(check.timeout_s))} 127.0.0.1 {port} </dev/null"]
    return {
        "Test": test,
        "Interval": int(max(check.interval_s, MIN_CHECK_INTERVAL_S) * NS),
        "Timeout": int(check.timeout_s * NS),
        "Retries": CHECK_RETRIES,
        # Failures while tether still waits for it (the ready deadline) do not count.
        "StartPeriod": deadline_s * NS,
    }


def _mounts(want: Want, placement: Placement) -> list[dict[str, Any]]:
    """Named volumes, which Swarm creates on the node the task runs on (labelled as the engine
    runtime labels its own) the first time a task there mounts them."""
    paths = {v.name: v for v in want.deployment.volumes}
    return [
        {
            "Type": "volume",
            "Source": volume.docker_name,
            "Target": paths[volume.name].path,
            "ReadOnly": paths[volume.name].read_only,
            "VolumeOptions": {
                "Labels": {
                    LABEL_INSTALLATION: placement.installation,
                    LABEL_PROJECT: placement.project,
                    LABEL_VOLUME: volume.name,
                    LABEL_OWNER: placement.owner,
                }
            },
        }
        for volume in placement.volumes
        if volume.name in paths
    ]


def task_template(want: Want, labels: dict[str, str], placement: Placement) -> dict[str, Any]:
    spec: Deployment = want.deployment
    container: dict[str, Any] = {
        "Image": spec.image,
        "Env": [f"{key}={value}" for key, value in spec.env.items()],
        "Labels": labels,
        "StopGracePeriod": spec.stop_grace_s * NS,
    }
    if mounts := _mounts(want, placement):
        container["Mounts"] = mounts
    if spec.command is not None:
        container["Args"] = spec.command  # as `docker run IMAGE CMD...`: the entrypoint stays
    if spec.health is not None and spec.port is not None:
        container["Healthcheck"] = _healthcheck(spec.health, spec.port, spec.ready_deadline_s)
    limits: dict[str, int] = {}
    if spec.memory_mb is not None:
        limits["MemoryBytes"] = spec.memory_mb * 1024 * 1024
    if spec.cpus is not None:
        limits["NanoCPUs"] = int(spec.cpus * 1e9)
    template: dict[str, Any] = {
        "ContainerSpec": container,
        "Resources": {"Limits": limits},
        # Swarm restarts a task that exits; tether watches and reports.
        "RestartPolicy": {"Condition": "any", "Delay": 1 * NS, "MaxAttempts": 0},
        # A restart is a new restart token: a changed template, so Swarm replaces the task.
        "ForceUpdate": want.restart_token or 0,
    }
    if placement.node:
        # The volumes live on this node alone: a task anywhere else would start on empty ones.
        template["Placement"] = {"Constraints": [f"node.id=={placement.node}"]}
    return template


def service_spec(
    installation: str, project: str, want: Want, replicas: int, placement: Placement
) -> dict[str, Any]:
    """The whole service spec for `want` at `replicas`, mounting and pinned as `placement` says."""
    spec = want.deployment
    labels = {
        LABEL_INSTALLATION: installation,
        LABEL_PROJECT: project,
        LABEL_VERSION: str(spec.version),
        LABEL_SPEC_HASH: want.spec_hash,
        LABEL_RESTART: str(want.restart_token or 0),
    }
    template = task_template(want, labels, placement)
    order = "stop-first" if spec.strategy == "stop-first" else "start-first"
    update = {
        "Parallelism": 1,
        "Order": order,
        "FailureAction": "rollback",
        "Monitor": MONITOR_S * NS,
        "MaxFailureRatio": 0,
    }
    ports = []
    if spec.port is not None:
        # Host mode (the routing mesh needs IPVS, which these machines lack), on a port Docker
        # chooses: a start-first update on one node cannot start on a fixed port (moby#36934).
        ports = [{"Protocol": "tcp", "TargetPort": spec.port, "PublishMode": "host"}]
    pinned = {LABEL_VOLUME_NODE: placement.node} if placement.node else {}
    return {
        "Name": service_name(installation, project),
        "Labels": {**labels, **pinned, LABEL_TEMPLATE: fingerprint(template, ports)},
        "TaskTemplate": template,
        "Mode": {"Replicated": {"Replicas": replicas}},
        "UpdateConfig": update,
        "RollbackConfig": {**update, "FailureAction": "pause"},
        "EndpointSpec": {"Mode": "vip", "Ports": ports},
    }


def fingerprint(template: dict[str, Any], ports: list[dict[str, Any]]) -> str:
    """What tether sets in a task template and its ports, as a short hash: taken of the spec it
    writes and of the spec Swarm shows (which adds defaults of its own), so the two agree
    exactly when nobody changed what tether wrote."""
    container = template.get("ContainerSpec") or {}
    limits = (template.get("Resources") or {}).get("Limits") or {}
    check = container.get("Healthcheck") or {}
    image = str(container.get("Image", ""))
    shown = {
        # Swarm may pin the tag it resolved to a digest: the same image.
        "image": image.split("@", 1)[0] if "@" in image else image,
        "env": sorted(container.get("Env") or []),
        "args": container.get("Args") or [],
        "command": container.get("Command") or [],
        "check": [check.get(k) for k in ("Test", "Interval", "Timeout", "Retries")],
        "limits": [limits.get("MemoryBytes", 0), limits.get("NanoCPUs", 0)],
        "force": template.get("ForceUpdate", 0),
        "ports": sorted(
            (p.get("TargetPort"), p.get("PublishMode", "ingress"), p.get("PublishedPort", 0))
            for p in ports
        ),
    }
    # Only when set: a service written before volumes existed keeps its fingerprint.
    mounts = sorted(
        (m.get("Type"), m.get("Source"), m.get("Target"), bool(m.get("ReadOnly")))
        for m in container.get("Mounts") or []
    )
    if mounts:
        shown["mounts"] = mounts
    if constraints := sorted((template.get("Placement") or {}).get("Constraints") or []):
        shown["constraints"] = constraints
    return hashlib.sha256(json.dumps(shown, sort_keys=True).encode()).hexdigest()[:16]
