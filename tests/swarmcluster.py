"""A multi-node Docker Swarm on this machine for tests: `scripts/swarm-cluster` builds it (one
dockerd per network namespace, beside the main engine), this module drives it from Python.

`up()` builds a cluster of the session's own (the first free cluster number: several sessions
may run at once), `attach(number)` takes one a person brought up (`make cluster`), `down()` tears
one down, and `traces(number)` lists what of a cluster is left on the machine."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import aiodocker
from support import wait_for

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "swarm-cluster"
RUN = "/run/tether-swarm"  # the script's run directory: one folder per cluster
TAKEN = 3  # the script's exit status when the cluster number is in use
CLUSTERS = 8  # cluster numbers the script accepts: 0..7


class ClusterError(Exception):
    """The machine could not build or drive the cluster; says what the script said."""


@dataclass(frozen=True)
class SwarmNode:
    name: str  # node1, node2, ...: also its hostname in Swarm
    id: str  # its Swarm node id
    address: str  # its network namespace's address: where its host-mode ports answer
    docker_url: str  # its own dockerd
    manager: bool


@dataclass(frozen=True)
class SwarmCluster:
    """One cluster: node1 is the manager (drained: it runs no tasks, and is never killed), the
    other nodes are workers."""

    number: int  # TETHER_SWARM_CLUSTER of the script
    nodes: tuple[SwarmNode, ...]

    @property
    def manager(self) -> SwarmNode:
        return self.nodes[0]

    @property
    def manager_url(self) -> str:
        """The Docker URL to point tether at (TETHER_DOCKER_URL)."""
        return self.manager.docker_url

    @property
    def workers(self) -> tuple[SwarmNode, ...]:
        return self.nodes[1:]

    def node(self, name_or_id: str) -> SwarmNode:
        for node in self.nodes:
            if name_or_id in (node.name, node.id):
                return node
        raise KeyError(f"no node {name_or_id!r} in cluster {self.number}")

    async def kill(self, node: str) -> None:
        """Node loss: SIGKILL the node's dockerd, containerd, shims and task containers (a worker
        only). Its tasks stop answering at once; Swarm notices within its heartbeat."""
        await _script_async(self.number, "kill", self.node(node).name)

    async def revive(self, node: str) -> None:
        """Start the node's dockerd again; returns once the manager sees the node Ready."""
        await _script_async(self.number, "revive", self.node(node).name)

    async def node_state(self, node: str) -> str:
        """The node's state as the manager sees it: ready, down, unknown or disconnected."""
        async with aiodocker.Docker(url=self.manager_url) as docker:
            inspected = await docker.nodes.inspect(node_id=self.node(node).id)
        state: str = inspected["Status"]["State"]
        return state

    async def wait_node_state(self, node: str, state: str, within_s: float = 60.0) -> None:
        async def reached() -> bool:
            return await self.node_state(node) == state

        await wait_for(reached, f"{node} to be {state}", within_s=within_s, every_s=0.2)

    async def set_availability(self, node: str, availability: str) -> None:
        """active, pause or drain (`docker node update --availability`)."""
        async with aiodocker.Docker(url=self.manager_url) as docker:
            inspected = await docker.nodes.inspect(node_id=self.node(node).id)
            spec = {**inspected["Spec"], "Availability": availability}
            await docker.nodes.update(
                node_id=inspected["ID"], version=inspected["Version"]["Index"], spec=spec
            )


def check_machine() -> None:
    """Fail, saying why, when this machine cannot build the cluster."""
    if os.geteuid() != 0:
        raise ClusterError(
            "the swarm tests build a multi-node Swarm with scripts/swarm-cluster, which needs "
            "root (network namespaces, a bridge, one dockerd per node): run the tests as root, "
            'or leave them out with -m "not swarm"'
        )
    for tool in ("ip", "iptables", "nsenter", "unshare", "dockerd"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            raise ClusterError(f"'{tool}' is missing: run scripts/provision (as root)")


def up(nodes: int = 3) -> SwarmCluster:
    """Build a cluster of this process's own under the first free cluster number, after tearing
    down those whose test session died without doing so."""
    check_machine()
    for number in abandoned():
        # Best effort: another session may be tearing it down too; a number still taken is
        # passed over below.
        _run(number, "down")
    for number in range(CLUSTERS):
        result = _run(number, "up", str(nodes), TETHER_SWARM_OWNER=str(os.getpid()))
        if result.returncode == 0:
            return attach(number)
        if result.returncode != TAKEN:
            raise ClusterError(f"scripts/swarm-cluster up failed:\n{result.stderr}")
    raise ClusterError(
        f"all {CLUSTERS} cluster numbers are taken: `scripts/swarm-cluster down all` frees them"
    )


def attach(number: int) -> SwarmCluster:
    """The cluster `number` as it runs now."""
    result = _run(number, "status")
    if result.returncode != 0:
        raise ClusterError(f"cluster {number} is not up:\n{result.stderr}")
    nodes = []
    for line in result.stdout.splitlines():
        name, address, url, node_id, _state, _availability, role = line.split("\t")
        nodes.append(SwarmNode(name, node_id, address, url, manager=role != "worker"))
    nodes.sort(key=lambda n: int(n.name.removeprefix("node")))
    return SwarmCluster(number, tuple(nodes))


def abandoned() -> list[int]:
    """Clusters built for a process that is gone (those a person built have no owner)."""
    found = []
    for owner in Path(RUN).glob("*/owner"):
        try:
            os.kill(int(owner.read_text()), 0)
        except ProcessLookupError:
            found.append(int(owner.parent.name))
        except (OSError, ValueError):
            continue  # gone meanwhile, or half written: not provably abandoned
    return found


def down(number: int) -> None:
    result = _run(number, "down")
    if result.returncode != 0:
        raise ClusterError(f"scripts/swarm-cluster down failed:\n{result.stderr}")


def traces(number: int) -> list[str]:
    """What of cluster `number` is on this machine: network namespaces, links, iptables rules,
    mounts, directories and cgroups carrying its names. Empty once it is down."""
    bridge = f"tether-swarm{number}"
    found = [
        f"netns {name}"
        for name in _lines("ip", "netns", "list")
        if name.split()[0].startswith(f"{bridge}-")
    ]
    found += [
        f"link {line.split(':')[1].strip()}"
        for line in _lines("ip", "-o", "link")
        if line.split(":")[1].strip().split("@")[0] in {bridge, *_veths(number)}
    ]
    found += [f"iptables {rule}" for rule in _lines("iptables", "-S") if bridge in rule.split()]
    roots = (f"/run/tether-swarm/{number}/", f"/var/lib/tether-swarm/{number}/")
    found += [
        f"mount {line.split()[1]}"
        for line in Path("/proc/mounts").read_text().splitlines()
        if line.split()[1].startswith(roots)
    ]
    found += [
        f"path {path}"
        for path in (
            *(root.rstrip("/") for root in roots),
            f"/sys/fs/cgroup/pids/tether-swarm/{number}",
            f"/sys/fs/cgroup/freezer/tether-swarm/{number}",
        )
        if Path(path).exists()
    ]
    return found


def forward_policy() -> str:
    """The main network namespace's FORWARD policy (the main engine sets it to DROP)."""
    return next(rule for rule in _lines("iptables", "-S", "FORWARD") if rule.startswith("-P "))


def _veths(number: int) -> set[str]:
    return {f"ts{number}-{k}" for k in range(1, 10)}


def _lines(*command: str) -> list[str]:
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()


def _run(number: int, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        env={**os.environ, **env, "TETHER_SWARM_CLUSTER": str(number)},
        capture_output=True,
        text=True,
        timeout=180,
    )


async def _script_async(number: int, *args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        str(SCRIPT),
        *args,
        env={**os.environ, "TETHER_SWARM_CLUSTER": str(number)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()
    if process.returncode != 0:
        raise ClusterError(f"scripts/swarm-cluster {' '.join(args)} failed:\n{err.decode()}")
