"""The words of the desired-state contract, without pydantic: names, states, conditions, events.

`tether.api.models` builds the API's models from them; the CLI reads the API's JSON with them
directly (`tether.cli.views`), which keeps pydantic out of the client commands.
"""

from __future__ import annotations

from enum import StrEnum

PROJECT_NAME_PATTERN = r"^[a-z][a-z0-9-]{0,62}$"


class DesiredState(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"


class ConditionType(StrEnum):
    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"


class Phase(StrEnum):
    """Where a project is on its way to what is desired, for display; the conditions say whether
    it got there."""

    PENDING = "Pending"
    WAITING = "Waiting"
    CREATING = "Creating"
    STARTING = "Starting"
    RUNNING = "Running"
    UNHEALTHY = "Unhealthy"
    CRASH_LOOP = "CrashLoop"
    REPLACING = "Replacing"
    ROLLING_BACK = "RollingBack"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    DELETING = "Deleting"
    RETRYING = "Retrying"
    STALLED = "Stalled"


class EventKind(StrEnum):
    DESIRED = "desired"
    ACTION = "action"
    REFUSED = "refused"
    HEALTH = "health"
    CONVERGED = "converged"
    GAVE_UP = "gave_up"
    ROUTED = "routed"  # the endpoint's route set: to a Ready container, or held
    DRAINING = "draining"  # the container that served is finishing what it has in flight
    DRAINED = "drained"  # ... and is stopped


class WebhookEvent(StrEnum):
    """What a webhook can be told of (the database's `webhook_event_type` maps events to them)."""

    CONVERGED = "converged"  # Ready (or stopped) as desired, after a change
    ROLLOUT_FAILED = "rollout_failed"  # a new deployment was not Ready in time: the old one serves
    STALLED = "stalled"  # the operator gave up until the desired state changes
    CRASH_LOOP = "crash_loop"  # the container exited on its own (count, exit code, OOM)
    DRIFT_REPAIRED = "drift_repaired"  # a converged project was changed outside tether: undone
    DELETED = "deleted"  # the project and its containers are gone


class DeliveryState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # not delivered within the give-up time
