"""What the Swarm manager's answers say, as the swarm runtime's values."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

from tether.operator.dockertime import parse_time
from tether.operator.labels import LABEL_RESTART, LABEL_SPEC_HASH, LABEL_VERSION
from tether.operator.swarm.docker.spec import LABEL_TEMPLATE, LABEL_VOLUME_NODE, fingerprint
from tether.operator.swarm.state import Labels, Node, Service, Task, UpdateState

_UPDATE_STATES = {
    "updating",
    "paused",
    "completed",
    "rollback_started",
    "rollback_paused",
    "rollback_completed",
}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _int(labels: Mapping[str, str], key: str) -> int:
    try:
        return int(labels.get(key, "-1"))
    except ValueError:
        return -1


def _labels(labels: Mapping[str, str]) -> Labels:
    return Labels(
        _int(labels, LABEL_VERSION), labels.get(LABEL_SPEC_HASH, ""), _int(labels, LABEL_RESTART)
    )


def _edited(spec: Mapping[str, Any]) -> bool:
    template = spec.get("TaskTemplate") or {}
    ports = (spec.get("EndpointSpec") or {}).get("Ports") or []
    written = (spec.get("Labels") or {}).get(LABEL_TEMPLATE)
    return written != fingerprint(dict(template), list(ports))


def service_from(raw: Mapping[str, Any]) -> Service:
    """A service as `GET /services` lists it."""
    spec = raw.get("Spec") or {}
    labels = _labels(spec.get("Labels") or {})
    previous = raw.get("PreviousSpec")
    update = raw.get("UpdateStatus") or {}
    state = update.get("State")
    replicas = ((spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas", 0)
    return Service(
        id=raw["ID"],
        name=spec.get("Name", ""),
        index=int((raw.get("Version") or {}).get("Index", 0)),
        version=labels.version,
        spec_hash=labels.spec_hash,
        restart_token=labels.restart_token,
        replicas=int(replicas),
        edited=_edited(spec),
        update_state=cast(UpdateState, state) if state in _UPDATE_STATES else None,
        update_message=str(update.get("Message", "")),
        previous=_labels(previous.get("Labels") or {}) if previous else None,
        updated_at=parse_time(raw.get("UpdatedAt")),
        volume_node=str((spec.get("Labels") or {}).get(LABEL_VOLUME_NODE, "")),
    )


def node_from(raw: Mapping[str, Any]) -> Node:
    """A node as `GET /nodes` lists it."""
    status = raw.get("Status") or {}
    spec = raw.get("Spec") or {}
    address = status.get("Addr", "")
    manager = raw.get("ManagerStatus") or {}
    if address in ("", "0.0.0.0") and manager.get("Addr"):
        # A manager may report 0.0.0.0 as its own address: its advertised one is in its status
        address = str(manager["Addr"]).rpartition(":")[0]
    return Node(
        id=raw["ID"],
        hostname=(raw.get("Description") or {}).get("Hostname", ""),
        address=address,
        state=status.get("State", "unknown"),
        availability=spec.get("Availability", "active"),
        role=spec.get("Role", "worker"),
    )


def task_from(raw: Mapping[str, Any], nodes: Mapping[str, Node]) -> Task:
    """A task as `GET /tasks` lists it; its upstream is its node's address and the port Swarm
    published its container's port on."""
    status = raw.get("Status") or {}
    labels = _labels(((raw.get("Spec") or {}).get("ContainerSpec") or {}).get("Labels") or {})
    node_id = raw.get("NodeID", "") or ""
    node = nodes.get(node_id)
    published = [
        p.get("PublishedPort")
        for p in (status.get("PortStatus") or {}).get("Ports") or []
        if p.get("Protocol", "tcp") == "tcp" and p.get("PublishedPort")
    ]
    upstream = f"{node.address}:{published[0]}" if node is not None and published else None
    container = status.get("ContainerStatus") or {}
    return Task(
        id=raw["ID"],
        service_id=raw.get("ServiceID", ""),
        node_id=node_id,
        state=status.get("State", "new"),
        desired_state=raw.get("DesiredState", "running"),
        version=labels.version,
        spec_hash=labels.spec_hash,
        restart_token=labels.restart_token,
        since=parse_time(status.get("Timestamp")) or EPOCH,
        upstream=upstream,
        error=str(status.get("Err", "")),
        message=str(status.get("Message", "")),
        exit_code=container.get("ExitCode")
        if status.get("State") in ("failed", "complete")
        else None,
        created_at=parse_time(raw.get("CreatedAt")),
        slot=int(raw.get("Slot") or 0),
    )
