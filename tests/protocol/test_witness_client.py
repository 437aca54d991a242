"""hasmb's own witness client (what hasmb-probe uses) against the service, and
the standalone runner `python -m hasmb.witness`: every notification type,
keep-alive timeouts, expiry of unused registrations and context handle rundown."""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import Callable

import pytest

from hasmb.rpc.pdu import AuthLevel
from hasmb.witness.client import WitnessCallError, WitnessClient, WitnessNotification
from hasmb.witness.messages import (
    CLIENT_MOVE_NOTIFICATION,
    ERROR_NOT_FOUND,
    ERROR_TIMEOUT,
    IP_CHANGE_NOTIFICATION,
    REGISTER_IP_NOTIFICATION,
    RESOURCE_CHANGE_NOTIFICATION,
    RESOURCE_STATE_AVAILABLE,
    RESOURCE_STATE_UNAVAILABLE,
    SHARE_MOVE_NOTIFICATION,
    STATE_UNAVAILABLE,
)
from tests.support.witness_server import (
    NETNAME,
    PASSWORD,
    USER,
    free_loopback_address,
    witness_env,
)


async def _poll(cond: Callable[[], bool], what: str, deadline: float = 5.0) -> None:
    end = time.monotonic() + deadline
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("level", [AuthLevel.INTEGRITY, AuthLevel.PRIVACY])
async def test_every_notification_type(level: int) -> None:
    async with witness_env() as env:
        svc = env.service
        wc = await WitnessClient.connect(env.ip, user=USER, password=PASSWORD, level=level)
        try:
            h = await wc.register_ex(
                NETNAME, "data", env.ip, "PROBE", flags=REGISTER_IP_NOTIFICATION
            )

            async def notified(trigger: Callable[[], int]) -> WitnessNotification:
                task = asyncio.create_task(wc.async_notify(h))
                await _poll(
                    lambda: any(r.pending_calls for r in svc.registry.registrations()),
                    "AsyncNotify pending",
                )
                t0 = time.monotonic()
                assert trigger() == 1
                note = await asyncio.wait_for(task, 1.0)
                assert time.monotonic() - t0 < 1.0
                return note

            note = await notified(lambda: svc.notify_node_state("node-a", False))
            assert note.message_type == RESOURCE_CHANGE_NOTIFICATION
            assert [(c.name, c.change_type) for c in note.resource_changes] == [
                (env.ip, RESOURCE_STATE_UNAVAILABLE)
            ]
            ifaces = {i.ipv4: i for i in await wc.get_interface_list()}
            assert ifaces[env.ip].state == STATE_UNAVAILABLE

            note = await notified(lambda: svc.notify_node_state("node-a", True))
            assert note.resource_changes[0].change_type == RESOURCE_STATE_AVAILABLE

            note = await notified(lambda: svc.notify_client_move([env.partner_ip]))
            assert note.message_type == CLIENT_MOVE_NOTIFICATION
            assert note.move_targets() == [env.partner_ip]

            note = await notified(lambda: svc.notify_share_move("DATA", [env.partner_ip]))
            assert note.message_type == SHARE_MOVE_NOTIFICATION

            note = await notified(
                lambda: svc.notify_ip_change({env.ip: False, env.partner_ip: True})
            )
            assert note.message_type == IP_CHANGE_NOTIFICATION
            assert [(a.address, a.online) for a in note.ip_lists[0]] == [
                (env.ip, False),
                (env.partner_ip, True),
            ]

            # A stub far larger than one fragment is reassembled (and sealed) correctly.
            big = await wc.register(NETNAME, env.ip, "C" * 12000)
            assert any(r.client_name == "C" * 12000 for r in svc.registry.registrations())
            await wc.unregister(big)
            await wc.unregister(h)
        finally:
            wc.close()


async def test_keepalive_timeout_expiry_and_rundown() -> None:
    async with witness_env(registration_timeout=0.3) as env:
        svc = env.service
        wc = await WitnessClient.connect(env.ip, user=USER, password=PASSWORD)
        try:
            h = await wc.register_ex(NETNAME, None, env.ip, "KA", keepalive_timeout=1)
            t0 = time.monotonic()
            with pytest.raises(WitnessCallError) as e:
                await asyncio.wait_for(wc.async_notify(h), 5)
            assert e.value.code == ERROR_TIMEOUT
            assert 0.9 < time.monotonic() - t0 < 3
            # Unused, it expires; the handle is then unknown.
            await _poll(lambda: len(svc.registry) == 0, "expiry")
            with pytest.raises(WitnessCallError) as e:
                await wc.async_notify(h)
            assert e.value.code == ERROR_NOT_FOUND
            await wc.register(NETNAME, env.ip, "RUNDOWN")
            assert len(svc.registry) == 1
        finally:
            wc.close()
        # Closing the association runs the context handle down.
        await _poll(lambda: len(svc.registry) == 0, "rundown")


async def test_standalone_runner_delivers_events_from_stdin() -> None:
    ip = free_loopback_address()
    partner = ip.rsplit(".", 1)[0] + ".1"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hasmb.witness",
        "--netname",
        NETNAME,
        "--listen",
        f"{ip}:0",
        "--user",
        f"{USER}:{PASSWORD}",
        "--interface",
        f"{NETNAME}={ip}@node-a",
        "--interface",
        f"{NETNAME}={partner}@node-b",
        "--log-level",
        "warning",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        m = re.match(r"listening witness=(\d+) epm=0", line)
        assert m, line
        wc = await WitnessClient.connect(ip, user=USER, password=PASSWORD, port=int(m[1]))
        try:
            h = await wc.register(NETNAME, ip, "RUNNER")
            task = asyncio.create_task(wc.async_notify(h))
            # Registration is synchronous; AsyncNotify may still be in flight when
            # the event arrives -- it is queued either way.
            proc.stdin.write(f"client_move {partner}\n".encode())
            assert (await asyncio.wait_for(proc.stdout.readline(), 5)) == b"delivered 1\n"
            note = await asyncio.wait_for(task, 2)
            assert note.move_targets() == [partner]
            await wc.unregister(h)
        finally:
            wc.close()
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)


async def test_notifications_iterator_rides_over_keepalive_timeouts() -> None:
    from hasmb.witness.client import notifications

    async with witness_env() as env:
        wc = await WitnessClient.connect(env.ip, user=USER, password=PASSWORD)
        try:
            h = await wc.register_ex(NETNAME, None, env.ip, "ITER", keepalive_timeout=1)
            stream = notifications(wc, h)
            nxt = asyncio.ensure_future(anext(stream))
            await asyncio.sleep(1.5)  # one keep-alive timeout passes unnoticed
            assert not nxt.done()
            env.service.notify_client_move([env.partner_ip])
            note = await asyncio.wait_for(nxt, 2)
            assert note.move_targets() == [env.partner_ip]
            await wc.unregister(h)
        finally:
            wc.close()
