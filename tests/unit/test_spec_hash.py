"""A deployment's spec hash: what tells whether a workload runs exactly what is wanted."""

from __future__ import annotations

from datetime import UTC, datetime

from tether.api.models import Deployment, HttpCheck
from tether.operator.desired import spec_hash

CREATED = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def deployment(**changes: object) -> Deployment:
    fields: dict[str, object] = {
        "project": "shop",
        "version": 1,
        "image": "workload",
        "port": 8080,
        "env": {"MODE": "a"},
        "health": HttpCheck(type="http", path="/healthz"),
        "created_by": "alice",
        "created_at": CREATED,
    }
    return Deployment.model_validate({**fields, **changes})


def test_the_same_deployment_read_again_has_the_same_hash() -> None:
    assert spec_hash(deployment()) == spec_hash(deployment())


def test_a_different_spec_under_the_same_project_and_version_gets_its_own_hash() -> None:
    """A project destroyed and created again numbers its deployments from 1 again: the hash
    kept for the first `shop` v1 must not be taken for the second's."""
    first = spec_hash(deployment())
    assert spec_hash(deployment(env={"MODE": "b"})) != first
    assert spec_hash(deployment(image="other")) != first
    assert spec_hash(deployment()) == first


def test_who_deployed_when_and_which_keys_are_secret_change_no_hash() -> None:
    first = spec_hash(deployment())
    assert spec_hash(deployment(created_by="bob", created_at=datetime.now(UTC))) == first
    assert spec_hash(deployment(secret_env=["MODE"])) == first
