"""One connection-oriented DCE/RPC association, independent of its transport.

`RpcConnection.receive()` takes whole fragments (the transport frames them by
frag_length) and answers through the `send` callback: bind / alter_context
negotiation (C706 12.6.4.3-5, MS-RPCE 3.3.1.5.3 bind time feature
negotiation), NTLMSSP/SPNEGO authentication legs, request reassembly, and
response fragmentation.  Each call runs in its own task so a long-pending call
(witness AsyncNotify) never blocks other calls on the association; responses
are sent under one lock because NTLM sealing is an RC4 stream whose order both
peers share.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import struct
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from hasmb.rpc.interface import (
    Association,
    CallContext,
    RpcFault,
    RpcInterface,
    version_matches,
)
from hasmb.rpc.ndr import NdrError
from hasmb.rpc.pdu import (
    BIND_NAK_AUTH_TYPE_NOT_RECOGNIZED,
    BIND_NAK_REASON_NOT_SPECIFIED,
    BTFN_PREFIX,
    FAULT_ACCESS_DENIED,
    FAULT_NDR,
    FAULT_OTHER,
    FAULT_SEC_PKG_ERROR,
    HEADER_SIZE,
    NCA_S_PROTO_ERROR,
    NCA_S_UNK_IF,
    NDR_SYNTAX,
    PFC_FIRST_FRAG,
    PFC_LAST_FRAG,
    PFC_SUPPORT_HEADER_SIGN,
    REASON_ABSTRACT_SYNTAX_NOT_SUPPORTED,
    REASON_TRANSFER_SYNTAXES_NOT_SUPPORTED,
    RESULT_ACCEPTANCE,
    RESULT_NEGOTIATE_ACK,
    RESULT_PROVIDER_REJECTION,
    SEC_TRAILER_SIZE,
    AuthLevel,
    Bind,
    BindAck,
    ContextResult,
    Header,
    Pdu,
    PduError,
    PType,
    Request,
    SecTrailer,
    Syntax,
    bind_nak_body,
    build_pdu,
    fault_body,
    response_prefix,
)
from hasmb.rpc.security import AuthIdentity, RpcAuthError, SecurityContext

log = logging.getLogger(__name__)

# C706 12.6.3.1: every implementation must accept fragments of 1432 bytes.
MIN_FRAG = 1432
MAX_FRAG = 5840
MAX_CALL_STUB = 1024 * 1024
MAX_CALLS = 64  # calls executing at once on one association
MAX_PARTIAL = 4  # requests being reassembled at once on one association
NCA_S_FAULT_CANCEL = 0x1C00000D
NCA_S_SERVER_TOO_BUSY = 0x1C010014
# Bind time feature negotiation (MS-RPCE 2.2.2.14): we honour "keep
# connection on orphan" trivially and do not multiplex security contexts.
BTFN_KEEP_CONNECTION_ON_ORPHAN = 0x02

_conn_ids = itertools.count(1)

Send = Callable[[bytes], Awaitable[None]]


@dataclass
class _PartialCall:
    context_id: int
    opnum: int
    auth_level: int
    stub: bytearray = field(default_factory=bytearray)


class RpcConnection:
    def __init__(
        self,
        interfaces: Sequence[RpcInterface],
        identity: AuthIdentity | None,
        send: Send,
        sec_addr: str,
        peer: str = "",
        transport_user: str | None = None,
    ) -> None:
        self._interfaces = list(interfaces)
        self._identity = identity
        self._send_raw = send
        self._sec_addr = sec_addr
        self._transport_user = transport_user
        self.association = Association(next(_conn_ids), peer)
        self._bound = False
        self._contexts: dict[int, RpcInterface] = {}
        self._sec: SecurityContext | None = None
        self.max_xmit_frag = MAX_FRAG
        self.max_recv_frag = MAX_FRAG
        self._partial: dict[int, _PartialCall] = {}
        self._calls: dict[int, asyncio.Task[None]] = {}
        self._send_lock = asyncio.Lock()
        self._cancel_requested: set[int] = set()
        self._closed = False

    @property
    def bound(self) -> bool:
        return self._bound

    # --- inbound ---------------------------------------------------------------

    async def receive(self, raw: bytes) -> bool:
        """Process one fragment; False means the transport should close."""
        try:
            pdu = Pdu.parse(raw)
        except PduError as e:
            log.info("rpc[%d]: malformed PDU: %s", self.association.conn_id, e)
            await self._fault(_call_id_of(raw), NCA_S_PROTO_ERROR)
            return False
        ptype = pdu.header.ptype
        try:
            if ptype == PType.BIND:
                return await self._on_bind(pdu, alter=False)
            if ptype == PType.ALTER_CONTEXT:
                return await self._on_bind(pdu, alter=True)
            if ptype == PType.AUTH3:
                return self._on_auth3(pdu)
            if ptype == PType.REQUEST:
                return await self._on_request(pdu)
            if ptype in (PType.CO_CANCEL, PType.ORPHANED):
                self._cancel(pdu.header.call_id, orphaned=ptype == PType.ORPHANED)
                return True
            if ptype == PType.SHUTDOWN:
                return True
        except PduError as e:
            log.info("rpc[%d]: bad %s PDU: %s", self.association.conn_id, ptype, e)
            await self._fault(pdu.header.call_id, NCA_S_PROTO_ERROR)
            return False
        except Exception:
            # A bug must cost only this association, never the server.
            log.exception("rpc[%d]: failed on a %s PDU", self.association.conn_id, ptype)
            await self._fault(pdu.header.call_id, NCA_S_PROTO_ERROR)
            return False
        log.info("rpc[%d]: unexpected PDU type %d", self.association.conn_id, ptype)
        await self._fault(pdu.header.call_id, NCA_S_PROTO_ERROR)
        return False

    async def _on_bind(self, pdu: Pdu, alter: bool) -> bool:
        call_id = pdu.header.call_id
        if alter != self._bound:
            # bind on a bound association, or alter_context before bind.
            if alter:
                await self._fault(call_id, NCA_S_PROTO_ERROR)
            else:
                await self._bind_nak(call_id, BIND_NAK_REASON_NOT_SPECIFIED)
            return False
        bind = Bind.parse(pdu.body)
        out_token: bytes | None = None
        if pdu.trailer is not None:
            t = pdu.trailer
            try:
                if self._sec is None:
                    if self._identity is None:
                        raise RpcAuthError("this endpoint does not authenticate")
                    self._sec = SecurityContext(
                        t.auth_type, t.auth_level, t.context_id, self._identity
                    )
                sec = self._sec
                if (t.auth_type, t.auth_level, t.context_id) != (
                    sec.auth_type,
                    sec.auth_level,
                    sec.context_id,
                ):
                    raise RpcAuthError("security context multiplexing is not supported")
                if not sec.complete:
                    out_token, _ = sec.step(pdu.auth_value)
            except RpcAuthError as e:
                log.info(
                    "rpc[%d]: auth failed in %s: %s",
                    self.association.conn_id,
                    "alter_context" if alter else "bind",
                    e,
                )
                if alter:
                    await self._fault(call_id, FAULT_ACCESS_DENIED)
                else:
                    await self._bind_nak(call_id, BIND_NAK_AUTH_TYPE_NOT_RECOGNIZED)
                return False
        if not alter:
            self.max_xmit_frag = max(MIN_FRAG, min(bind.max_recv_frag, MAX_FRAG))
            self.max_recv_frag = max(MIN_FRAG, min(bind.max_xmit_frag, MAX_FRAG))
            self._bound = True
        results = [
            self._negotiate_context(c.context_id, c.abstract, c.transfers) for c in bind.contexts
        ]
        group = bind.assoc_group_id or (int.from_bytes(os.urandom(4), "little") | 1)
        ack = BindAck(
            self.max_xmit_frag,
            self.max_recv_frag,
            group,
            b"" if alter else self._sec_addr.encode() + b"\x00",
            results,
        )
        flags = PFC_FIRST_FRAG | PFC_LAST_FRAG | (pdu.header.flags & PFC_SUPPORT_HEADER_SIGN)
        trailer = None
        if out_token is not None and self._sec is not None:
            trailer = SecTrailer(self._sec.auth_type, self._sec.auth_level, 0, self._sec.context_id)
        ptype = PType.ALTER_CONTEXT_RESP if alter else PType.BIND_ACK
        await self._send(build_pdu(ptype, flags, call_id, ack.pack(), trailer, out_token or b""))
        return True

    def _negotiate_context(
        self, ctx_id: int, abstract: Syntax, transfers: list[Syntax]
    ) -> ContextResult:
        if any(_is_btfn(t) for t in transfers) and NDR_SYNTAX not in transfers:
            btfn = next(t for t in transfers if _is_btfn(t))
            bits = btfn[0].bytes_le[8]
            return ContextResult(RESULT_NEGOTIATE_ACK, bits & BTFN_KEEP_CONNECTION_ON_ORPHAN)
        iface = next(
            (
                i
                for i in self._interfaces
                if i.uuid == abstract[0] and version_matches(i, abstract[1])
            ),
            None,
        )
        if iface is None:
            return ContextResult(RESULT_PROVIDER_REJECTION, REASON_ABSTRACT_SYNTAX_NOT_SUPPORTED)
        if NDR_SYNTAX not in transfers:
            return ContextResult(RESULT_PROVIDER_REJECTION, REASON_TRANSFER_SYNTAXES_NOT_SUPPORTED)
        existing = self._contexts.get(ctx_id)
        if existing is not None and existing is not iface:
            return ContextResult(RESULT_PROVIDER_REJECTION, REASON_ABSTRACT_SYNTAX_NOT_SUPPORTED)
        self._contexts[ctx_id] = iface
        return ContextResult(RESULT_ACCEPTANCE, 0, NDR_SYNTAX)

    def _on_auth3(self, pdu: Pdu) -> bool:
        sec = self._sec
        t = pdu.trailer
        if sec is None or t is None or sec.complete or t.context_id != sec.context_id:
            log.info("rpc[%d]: unexpected auth3", self.association.conn_id)
            return False
        try:
            sec.step(pdu.auth_value)
        except RpcAuthError as e:
            # auth3 has no reply; the next request gets access denied.
            log.info("rpc[%d]: auth3 failed: %s", self.association.conn_id, e)
        return True

    async def _on_request(self, pdu: Pdu) -> bool:
        h = pdu.header
        if not self._bound:
            await self._fault(h.call_id, NCA_S_PROTO_ERROR)
            return False
        req = Request.parse(h.flags, pdu.body)
        level = AuthLevel.NONE
        stub = req.stub
        sec = self._sec
        if sec is not None:
            if not sec.complete:
                await self._fault(h.call_id, FAULT_ACCESS_DENIED, req.context_id)
                return False
            level = AuthLevel(sec.auth_level)
            try:
                stub = self._unprotect(pdu, req, sec)
            except (RpcAuthError, PduError) as e:
                log.info("rpc[%d]: request protection: %s", self.association.conn_id, e)
                await self._fault(h.call_id, FAULT_SEC_PKG_ERROR, req.context_id)
                return False
        elif pdu.trailer is not None:
            await self._fault(h.call_id, FAULT_ACCESS_DENIED, req.context_id)
            return False

        part = self._partial.get(h.call_id)
        if h.flags & PFC_FIRST_FRAG:
            if part is not None or h.call_id in self._calls:
                await self._fault(h.call_id, NCA_S_PROTO_ERROR, req.context_id)
                return False
            if len(self._partial) >= MAX_PARTIAL or len(self._calls) >= MAX_CALLS:
                await self._fault(h.call_id, NCA_S_SERVER_TOO_BUSY, req.context_id)
                return True
            part = _PartialCall(req.context_id, req.opnum, level)
            self._partial[h.call_id] = part
        elif part is None or part.context_id != req.context_id or part.opnum != req.opnum:
            await self._fault(h.call_id, NCA_S_PROTO_ERROR, req.context_id)
            return False
        part.stub += stub
        if len(part.stub) > MAX_CALL_STUB:
            del self._partial[h.call_id]
            await self._fault(h.call_id, NCA_S_PROTO_ERROR, req.context_id)
            return False
        if not h.flags & PFC_LAST_FRAG:
            return True
        del self._partial[h.call_id]
        iface = self._contexts.get(part.context_id)
        if iface is None:
            await self._fault(h.call_id, NCA_S_UNK_IF, part.context_id)
            return True
        if level < iface.min_auth_level:
            await self._fault(h.call_id, FAULT_ACCESS_DENIED, part.context_id)
            return True
        user = sec.user if sec is not None else self._transport_user
        log.debug(
            "rpc[%d]: call %d opnum %d (%d bytes)",
            self.association.conn_id,
            h.call_id,
            part.opnum,
            len(part.stub),
        )
        ctx = CallContext(self.association, h.call_id, level, user)
        task = asyncio.create_task(
            self._run_call(iface, part.opnum, bytes(part.stub), ctx, part.context_id)
        )
        self._calls[h.call_id] = task
        task.add_done_callback(functools.partial(self._call_done, h.call_id))
        return True

    def _call_done(self, call_id: int, _task: asyncio.Task[None]) -> None:
        self._calls.pop(call_id, None)
        self._cancel_requested.discard(call_id)

    def _unprotect(self, pdu: Pdu, req: Request, sec: SecurityContext) -> bytes:
        t = pdu.trailer
        if sec.auth_level < AuthLevel.PKT:
            if t is None:
                return req.stub
            return req.stub[: len(req.stub) - t.pad_length] if t.pad_length else req.stub
        if t is None:
            raise RpcAuthError("request lacks its verifier")
        if (t.auth_type, t.auth_level, t.context_id) != (
            sec.auth_type,
            sec.auth_level,
            sec.context_id,
        ):
            raise RpcAuthError("request verifier does not match the security context")
        if len(pdu.auth_value) != sec.verifier_size() or t.pad_length > len(req.stub):
            raise RpcAuthError("bad verifier size or padding")
        raw = pdu.raw
        sig_at = len(raw) - len(pdu.auth_value)
        if sec.auth_level == AuthLevel.PRIVACY:
            hdr_len = HEADER_SIZE + len(req.header_bytes())
            plain = sec.unseal(req.stub)
            whole = raw[:hdr_len] + plain + raw[sig_at - SEC_TRAILER_SIZE : sig_at]
            sec.check(whole, pdu.auth_value)
            stub = plain
        else:
            sec.check(raw[:sig_at], pdu.auth_value)
            stub = req.stub
        return stub[: len(stub) - t.pad_length]

    def _cancel(self, call_id: int, orphaned: bool) -> None:
        self._partial.pop(call_id, None)
        task = self._calls.get(call_id)
        if task is not None:
            task.cancel()
            if not orphaned:
                self._cancel_requested.add(call_id)

    # --- calls -----------------------------------------------------------------

    async def _run_call(
        self, iface: RpcInterface, opnum: int, stub: bytes, ctx: CallContext, context_id: int
    ) -> None:
        try:
            out = await iface.dispatch(opnum, stub, ctx)
        except asyncio.CancelledError:
            if not self._closed and ctx.call_id in self._cancel_requested:
                self._cancel_requested.discard(ctx.call_id)
                with contextlib.suppress(ConnectionError):
                    await self._fault(ctx.call_id, NCA_S_FAULT_CANCEL, context_id)
            raise
        except RpcFault as f:
            await self._fault(ctx.call_id, f.status, context_id)
            return
        except NdrError as e:
            log.info("rpc[%d]: opnum %d: bad stub: %s", self.association.conn_id, opnum, e)
            await self._fault(ctx.call_id, FAULT_NDR, context_id)
            return
        except Exception:
            log.exception("rpc[%d]: opnum %d failed", self.association.conn_id, opnum)
            await self._fault(ctx.call_id, FAULT_OTHER, context_id)
            return
        await self._respond(ctx.call_id, context_id, out)

    async def _respond(self, call_id: int, context_id: int, stub: bytes) -> None:
        sec = self._sec
        protected = sec is not None and sec.auth_level >= AuthLevel.PKT
        room = self.max_xmit_frag - HEADER_SIZE - 8
        if protected:
            room = (room - SEC_TRAILER_SIZE - 16) // 16 * 16
        async with self._send_lock:
            offset = 0
            while True:
                chunk = stub[offset : offset + room]
                flags = PFC_FIRST_FRAG if offset == 0 else 0
                offset += len(chunk)
                if offset >= len(stub):
                    flags |= PFC_LAST_FRAG
                prefix = response_prefix(len(stub) - offset + len(chunk), context_id)
                if protected:
                    assert sec is not None
                    pad = (-len(chunk)) % 16
                    payload = chunk + b"\x00" * pad
                    trailer = SecTrailer(sec.auth_type, sec.auth_level, pad, sec.context_id)
                    size = HEADER_SIZE + len(prefix) + len(payload) + SEC_TRAILER_SIZE + 16
                    header = Header(PType.RESPONSE, flags, size, 16, call_id).pack()
                    whole = header + prefix + payload + trailer.pack()
                    if sec.auth_level == AuthLevel.PRIVACY:
                        sealed, sig = sec.seal(payload, whole)
                        frag = header + prefix + sealed + trailer.pack() + sig
                    else:
                        frag = whole + sec.sign(whole)
                else:
                    frag = build_pdu(PType.RESPONSE, flags, call_id, prefix + chunk)
                await self._send_raw(frag)
                if flags & PFC_LAST_FRAG:
                    break

    # --- outbound helpers ------------------------------------------------------

    async def _send(self, data: bytes) -> None:
        async with self._send_lock:
            await self._send_raw(data)

    async def _fault(self, call_id: int, status: int, context_id: int = 0) -> None:
        flags = PFC_FIRST_FRAG | PFC_LAST_FRAG
        if status in (NCA_S_UNK_IF, NCA_S_PROTO_ERROR, FAULT_ACCESS_DENIED):
            flags |= 0x20  # PFC_DID_NOT_EXECUTE
        with contextlib.suppress(ConnectionError):
            await self._send(build_pdu(PType.FAULT, flags, call_id, fault_body(status, context_id)))

    async def _bind_nak(self, call_id: int, reason: int) -> None:
        with contextlib.suppress(ConnectionError):
            await self._send(
                build_pdu(
                    PType.BIND_NAK, PFC_FIRST_FRAG | PFC_LAST_FRAG, call_id, bind_nak_body(reason)
                )
            )

    async def close(self) -> None:
        """Cancel pending calls and run context handle rundowns."""
        if self._closed:
            return
        self._closed = True
        tasks = list(self._calls.values())
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for rundown in self.association.rundown:
            try:
                rundown()
            except Exception:
                log.exception("rpc[%d]: rundown failed", self.association.conn_id)
        self.association.rundown.clear()


def _is_btfn(syntax: Syntax) -> bool:
    return syntax[0].bytes_le[:8] == BTFN_PREFIX


def _call_id_of(raw: bytes) -> int:
    return int(struct.unpack_from("<I", raw, 12)[0]) if len(raw) >= 16 else 0
