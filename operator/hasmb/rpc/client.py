"""A small ncacn_ip_tcp DCE/RPC client (hasmb-probe's witness client, tests).

Binds one interface, optionally authenticates with NTLMSSP (bind / bind_ack /
auth3) at integrity or privacy level, and runs calls concurrently: a reader
task matches response fragments to calls by call_id, so one long-pending
call (witness AsyncNotify) does not block others on the same association.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import struct
import uuid
from dataclasses import dataclass, field

from hasmb.auth.ntlm_session import SIGNATURE_SIZE, NtlmSession, NtlmSignatureError
from hasmb.rpc.epm import TcpEndpoint, build_tower, parse_tower_port
from hasmb.rpc.ndr import NULL_HANDLE, NdrReader, NdrWriter
from hasmb.rpc.ntlm_client import authenticate_message, negotiate_message
from hasmb.rpc.pdu import (
    HEADER_SIZE,
    NDR_SYNTAX,
    PFC_FIRST_FRAG,
    PFC_LAST_FRAG,
    RESULT_ACCEPTANCE,
    SEC_TRAILER_SIZE,
    AuthLevel,
    AuthType,
    Bind,
    BindAck,
    ContextElem,
    Header,
    Pdu,
    PType,
    SecTrailer,
    build_pdu,
    parse_fault_status,
    syntax_version,
)

MAX_FRAG = 4280


class RpcClientError(Exception):
    pass


class RpcCallFault(RpcClientError):
    def __init__(self, status: int) -> None:
        super().__init__(f"RPC fault 0x{status:08x}")
        self.status = status


@dataclass
class _Pending:
    future: asyncio.Future[bytes]
    stub: bytearray = field(default_factory=bytearray)


class RpcClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._call_ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._send_lock = asyncio.Lock()
        self._session: NtlmSession | None = None
        self._level = AuthLevel.NONE
        self._reader_task: asyncio.Task[None] | None = None
        self.max_xmit = MAX_FRAG

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        iface: uuid.UUID,
        version: tuple[int, int],
        *,
        user: str | None = None,
        password: str = "",
        domain: str = "",
        level: int = AuthLevel.PRIVACY,
        connect_timeout: float = 10.0,
    ) -> RpcClient:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), connect_timeout
        )
        self = cls(reader, writer)
        try:
            await asyncio.wait_for(
                self._bind(iface, version, user, password, domain, level), connect_timeout
            )
        except BaseException:
            self.close()
            raise
        self._reader_task = asyncio.create_task(self._read_loop())
        return self

    async def _read_frag(self) -> Pdu:
        head = await self._reader.readexactly(HEADER_SIZE)
        h = Header.parse(head)
        body = await self._reader.readexactly(h.frag_length - HEADER_SIZE)
        return Pdu.parse(head + body)

    async def _bind(
        self,
        iface: uuid.UUID,
        version: tuple[int, int],
        user: str | None,
        password: str,
        domain: str,
        level: int,
    ) -> None:
        bind = Bind(
            MAX_FRAG, MAX_FRAG, 0, [ContextElem(0, (iface, syntax_version(*version)), [NDR_SYNTAX])]
        )
        trailer = None
        token = b""
        if user is not None:
            trailer = SecTrailer(AuthType.NTLMSSP, level, 0, 1)
            token = negotiate_message()
        call_id = next(self._call_ids)
        self._writer.write(
            build_pdu(
                PType.BIND, PFC_FIRST_FRAG | PFC_LAST_FRAG, call_id, bind.pack(), trailer, token
            )
        )
        await self._writer.drain()
        pdu = await self._read_frag()
        if pdu.header.ptype != PType.BIND_ACK:
            raise RpcClientError(f"bind refused (PDU type {pdu.header.ptype})")
        ack = BindAck.parse(pdu.body)
        if not ack.results or ack.results[0].result != RESULT_ACCEPTANCE:
            raise RpcClientError("interface not accepted")
        self.max_xmit = min(ack.max_recv_frag, MAX_FRAG)
        if user is not None:
            assert trailer is not None
            auth = authenticate_message(pdu.auth_value, user, password, domain)
            self._writer.write(
                build_pdu(
                    PType.AUTH3,
                    PFC_FIRST_FRAG | PFC_LAST_FRAG,
                    call_id,
                    b"\x00" * 4,
                    trailer,
                    auth.authenticate,
                )
            )
            await self._writer.drain()
            self._session = NtlmSession(auth.exported_session_key, auth.flags, server=False)
            self._level = AuthLevel(level)

    async def call(self, opnum: int, stub: bytes, context_id: int = 0) -> bytes:
        call_id = next(self._call_ids)
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = _Pending(fut)
        try:
            await self._send_request(call_id, opnum, stub, context_id)
            return await fut
        finally:
            self._pending.pop(call_id, None)

    async def _send_request(self, call_id: int, opnum: int, stub: bytes, ctx: int) -> None:
        protected = self._session is not None and self._level >= AuthLevel.PKT
        room = self.max_xmit - HEADER_SIZE - 8
        if protected:
            room = (room - SEC_TRAILER_SIZE - SIGNATURE_SIZE) // 16 * 16
        async with self._send_lock:
            off = 0
            while True:
                chunk = stub[off : off + room]
                flags = PFC_FIRST_FRAG if off == 0 else 0
                off += len(chunk)
                if off >= len(stub):
                    flags |= PFC_LAST_FRAG
                prefix = struct.pack("<IHH", len(stub) - off + len(chunk), ctx, opnum)
                if protected:
                    assert self._session is not None
                    pad = (-len(chunk)) % 16
                    payload = chunk + b"\x00" * pad
                    tr = SecTrailer(AuthType.NTLMSSP, self._level, pad, 1).pack()
                    size = HEADER_SIZE + 8 + len(payload) + SEC_TRAILER_SIZE + SIGNATURE_SIZE
                    head = Header(PType.REQUEST, flags, size, SIGNATURE_SIZE, call_id).pack()
                    whole = head + prefix + payload + tr
                    if self._level == AuthLevel.PRIVACY:
                        sealed, sig = self._session.seal(payload, whole)
                        frag = head + prefix + sealed + tr + sig
                    else:
                        frag = whole + self._session.sign(whole)
                else:
                    frag = build_pdu(PType.REQUEST, flags, call_id, prefix + chunk)
                self._writer.write(frag)
                if flags & PFC_LAST_FRAG:
                    break
            await self._writer.drain()

    async def _read_loop(self) -> None:
        try:
            while True:
                pdu = await self._read_frag()
                self._on_pdu(pdu)
        except (asyncio.IncompleteReadError, ConnectionError, Exception) as e:
            err = e if isinstance(e, RpcClientError) else RpcClientError(f"connection lost: {e}")
            for p in self._pending.values():
                if not p.future.done():
                    p.future.set_exception(err)

    def _on_pdu(self, pdu: Pdu) -> None:
        p = self._pending.get(pdu.header.call_id)
        if pdu.header.ptype == PType.FAULT:
            status = parse_fault_status(pdu.body)
            if p is not None and not p.future.done():
                p.future.set_exception(RpcCallFault(status))
            return
        if pdu.header.ptype != PType.RESPONSE:
            raise RpcClientError(f"unexpected PDU type {pdu.header.ptype}")
        data = pdu.body[8:]
        if self._session is not None and self._level >= AuthLevel.PKT:
            t = pdu.trailer
            if t is None:
                raise RpcClientError("response lacks its verifier")
            sig_at = len(pdu.raw) - len(pdu.auth_value)
            try:
                if self._level == AuthLevel.PRIVACY:
                    plain = self._session.unseal_data(data)
                    whole = (
                        pdu.raw[: HEADER_SIZE + 8]
                        + plain
                        + pdu.raw[sig_at - SEC_TRAILER_SIZE : sig_at]
                    )
                    self._session.verify(whole, pdu.auth_value)
                    data = plain
                else:
                    self._session.verify(pdu.raw[:sig_at], pdu.auth_value)
            except NtlmSignatureError as e:
                raise RpcClientError(str(e)) from None
            data = data[: len(data) - t.pad_length]
        if p is None:
            return
        p.stub += data
        if pdu.header.flags & PFC_LAST_FRAG and not p.future.done():
            p.future.set_result(bytes(p.stub))

    def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
        with contextlib.suppress(Exception):
            self._writer.close()


EPM_UUID = uuid.UUID("e1af8308-5d1f-11c9-91a4-08002b14a0fa")


async def epm_lookup(host: str, iface: uuid.UUID, version: tuple[int, int], port: int = 135) -> int:
    """Ask the endpoint mapper at host:port for the interface's TCP port."""
    client = await RpcClient.connect(host, port, EPM_UUID, (3, 0))
    try:
        tower = build_tower(TcpEndpoint(iface, version, 0))
        w = NdrWriter()
        w.referent(False)  # object
        w.referent()
        w.u32(len(tower))
        w.u32(len(tower))
        w.raw(tower)
        w.context_handle(NULL_HANDLE)
        w.u32(1)
        r = NdrReader(await client.call(3, w.bytes()))
        r.context_handle()
        num = r.u32()
        r.u32()
        r.u32()
        r.u32()
        if num < 1:
            raise RpcClientError("interface not registered with the endpoint mapper")
        for _ in range(num):
            r.referent()
        length = r.u32()
        r.u32()
        port_found = parse_tower_port(r.raw(length))
        if port_found is None:
            raise RpcClientError("tower carries no TCP port")
        return port_found
    finally:
        client.close()
