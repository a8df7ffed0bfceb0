"""What a pass says happened to a project on its own (crash, drift repaired), the events webhooks
are told of; and tether's signatures, checked against the Standard Webhooks reference library."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import standardwebhooks

from tether.api.models import Condition, ConditionType, EventKind, Status
from tether.operator.status import outside_changes
from tether.operator.webhooks.signing import headers, signature

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def at_rest(generation: int = 3, **fields: object) -> Status:
    def condition(kind: ConditionType, value: str) -> Condition:
        return Condition(
            type=kind,
            status=value,
            reason="Ready",
            message="",
            last_transition_time=NOW,
            observed_generation=generation,
        )

    return Status(
        project="shop",
        observed_generation=generation,
        phase="Running",
        conditions=[
            condition(ConditionType.READY, "True"),
            condition(ConditionType.RECONCILING, "False"),
            condition(ConditionType.STALLED, "False"),
        ],
        **fields,
    )


def test_a_new_crash_is_told_with_its_count_exit_code_and_oom_kill() -> None:
    crashed = at_rest(crash_count=3, last_exit_code=137, oom_killed=True, last_crash_at=NOW)
    [event] = outside_changes(at_rest(), crashed, ["start v1"], "v1 exited")
    assert (event.kind, event.reason) == (EventKind.HEALTH, "Crashed")
    assert event.message == "crash 3: the container exited with code 137 (killed: out of memory)"


def test_the_same_crash_is_told_once() -> None:
    crashed = at_rest(crash_count=1, last_exit_code=1, last_crash_at=NOW)
    assert outside_changes(crashed, crashed, [], "v1 exited") == []


def test_acting_on_a_project_at_rest_is_drift_repaired() -> None:
    [event] = outside_changes(at_rest(), at_rest(), ["create v1", "start v1"], "absent")
    assert (event.kind, event.reason) == (EventKind.ACTION, "DriftRepaired")
    assert "found absent; did create v1, start v1" in event.message


def test_leaving_rest_without_acting_yet_is_drift_found() -> None:
    waiting = at_rest().model_copy(update={"conditions": []})
    [event] = outside_changes(at_rest(), waiting, [], "v1:removing")
    assert event.reason == "DriftRepaired"
    assert event.message.endswith("found v1:removing; repairing")


def test_a_new_generation_or_staying_at_rest_is_no_drift() -> None:
    assert outside_changes(at_rest(generation=2), at_rest(generation=3), ["create v2"], "v1") == []
    assert outside_changes(at_rest(), at_rest(), [], "v1:running") == []
    assert outside_changes(None, at_rest(), ["create v1"], "none") == []


def test_signatures_verify_with_the_reference_library() -> None:
    body = b'{"type":"converged","data":{"project":"shop"}}'
    now = datetime.now(UTC)
    sent = headers(SECRET, "msg_7", int(now.timestamp()), body)
    assert standardwebhooks.Webhook(SECRET).verify(body, sent) == {
        "type": "converged",
        "data": {"project": "shop"},
    }
    reference = standardwebhooks.Webhook(SECRET).sign("msg_7", NOW, body.decode())
    assert signature(SECRET, "msg_7", int(NOW.timestamp()), body) == reference
    assert signature(SECRET, "msg_8", int(NOW.timestamp()), body) != reference
    later = int((NOW + timedelta(seconds=1)).timestamp())
    assert signature(SECRET, "msg_7", later, body) != reference
