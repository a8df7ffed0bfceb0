"""What the webhook outbox costs, alone (about a minute; prints, writes nothing):

    .venv/bin/python bench/webhook_outbox.py [--runs 400] [--hooks 10] [--deliveries 500]

1. The operator's status write with one outcome event (`write_status`, as a pass ends), the
   outbox trigger finding no hook, against the same write with `--hooks` hooks asking for that
   event (one outbox row each); interleaved, medians and their ratio.
2. The sender's throughput: `--deliveries` pending deliveries (one project per 10) sent to a
   receiver on loopback answering at once, first row claimed to last one delivered.

Starts a Postgres of its own (testcontainers, on the machine's Docker engine).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")
os.environ.setdefault("TC_HOST", "127.0.0.1")
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

from receiver import Receiver
from support import wait_for

from tether.api.migrator import migrate
from tether.api.models import EventKind, NewEvent, Principal, Status
from tether.api.settings import Settings
from tether.api.store import Store
from tether.api.webhooks import WebhookCreate
from tether.operator.webhooks.sender import WebhookSender

OWNER = Principal(owner="alice")
READY = NewEvent(EventKind.CONVERGED, "Ready", "v1 is ready")


async def timed_write(store: Store, name: str) -> float:
    began = time.perf_counter()
    await store.write_status(Status(project=name, phase="Running"), [READY], actor="operator")
    return time.perf_counter() - began


async def status_writes(dsn: str, runs: int, hooks: int) -> None:
    """Two databases, one with hooks: writes alternate between them."""
    bare, hooked = await Store.connect(dsn[0]), await Store.connect(dsn[1])
    try:
        for store in (bare, hooked):
            await store.create_project("shop", OWNER)
        for _ in range(hooks):
            spec = WebhookCreate(url="http://127.0.0.1:9/hook", events=["converged"])
            await hooked.create_webhook(spec, OWNER)
        times: dict[str, list[float]] = {"no hook": [], f"{hooks} hooks": []}
        for run in range(runs):
            order = [(bare, "no hook"), (hooked, f"{hooks} hooks")]
            for store, label in order if run % 2 else reversed(order):
                times[label].append(await timed_write(store, "shop"))
        medians = {label: statistics.median(t) * 1000 for label, t in times.items()}
        for label, ms in medians.items():
            print(f"1. write_status + 1 event, {label}: median {ms:.2f} ms over {runs} writes")
        base, with_hooks = medians.values()
        print(f"1. ratio with {hooks} hooks / no hook: {with_hooks / base:.2f}x")
    finally:
        await bare.close()
        await hooked.close()


async def throughput(dsn: str, deliveries: int) -> None:
    store = await Store.connect(dsn)
    receiver = Receiver()
    await receiver.start()
    try:
        await store.create_webhook(WebhookCreate(url=receiver.url, events=["converged"]), OWNER)
        names = [f"p{n}" for n in range(max(1, deliveries // 10))]
        for name in names:
            await store.create_project(name, OWNER)
        for n in range(deliveries):
            await store.write_status(
                Status(project=names[n % len(names)], phase="Running"), [READY], actor="operator"
            )
        settings = Settings(database_url=dsn)
        sender = WebhookSender(store, settings)
        began = time.perf_counter()
        task = asyncio.create_task(sender.run(1))

        async def all_received() -> bool:
            return len(receiver.received) >= deliveries

        await wait_for(all_received, "every delivery received", 300, every_s=0.01)
        elapsed = time.perf_counter() - began
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        print(
            f"2. {deliveries} deliveries over {len(names)} projects, concurrency "
            f"{settings.webhook_concurrency}: {elapsed:.2f} s, {deliveries / elapsed:.0f}/s"
        )
    finally:
        await receiver.stop()
        await store.close()


async def main(args: argparse.Namespace) -> None:
    import asyncpg
    from testcontainers.community.postgres import PostgresContainer

    with PostgresContainer(
        os.environ.get("TETHER_POSTGRES_IMAGE", "postgres:15"), driver=None
    ) as pg:
        server = pg.get_connection_url()
        admin = await asyncpg.connect(server)
        dsns = []
        for _ in range(3):
            name = f"b_{uuid.uuid4().hex[:8]}"
            await admin.execute(f"CREATE DATABASE {name}")
            dsns.append(server.rsplit("/", 1)[0] + f"/{name}")
            await migrate(dsns[-1])
        await admin.close()
        await status_writes(dsns[:2], args.runs, args.hooks)
        await throughput(dsns[2], args.deliveries)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--hooks", type=int, default=10)
    parser.add_argument("--deliveries", type=int, default=500)
    asyncio.run(main(parser.parse_args()))
