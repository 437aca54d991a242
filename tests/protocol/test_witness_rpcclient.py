"""Samba's rpcclient against the witness: GetInterfaceList, Register, RegisterEx,
AsyncNotify (planned CLIENT_MOVE and unplanned RESOURCE_CHANGE, each within 1 s)
and UnRegister, with packet integrity (sign) and privacy (seal)."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from hasmb.witness.client import WitnessClient
from tests.support.witness_server import PASSWORD, USER, Rpcclient, witness_env

HANDLE = re.compile(r"^\d+:[0-9a-f-]{36}$")
NOTIFY_DEADLINE = 1.0


async def _handle(rc: Rpcclient) -> str:
    while True:
        line = await rc.expect(":")
        if HANDLE.match(line.strip()):
            return line.strip()


async def _poll(cond: object, what: str, deadline: float = 5.0) -> None:
    end = time.monotonic() + deadline
    while not cond():  # type: ignore[operator]
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("level", ["sign", "seal"])
async def test_rpcclient_witness_flow(level: str) -> None:
    async with witness_env() as env:
        svc = env.service
        rc = await Rpcclient.start(env.ip, level)
        try:
            rc.send("GetInterfaceList")
            await rc.expect(f"SVM1 {env.ip}")
            await rc.expect(f"SVM1 {env.partner_ip}")

            rc.send(f"Register --V1 --net=SVM1 --ip={env.ip} --client=HOSTX")
            h1 = await _handle(rc)
            assert len(svc.registry) == 1

            # Planned move (giveback / LIF migration): CLIENT_MOVE to the partner.
            rc.send(f"AsyncNotify {h1}")
            await _poll(
                lambda: any(r.pending_calls for r in svc.registry.registrations()),
                "AsyncNotify to be pending",
            )
            t0 = time.monotonic()
            assert svc.notify_client_move([env.partner_ip]) == 1
            await rc.expect("Client move", NOTIFY_DEADLINE)
            await rc.expect(env.partner_ip, NOTIFY_DEADLINE)
            planned = time.monotonic() - t0

            # Unplanned failure of node A: RESOURCE_CHANGE unavailable.
            rc.send(f"AsyncNotify {h1}")
            await _poll(
                lambda: any(r.pending_calls for r in svc.registry.registrations()),
                "AsyncNotify to be pending",
            )
            t0 = time.monotonic()
            assert svc.notify_node_state("node-a", available=False) == 1
            await rc.expect("Resource change", NOTIFY_DEADLINE)
            await rc.expect(f"{env.ip} -> Unavailable", NOTIFY_DEADLINE)
            unplanned = time.monotonic() - t0
            assert planned < NOTIFY_DEADLINE and unplanned < NOTIFY_DEADLINE
            print(
                f"[{level}] CLIENT_MOVE in {planned * 1000:.1f} ms, "
                f"RESOURCE_CHANGE in {unplanned * 1000:.1f} ms"
            )

            rc.send(f"RegisterEx --net=SVM1 --share=data --ip={env.ip} --client=HOSTX")
            h2 = await _handle(rc)
            assert h2 != h1 and len(svc.registry) == 2
            # One command at a time: rpcclient polls stdin before reading a line
            # that is already buffered, so a second queued line waits ~5 s.
            rc.send(f"UnRegister {h1}")
            await _poll(lambda: len(svc.registry) == 1, "the first registration to go")
            rc.send(f"UnRegister {h2}")
            await _poll(lambda: len(svc.registry) == 0, "the second registration to go")
        finally:
            assert await rc.close() == 0


async def test_wrong_password_is_refused_and_others_keep_working() -> None:
    async with witness_env() as env:
        bad = await Rpcclient.start(env.ip, "sign", password="wrong")
        bad.send("GetInterfaceList")
        await bad.close()
        assert not any(env.ip in line for line in bad.lines), bad.lines
        assert any("ACCESS_DENIED" in line for line in bad.lines), bad.lines
        # A correct client on another association is unaffected.
        wc = await WitnessClient.connect(
            env.ip, user=USER, password=PASSWORD, port=env.service.port
        )
        try:
            ifaces = await wc.get_interface_list()
            assert [i.ipv4 for i in ifaces] == [env.ip, env.partner_ip]
        finally:
            wc.close()


async def test_unauthenticated_bind_is_denied() -> None:
    """MS-SWN requires integrity or privacy: rpcclient without sign/seal gets nothing."""
    async with witness_env() as env:
        rc = await Rpcclient.start(env.ip, "")
        rc.send("GetInterfaceList")
        await rc.close()
        assert not any(env.ip in line for line in rc.lines), rc.lines
        assert any("ACCESS_DENIED" in line or "denied" in line.lower() for line in rc.lines), (
            rc.lines
        )
