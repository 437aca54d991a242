"""Many registered clients, one unplanned failure: every client, each on its
own sealed association with an AsyncNotify pending, hears about it within 1 s."""

from __future__ import annotations

import asyncio
import time

from hasmb.witness.client import WitnessClient
from hasmb.witness.messages import RESOURCE_CHANGE_NOTIFICATION
from tests.support.witness_server import NETNAME, PASSWORD, USER, witness_env

CLIENTS = 100


async def test_failure_reaches_every_registered_client_within_a_second() -> None:
    async with witness_env() as env:
        svc = env.service
        clients = await asyncio.gather(
            *[
                WitnessClient.connect(env.ip, user=USER, password=PASSWORD, port=svc.port)
                for _ in range(CLIENTS)
            ]
        )
        try:
            handles = await asyncio.gather(
                *[c.register(NETNAME, env.ip, f"HOST{i}") for i, c in enumerate(clients)]
            )
            arrived: list[float] = []

            async def wait(c: WitnessClient, h: object) -> None:
                note = await c.async_notify(h)  # type: ignore[arg-type]
                assert note.message_type == RESOURCE_CHANGE_NOTIFICATION
                arrived.append(time.monotonic())

            tasks = [asyncio.create_task(wait(c, h)) for c, h in zip(clients, handles, strict=True)]
            end = time.monotonic() + 10
            while sum(r.pending_calls for r in svc.registry.registrations()) < CLIENTS:
                assert time.monotonic() < end, "AsyncNotify calls did not all arrive"
                await asyncio.sleep(0.02)
            t0 = time.monotonic()
            assert svc.notify_node_state("node-a", available=False) == CLIENTS
            await asyncio.wait_for(asyncio.gather(*tasks), 5)
            worst = max(arrived) - t0
            print(f"{CLIENTS} clients notified; slowest after {worst * 1000:.1f} ms")
            assert worst < 1.0
        finally:
            for c in clients:
                c.close()
