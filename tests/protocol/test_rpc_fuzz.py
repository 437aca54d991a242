"""Hostile input against the witness's DCE/RPC server: malformed PDUs, wrong
auth, oversized fragments and unknown opnums get faults (or a closed
connection), never a crash, and a client waiting in AsyncNotify on another
association is served throughout.  Bounded: a fixed number of cases, each
with a deadline."""

from __future__ import annotations

import asyncio
import os
import random
import struct
import time

import pytest

from hasmb.rpc.client import RpcCallFault, RpcClient, RpcClientError
from hasmb.rpc.ntlm_client import negotiate_message
from hasmb.rpc.pdu import (
    FAULT_ACCESS_DENIED,
    FAULT_NDR,
    FAULT_SEC_PKG_ERROR,
    NCA_S_OP_RNG_ERROR,
    NCA_S_PROTO_ERROR,
    NDR_SYNTAX,
    PFC_FIRST_FRAG,
    PFC_LAST_FRAG,
    AuthLevel,
    Bind,
    ContextElem,
    Pdu,
    PType,
    SecTrailer,
    build_pdu,
    parse_fault_status,
    syntax_version,
)
from hasmb.witness.client import WitnessClient
from hasmb.witness.messages import CLIENT_MOVE_NOTIFICATION
from hasmb.witness.rpc import WITNESS_UUID
from tests.support.witness_server import NETNAME, PASSWORD, USER, witness_env

BOTH = PFC_FIRST_FRAG | PFC_LAST_FRAG
CASES = 300
CASE_DEADLINE = 3.0


def _bind(auth: bytes | None = None, level: int = AuthLevel.INTEGRITY) -> bytes:
    b = Bind(4280, 4280, 0, [ContextElem(0, (WITNESS_UUID, syntax_version(1, 1)), [NDR_SYNTAX])])
    if auth is None:
        return build_pdu(PType.BIND, BOTH, 1, b.pack())
    return build_pdu(PType.BIND, BOTH, 1, b.pack(), SecTrailer(10, level, 0, 1), auth)


async def _exchange(port: int, ip: str, data: bytes) -> list[Pdu]:
    """Send `data`, half-close, collect PDUs until the server closes (bounded)."""
    reader, writer = await asyncio.open_connection(ip, port)
    try:
        writer.write(data)
        await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        raw = await asyncio.wait_for(reader.read(), CASE_DEADLINE)
    finally:
        writer.close()
    out = []
    while len(raw) >= 16:
        (n,) = struct.unpack_from("<H", raw, 8)
        out.append(Pdu.parse(raw[:n]))
        raw = raw[n:]
    return out


def _mutations(rnd: random.Random) -> list[bytes]:
    valid = [
        _bind(),
        _bind(negotiate_message()),
        build_pdu(PType.REQUEST, BOTH, 2, struct.pack("<IHH", 0, 0, 0)),
    ]
    cases: list[bytes] = []
    for i in range(CASES):
        kind = i % 4
        if kind == 0:
            cases.append(os.urandom(rnd.randint(1, 300)))
        elif kind == 1:
            base = bytearray(rnd.choice(valid))
            for _ in range(rnd.randint(1, 6)):
                base[rnd.randrange(len(base))] = rnd.randrange(256)
            cases.append(bytes(base))
        elif kind == 2:
            body = os.urandom(rnd.randint(0, 200))
            ptype = rnd.randrange(22)
            cases.append(
                struct.pack(
                    "<BBBB4sHHI",
                    5,
                    0,
                    ptype,
                    rnd.randrange(256),
                    b"\x10\x00\x00\x00",
                    16 + len(body),
                    rnd.randrange(len(body) + 1),
                    rnd.randrange(1 << 32),
                )
                + body
            )
        else:
            # A valid bind followed by a truncated or garbage second PDU.
            cases.append(_bind() + os.urandom(rnd.randint(1, 64)))
    return cases


async def test_fuzz_and_bad_input_never_disturb_other_clients() -> None:
    rnd = random.Random(0x5EED)
    async with witness_env() as env:
        svc, ip, port = env.service, env.ip, env.service.port
        # A well-behaved client parks an AsyncNotify for the whole run.
        good = await WitnessClient.connect(ip, user=USER, password=PASSWORD, port=port)
        handle = await good.register(NETNAME, ip, "GOOD")
        pending = asyncio.create_task(good.async_notify(handle))

        # A peer that stalls mid-PDU (slowloris) holds only its own connection.
        _stall_r, stall_w = await asyncio.open_connection(ip, port)
        stall_w.write(_bind()[:10])
        await stall_w.drain()

        start = time.monotonic()
        for case in _mutations(rnd):
            for pdu in await _exchange(port, ip, case):
                assert pdu.header.ptype in (PType.FAULT, PType.BIND_NAK, PType.BIND_ACK)
        fuzz_time = time.monotonic() - start

        # Specific bad input and the answers it must get.
        huge = struct.pack("<BBBB4sHHI", 5, 0, 0, 3, b"\x10\x00\x00\x00", 65535, 0, 9)
        (fault,) = await _exchange(port, ip, huge + b"\x00" * 100)
        assert fault.header.ptype == PType.FAULT
        assert parse_fault_status(fault.body) == NCA_S_PROTO_ERROR

        (fault,) = await _exchange(port, ip, build_pdu(PType.REQUEST, BOTH, 5, b"\x00" * 8))
        assert parse_fault_status(fault.body) == NCA_S_PROTO_ERROR  # request before bind

        (nak,) = await _exchange(port, ip, _bind(b"NTLMSSP\x00\x07\x00\x00\x00garbage"))
        assert nak.header.ptype == PType.BIND_NAK

        # Unauthenticated bind succeeds but the witness refuses to serve it.
        ack, fault = await _exchange(
            port, ip, _bind() + build_pdu(PType.REQUEST, BOTH, 2, struct.pack("<IHH", 0, 0, 0))
        )
        assert ack.header.ptype == PType.BIND_ACK
        assert parse_fault_status(fault.body) == FAULT_ACCESS_DENIED

        # Authenticated client: unknown opnum faults, the association survives.
        c = await RpcClient.connect(
            ip, port, WITNESS_UUID, (1, 1), user=USER, password=PASSWORD, level=AuthLevel.PRIVACY
        )
        with pytest.raises(RpcCallFault) as e:
            await c.call(77, b"")
        assert e.value.status == NCA_S_OP_RNG_ERROR
        with pytest.raises(RpcCallFault):
            await c.call(1, b"\x01\x00")  # truncated stub: NDR fault
        assert await c.call(0, b"")  # still works
        c.close()

        # Wrong password: bind completes, the first request is denied.
        with pytest.raises(RpcClientError):
            bad = await RpcClient.connect(
                ip,
                port,
                WITNESS_UUID,
                (1, 1),
                user=USER,
                password="wrong",
                level=AuthLevel.INTEGRITY,
            )
            try:
                await asyncio.wait_for(bad.call(0, b""), CASE_DEADLINE)
            finally:
                bad.close()

        # A signature that does not verify (out-of-sequence) is a security fault.
        c = await RpcClient.connect(
            ip, port, WITNESS_UUID, (1, 1), user=USER, password=PASSWORD, level=AuthLevel.INTEGRITY
        )
        assert c._session is not None
        c._session.advance_sequence(3)
        with pytest.raises(RpcCallFault) as e:
            await asyncio.wait_for(c.call(0, b""), CASE_DEADLINE)
        assert e.value.status == FAULT_SEC_PKG_ERROR
        c.close()

        # The parked client was never disturbed: it still gets its notification fast.
        assert not pending.done()
        t0 = time.monotonic()
        assert svc.notify_client_move([env.partner_ip], client="GOOD") == 1
        note = await asyncio.wait_for(pending, 1.0)
        assert note.message_type == CLIENT_MOVE_NOTIFICATION
        assert note.move_targets() == [env.partner_ip]
        latency = time.monotonic() - t0
        await good.unregister(handle)
        good.close()
        stall_w.close()
        print(
            f"{CASES} fuzz cases in {fuzz_time:.2f} s; notification after fuzz in "
            f"{latency * 1000:.1f} ms"
        )


async def test_random_stubs_on_an_authenticated_association() -> None:
    """Garbage NDR behind a valid seal: each call answers (result or fault), the
    association stays usable, and nothing is registered by accident."""
    rnd = random.Random(7)
    async with witness_env() as env:
        c = await RpcClient.connect(
            env.ip,
            env.service.port,
            WITNESS_UUID,
            (1, 1),
            user=USER,
            password=PASSWORD,
            level=AuthLevel.PRIVACY,
        )
        try:
            outcomes: dict[int, set[str]] = {}
            for _ in range(500):
                op = rnd.choice([0, 1, 2, 3, 4, 5, 9])
                stub = os.urandom(rnd.randint(0, 120))
                try:
                    await asyncio.wait_for(c.call(op, stub), CASE_DEADLINE)
                    outcomes.setdefault(op, set()).add("ok")
                except RpcCallFault as e:
                    outcomes.setdefault(op, set()).add(hex(e.status))
            assert outcomes[0] == {"ok"}  # GetInterfaceList takes no input
            assert outcomes[9] == {hex(NCA_S_OP_RNG_ERROR)}
            assert hex(FAULT_NDR) in outcomes[1] and hex(FAULT_NDR) in outcomes[4]
            assert len(env.service.registry) == 0
            assert len(await c.call(0, b"")) > 552  # still serving
        finally:
            c.close()
