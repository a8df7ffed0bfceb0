"""What Docker's answers say, as the engine runtime's values."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tether.operator.dockertime import parse_time
from tether.operator.engine.state import Container, Summary, VolumeSeen
from tether.operator.labels import (
    LABEL_OWNER,
    LABEL_PROJECT,
    LABEL_RESTART,
    LABEL_SPEC_HASH,
    LABEL_VERSION,
    LABEL_VOLUME,
)


def int_label(labels: dict[str, str], key: str) -> int:
    try:
        return int(labels.get(key, "-1"))
    except ValueError:
        return -1


def _published(ports: dict[str, Any] | None) -> str | None:
    """Where `docker inspect` says the container's TCP port is published (tether publishes
    one, on loopback): `127.0.0.1:32768`."""
    for name, bindings in (ports or {}).items():
        for binding in bindings or []:
            if name.endswith("/tcp") and binding.get("HostPort"):
                return f"{binding.get('HostIp') or '127.0.0.1'}:{binding['HostPort']}"
    return None


def container_from_inspect(data: dict[str, Any]) -> Container:
    labels = data["Config"].get("Labels") or {}
    state = data["State"]
    return Container(
        id=data["Id"],
        name=data["Name"].lstrip("/"),
        state=state["Status"],
        version=int_label(labels, LABEL_VERSION),
        restart_token=int_label(labels, LABEL_RESTART),
        spec_hash=labels.get(LABEL_SPEC_HASH, ""),
        exit_code=state.get("ExitCode"),
        oom_killed=bool(state.get("OOMKilled")),
        upstream=_published((data.get("NetworkSettings") or {}).get("Ports")),
        created_at=parse_time(data.get("Created")),
        started_at=parse_time(state.get("StartedAt")),
        finished_at=parse_time(state.get("FinishedAt")),
        mounts=tuple(
            m["Name"] for m in data.get("Mounts") or [] if m.get("Type") == "volume" and "Name" in m
        ),
    )


def volume_from_list(raw: dict[str, Any]) -> VolumeSeen:
    """A volume as `GET /volumes` lists it."""
    labels = raw.get("Labels") or {}
    created = raw.get("CreatedAt")
    return VolumeSeen(
        docker_name=raw["Name"],
        name=labels.get(LABEL_VOLUME, ""),
        created_at=datetime.fromisoformat(created).astimezone(UTC) if created else None,
        owner=labels.get(LABEL_OWNER, ""),
        project=labels.get(LABEL_PROJECT, ""),
    )


def summary_from_list(raw: dict[str, Any]) -> Summary:
    """A container as `GET /containers/json` lists it."""
    labels = raw.get("Labels") or {}
    return Summary(
        id=raw["Id"],
        project=labels.get(LABEL_PROJECT, ""),
        state=raw.get("State", ""),
        version=int_label(labels, LABEL_VERSION),
        spec_hash=labels.get(LABEL_SPEC_HASH, ""),
        restart_token=int_label(labels, LABEL_RESTART),
        upstream=next(
            (
                f"{p.get('IP') or '127.0.0.1'}:{p['PublicPort']}"
                for p in raw.get("Ports") or []
                if p.get("Type") == "tcp" and p.get("PublicPort")
            ),
            None,
        ),
    )
