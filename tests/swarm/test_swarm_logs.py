"""`tether logs` on the swarm runtime: a project's output, read through the manager from the worker
its task runs on (the manager is drained: no task runs where the API reads), only its current
task's; and `--follow`, run as a person runs it, moving on to the task a restart starts, each
task's lines once."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

from scenarios.harness import spec
from servers import TETHER
from support import wait_for
from swarm import swarmstack
from swarm.swarmstack import SwarmStack

stack = swarmstack.stack  # the fixture

BOOT = 'echo "boot of $(hostname)"; echo "to stderr" >&2; exec /bin/serve'


@contextlib.asynccontextmanager
async def following(stack: SwarmStack, name: str) -> AsyncIterator[list[str]]:
    """`tether logs NAME --follow` as a process, its stdout and stderr lines as they come (in
    one list), ended with Ctrl-C, which must end it with 130."""
    process = await asyncio.create_subprocess_exec(
        TETHER,
        "logs",
        name,
        "--follow",
        env=dict(stack.cli.env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    lines: list[str] = []

    async def collect(stream: asyncio.StreamReader) -> None:
        async for line in stream:
            lines.append(line.decode().rstrip("\n"))

    reader = asyncio.create_task(collect(process.stdout))
    try:
        yield lines
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            assert await process.wait() == 130, lines
            await reader
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        reader.cancel()


async def test_logs_read_the_task_on_its_worker_and_follow_a_restart(stack: SwarmStack) -> None:
    created = await stack.console.post("/v1/projects", json={"name": "shop"})
    assert created.status_code == 201, created.text
    command = {"command": ["sh", "-c", BOOT]}
    deployed = await stack.console.post("/v1/projects/shop/deployments", json=spec(**command))
    assert deployed.status_code == 201, deployed.text
    first = await stack.wait_running("shop", "shop running on a worker")
    [task] = await stack.running_tasks("shop")
    assert not stack.node_of(task).manager

    shown = await stack.cli.ok("logs", "shop")
    boots = [line for line in shown.out.splitlines() if line.startswith("boot of ")]
    assert len(boots) == 1, shown
    assert "to stderr\n" in shown.err
    lines = (await stack.cli.ok("logs", "shop", "-o", "json")).json_lines()
    assert lines[0]["type"] == "container"
    assert (lines[0]["container"], lines[0]["version"]) == (first.status.container_id, 1)
    assert lines[0]["state"] == "running"
    said = {(line["stream"], line["text"]) for line in lines[1:]}
    assert {("stdout", boots[0]), ("stderr", "to stderr")} <= said
    assert all(line["container"] == first.status.container_id for line in lines[1:])

    async with following(stack, "shop") as seen:

        async def first_boot() -> bool:
            return boots[0] in seen

        await wait_for(first_boot, "the first task's output followed")
        await stack.cli.ok("restart", "shop", "--wait", "--timeout", "90")
        replaced = await stack.wait_running("shop", "shop restarted")
        second = replaced.status.container_id
        assert second != first.status.container_id

        async def next_boot() -> str | None:
            return next((x for x in seen if x.startswith("boot of ") and x != boots[0]), None)

        booted_again = await wait_for(next_boot, "the restarted task's output", within_s=60)
        notices = [line for line in seen if line.startswith("--- shop: following container")]
        assert len(notices) == 1, seen  # each task announced once, however their lines mix
        assert notices[0].startswith(f"--- shop: following container {second[:12]}"), seen
    booted = [line for line in seen if line.startswith("boot of ")]
    assert booted == [boots[0], booted_again], seen  # each task's output once, in order

    again = (await stack.cli.ok("logs", "shop")).out  # the current task's only
    assert [x for x in again.splitlines() if x.startswith("boot of ")] == [booted_again]
