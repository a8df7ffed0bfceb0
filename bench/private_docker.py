"""A Docker engine of the run's own: the same dockerd binary, its own data and exec roots, socket,
bridge and containerd, so that the benchmarks neither disturb nor are disturbed by the test suites
sharing the machine's engine (and cannot wedge it: dockerd 20.10 has a libnetwork deadlock between
a container starting and another one exiting on the same bridge, moby/moby#46661, which a bulk
start/stop next to busy test suites can hit).

The bridge has its own subnet; iptables are left alone (`--iptables=false`): endpoints published
on 127.0.0.1 are served by Docker's userland proxy, as on the shared engine. The images are copied
from the shared engine (`docker save | docker load`), else built by scripts/provision.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from harness import IMAGE, REPO

ROOT = Path("/tmp")


class PrivateDocker:
    def __init__(self, run_id: str, log: Path) -> None:
        self.root = ROOT / f"tether-bench-{run_id}"
        self.bridge = f"tbench{run_id[:6]}"
        self.socket = self.root / "docker.sock"
        self.url = f"unix://{self.socket}"
        self._log = log
        self._child: subprocess.Popen[bytes] | None = None
        self._bridge_made = False

    def start(self, images: list[str]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        gateway = _free_subnet()
        _ip("link", "add", "name", self.bridge, "type", "bridge")
        self._bridge_made = True
        _ip("addr", "add", f"{gateway}/20", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        with open(self._log, "ab") as log:
            self._child = subprocess.Popen(
                [
                    shutil.which("dockerd") or "/usr/sbin/dockerd",
                    "--data-root", str(self.root / "data"),
                    "--exec-root", str(self.root / "exec"),
                    "--pidfile", str(self.root / "dockerd.pid"),
                    "--host", self.url,
                    "--bridge", self.bridge,
                    "--iptables=false",
                    "--ip-masq=false",
                    "--ip-forward=false",
                    "--log-level", "warn",
                ],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # with its containerd and proxies: one group to end
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while not self._answers():
            if self._child.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the private dockerd did not start; see {self._log}")
            time.sleep(0.5)
        self._copy_images(images)

    def _answers(self) -> bool:
        probe = subprocess.run(
            ["docker", "-H", self.url, "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            check=False,
            timeout=10,
        )
        return probe.returncode == 0

    def _copy_images(self, images: list[str]) -> None:
        shared = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
        for image in images:
            with subprocess.Popen(
                ["docker", "save", image], stdout=subprocess.PIPE, env=shared
            ) as save:
                loaded = subprocess.run(
                    ["docker", "-H", self.url, "load", "--quiet"],
                    stdin=save.stdout,
                    capture_output=True,
                    check=False,
                    timeout=300,
                )
            if save.returncode != 0 or loaded.returncode != 0:
                break
        else:
            return
        # The shared engine cannot hand them over: build them here, offline.
        subprocess.run(
            ["bash", str(REPO / "scripts" / "provision")],
            env={**os.environ, "DOCKER_HOST": self.url},
            check=True,
            timeout=900,
        )

    def stop(self) -> None:
        """End the engine and everything it started, also when it is deadlocked."""
        ids = self._container_ids()
        child = self._child
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=45)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait(timeout=30)
        for pid in _processes_mentioning(str(self.root)):  # shims and proxies it left
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for cid in ids:  # the containers' own processes, by their cgroup
            procs = Path(f"/sys/fs/cgroup/pids/docker/{cid}/cgroup.procs")
            with contextlib.suppress(OSError):
                for pid in procs.read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
        if self._bridge_made:
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("link", "del", self.bridge)
        _unmount_under(self.root)
        shutil.rmtree(self.root, ignore_errors=True)

    def _container_ids(self) -> list[str]:
        try:
            listed = subprocess.run(
                ["docker", "-H", self.url, "ps", "-aq", "--no-trunc"],
                capture_output=True,
                text=True,
                check=False,
                timeout=20,
            )
        except subprocess.TimeoutExpired:
            return []
        return listed.stdout.split()


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
    return [pid for pid in found if pid != os.getpid()]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def _free_subnet() -> str:
    """The gateway address of a 10.213.x.0/20 that no interface uses (room for 4 000
    containers: the idle item runs 500 at once)."""
    used = subprocess.run(
        ["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout
    networks = [
        ipaddress.ip_interface(word).network
        for word in used.split()
        if "/" in word and word[0].isdigit()
    ]
    for third in range(16, 255, 16):
        candidate = ipaddress.ip_network(f"10.213.{third}.0/20")
        if not any(candidate.overlaps(n) for n in networks):
            return str(candidate.network_address + 1)
    raise RuntimeError("no free 10.213.x.0/20 subnet for the private Docker bridge")


def _unmount_under(root: Path) -> None:
    """Mounts a killed dockerd may leave behind (overlays, shm), deepest first."""
    mounts = [
        line.split()[1]
        for line in Path("/proc/mounts").read_text().splitlines()
        if line.split()[1].startswith(str(root) + "/")
    ]
    for mount in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True, check=False, timeout=30)


def default_images() -> list[str]:
    return [IMAGE, os.environ.get("TETHER_POSTGRES_IMAGE", "postgres:15")]
