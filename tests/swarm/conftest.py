"""Fixtures of the Swarm tests: a multi-node Swarm on this machine (`swarm_cluster`), built once
per session by scripts/swarm-cluster beside the main Docker engine, torn down at the end.

Every test in this folder is marked `swarm` (`pytest -m "not swarm"` leaves them out). A machine
that cannot build the cluster (not root, tools missing) fails these tests, saying why: a skip
would count as a pass.

TETHER_SWARM_CLUSTER=C runs the tests on cluster C that a person brought up (`make cluster`;
`scripts/swarm-cluster status` shows it), and leaves it up afterwards."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import swarmcluster
from swarmcluster import SwarmCluster

HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.swarm)


@pytest.fixture(scope="session")
def swarm_cluster() -> Iterator[SwarmCluster]:
    given = os.environ.get("TETHER_SWARM_CLUSTER")
    try:
        cluster = swarmcluster.attach(int(given)) if given else swarmcluster.up(3)
    except swarmcluster.ClusterError as error:
        failure = str(error)
    else:
        failure = ""
    if failure:
        pytest.fail(failure, pytrace=False)
    yield cluster
    if given:
        return
    swarmcluster.down(cluster.number)
    left = swarmcluster.traces(cluster.number)
    assert not left, f"scripts/swarm-cluster down left these behind: {left}"
