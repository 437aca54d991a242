"""RpcConnection negotiation, reassembly, fragmentation and cancel, driven in
memory with a tiny echo interface (a test double of an RPC interface)."""

from __future__ import annotations

import asyncio
import struct
import uuid

from hasmb.rpc.connection import RpcConnection
from hasmb.rpc.interface import CallContext
from hasmb.rpc.pdu import (
    BTFN_PREFIX,
    NCA_S_PROTO_ERROR,
    NCA_S_UNK_IF,
    NDR_SYNTAX,
    PFC_FIRST_FRAG,
    PFC_LAST_FRAG,
    REASON_ABSTRACT_SYNTAX_NOT_SUPPORTED,
    REASON_TRANSFER_SYNTAXES_NOT_SUPPORTED,
    RESULT_ACCEPTANCE,
    RESULT_NEGOTIATE_ACK,
    RESULT_PROVIDER_REJECTION,
    AuthLevel,
    Bind,
    BindAck,
    ContextElem,
    Pdu,
    PType,
    build_pdu,
    parse_fault_status,
    syntax_version,
)

BOTH = PFC_FIRST_FRAG | PFC_LAST_FRAG
ECHO = uuid.UUID("12345678-1234-1234-1234-123456789abc")
NDR64 = (uuid.UUID("71710533-beba-4937-8319-b5dbef9ccc36"), 1)
BTFN = (uuid.UUID(bytes_le=BTFN_PREFIX + b"\x03" + b"\x00" * 7), 1)


class Echo:
    uuid = ECHO
    version = (1, 0)
    min_auth_level: int = AuthLevel.NONE

    def __init__(self) -> None:
        self.gate = asyncio.Event()

    async def dispatch(self, opnum: int, stub: bytes, ctx: CallContext) -> bytes:
        if opnum == 1:  # waits until released (a long-pending call)
            await self.gate.wait()
        if opnum == 2:  # a big answer
            return bytes(range(256)) * 40
        return stub[::-1]


class Harness:
    def __init__(self) -> None:
        self.out: list[Pdu] = []
        self.iface = Echo()
        self.conn = RpcConnection([self.iface], None, self._send, "1234")

    async def _send(self, data: bytes) -> None:
        while data:
            (n,) = struct.unpack_from("<H", data, 8)
            self.out.append(Pdu.parse(data[:n]))
            data = data[n:]

    async def bind(
        self, *ctxs: ContextElem, max_frag: int = 4280, ptype: int = PType.BIND, call_id: int = 1
    ) -> bool:
        return await self.conn.receive(
            build_pdu(ptype, BOTH, call_id, Bind(max_frag, max_frag, 0, list(ctxs)).pack())
        )

    async def request(
        self, call_id: int, opnum: int, stub: bytes, ctx: int = 0, flags: int = BOTH
    ) -> bool:
        return await self.conn.receive(
            build_pdu(PType.REQUEST, flags, call_id, struct.pack("<IHH", 0, ctx, opnum) + stub)
        )

    async def settle(self) -> None:
        for _ in range(20):
            await asyncio.sleep(0)


def ctx(
    cid: int, abstract: tuple[uuid.UUID, int], *transfers: tuple[uuid.UUID, int]
) -> ContextElem:
    return ContextElem(cid, abstract, list(transfers))


ECHO_SYNTAX = (ECHO, syntax_version(1, 0))


async def test_bind_results_per_context() -> None:
    h = Harness()
    assert await h.bind(
        ctx(0, ECHO_SYNTAX, NDR64),
        ctx(1, ECHO_SYNTAX, NDR_SYNTAX),
        ctx(2, ECHO_SYNTAX, BTFN),
        ctx(3, (uuid.uuid4(), 1), NDR_SYNTAX),
        ctx(4, (ECHO, syntax_version(2, 0)), NDR_SYNTAX),
    )
    ack = BindAck.parse(h.out[0].body)
    assert [(r.result, r.reason) for r in ack.results] == [
        (RESULT_PROVIDER_REJECTION, REASON_TRANSFER_SYNTAXES_NOT_SUPPORTED),
        (RESULT_ACCEPTANCE, 0),
        (RESULT_NEGOTIATE_ACK, 0x02),  # keep-connection-on-orphan only
        (RESULT_PROVIDER_REJECTION, REASON_ABSTRACT_SYNTAX_NOT_SUPPORTED),
        (RESULT_PROVIDER_REJECTION, REASON_ABSTRACT_SYNTAX_NOT_SUPPORTED),
    ]
    assert ack.sec_addr == b"1234\x00"
    assert await h.request(5, 0, b"abc", ctx=1)
    await h.settle()
    assert h.out[-1].header.ptype == PType.RESPONSE and h.out[-1].body[8:] == b"cba"
    assert await h.request(6, 0, b"abc", ctx=3)  # rejected context
    assert parse_fault_status(h.out[-1].body) == NCA_S_UNK_IF


async def test_protocol_order_errors() -> None:
    h = Harness()
    assert not await h.bind(ctx(0, ECHO_SYNTAX, NDR_SYNTAX), ptype=PType.ALTER_CONTEXT)
    assert parse_fault_status(h.out[-1].body) == NCA_S_PROTO_ERROR
    h = Harness()
    assert await h.bind(ctx(0, ECHO_SYNTAX, NDR_SYNTAX))
    assert not await h.bind(ctx(0, ECHO_SYNTAX, NDR_SYNTAX))
    assert h.out[-1].header.ptype == PType.BIND_NAK
    h = Harness()
    assert not await h.request(1, 0, b"x")
    assert parse_fault_status(h.out[-1].body) == NCA_S_PROTO_ERROR


async def test_alter_context_adds_a_context() -> None:
    h = Harness()
    assert await h.bind(ctx(0, ECHO_SYNTAX, NDR_SYNTAX))
    assert await h.bind(ctx(7, ECHO_SYNTAX, NDR_SYNTAX), ptype=PType.ALTER_CONTEXT, call_id=2)
    resp = h.out[-1]
    assert resp.header.ptype == PType.ALTER_CONTEXT_RESP
    assert BindAck.parse(resp.body).results[0].result == RESULT_ACCEPTANCE
    assert await h.request(3, 0, b"xy", ctx=7)
    await h.settle()
    assert h.out[-1].body[8:] == b"yx"


async def test_fragmented_request_and_response() -> None:
    h = Harness()
    assert await h.bind(ctx(0, ECHO_SYNTAX, NDR_SYNTAX), max_frag=1432)
    assert await h.request(2, 0, b"hello ", flags=PFC_FIRST_FRAG)
    assert await h.request(2, 0, b"world", flags=PFC_LAST_FRAG)
    await h.settle()
    assert h.out[-1].body[8:] == b"dlrow olleh"
    h.out.clear()
    assert await h.request(3, 2, b"")
    await h.settle()
    frags = [p for p in h.out if p.header.call_id == 3]
    assert len(frags) > 5 and all(p.header.frag_length <= 1432 for p in frags)
    assert frags[0].header.flags & PFC_FIRST_FRAG and frags[-1].header.flags & PFC_LAST_FRAG
    assert b"".join(p.body[8:] for p in frags) == bytes(range(256)) * 40
    # A middle fragment for a call that never started is a protocol error.
    assert not await h.request(9, 0, b"x", flags=PFC_LAST_FRAG)


async def test_long_pending_call_does_not_block_and_cancel_answers() -> None:
    h = Harness()
    assert await h.bind(ctx(0, ECHO_SYNTAX, NDR_SYNTAX))
    assert await h.request(2, 1, b"")  # parks
    assert await h.request(3, 0, b"ab")  # served meanwhile
    await h.settle()
    assert [p.header.call_id for p in h.out if p.header.ptype == PType.RESPONSE] == [3]
    assert await h.conn.receive(build_pdu(PType.CO_CANCEL, BOTH, 2, b""))
    await h.settle()
    fault = h.out[-1]
    assert fault.header.ptype == PType.FAULT and fault.header.call_id == 2
    assert parse_fault_status(fault.body) == 0x1C00000D  # nca_s_fault_cancel
    await h.conn.close()
