"""What the runtimes' planner property tests share (tests/unit/test_planner.py for the engine,
test_swarm_planner.py for Swarm): each drives its planner against a model of its runtime from
random observed states until it rests, and checks the same few things of the end.

Pure: no Docker, no Postgres, no event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import replace
from typing import Any, Protocol, TypeVar

import hypothesis

from tether.operator.desired import Desired, Memory
from tether.operator.runtime import Decision, Finalize


class Probed(Protocol):
    """A runtime's observed state: its workloads' endpoints, probed, by workload id."""

    healthy: dict[str, bool]


ObservedT = TypeVar("ObservedT", bound=Probed)

# A whole convergence run per example: no deadline per example, none of hypothesis's stored
# examples, and its runs may be slow (hundreds of planned steps each).
CONVERGING = hypothesis.settings(
    deadline=None,
    database=None,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
)
# One plan per example.
PLANNING = hypothesis.settings(deadline=None, database=None)


def event(value: str, payload: str | int | float = "") -> None:
    """Tally for `--hypothesis-show-statistics`; the sequence tests run the model outside it."""
    if hypothesis.currently_in_test_context():
        hypothesis.event(value, payload)


def deleted(decision: Decision, desired: Desired, left: Collection[Any]) -> bool:
    """Whether the run was a deletion, which ended finalized with nothing `left` of what the
    project ran (anything else never finalizes)."""
    if desired.deleting:
        assert isinstance(decision.action, Finalize), decision
        assert not left, left
        return True
    assert not isinstance(decision.action, Finalize), decision
    return False


def plans_nothing(
    plan: Callable[[Desired, ObservedT, Memory], Decision],
    desired: Desired,
    observed: ObservedT,
    memory: Memory,
    scenario: object,
) -> None:
    """What the resync found at rest, the planner finds nothing to do about (with every probed
    endpoint Ready, as the last pass found it: the resync probes settled endpoints itself)."""
    settled = replace(observed, healthy=dict.fromkeys(observed.healthy, True))
    decision = plan(desired, settled, memory)
    assert decision.action is None, (decision, scenario)
    assert not decision.stalled
