"""Ready means the endpoint answers: what both runtimes' planners decide, in the same words, about
a workload that runs while its endpoint does not answer (not yet, or not any more), and about a
rollout that missed its Ready deadline.

No external calls or any I/O activities are done here.
"""

from __future__ import annotations

from tether.api.models import Phase
from tether.operator.desired import Desired, Memory, Want
from tether.operator.runtime import Decision, FailRollout, Workload

HEALTH_RECHECK_MIN_S = 0.05


def first_probe_delay(running_s: float, interval_s: float) -> float:
    """When to probe a starting endpoint again, `running_s` after its workload started: soon
    at first (most answer within a second), backing off to the health check's interval."""
    return min(interval_s, max(HEALTH_RECHECK_MIN_S, running_s / 4))


def probe_interval(want: Want) -> float:
    """How often a running workload's endpoint is probed again: its health check's interval."""
    health = want.deployment.health
    return health.interval_s if health else 1.0


def awaiting_endpoint(
    want: Want,
    memory: Memory,
    workload: Workload,
    waited_s: float,
    running_s: float,
    *,
    endpoint_pending: bool = False,
) -> Decision:
    """The workload runs, `running_s` since it started; its first answer is awaited, `waited_s`
    of its Ready deadline gone."""
    deadline = want.deployment.ready_deadline_s
    return Decision(
        None,
        Phase.STARTING,
        False,
        "HealthCheckPending",
        f"v{want.version} is running, waiting for its endpoint ({waited_s:.0f}/{deadline} s)",
        memory,
        requeue_after=first_probe_delay(running_s, probe_interval(want)),
        workload=workload,
        endpoint_pending=endpoint_pending,
    )


def no_longer_answers(
    want: Want, memory: Memory, workload: Workload, *, endpoint_pending: bool = False
) -> Decision:
    """The workload was Ready, and its endpoint does not answer any more."""
    return Decision(
        None,
        Phase.UNHEALTHY,
        False,
        "Unhealthy",
        f"v{want.version} was ready, but its endpoint no longer answers",
        memory,
        requeue_after=probe_interval(want),
        workload=workload,
        endpoint_pending=endpoint_pending,
    )


def never_answered(want: Want, memory: Memory, workload: Workload, waited_s: float) -> Decision:
    """The workload runs past its Ready deadline, its endpoint silent, and there is nothing to go
    back to: stalled, still probed."""
    return Decision(
        None,
        Phase.UNHEALTHY,
        False,
        "Unhealthy",
        f"v{want.version} is running but its endpoint does not answer (for {waited_s:.0f} s)",
        memory,
        requeue_after=probe_interval(want),
        stalled=True,
        workload=workload,
    )


def rollout_failed(
    desired: Desired, want: Want, memory: Memory, what: str, workload: Workload | None = None
) -> Decision:
    """The target `want` did not get Ready (`what` it did, in words): back to the fallback."""
    assert desired.fallback is not None
    return Decision(
        FailRollout(want.version),
        Phase.ROLLING_BACK,
        False,
        "RolloutFailed",
        f"v{want.version} {what}; going back to v{desired.fallback.version}",
        memory,
        workload=workload,
    )
