"""Connection-oriented DCE/RPC PDUs (C706 chapter 12, MS-RPCE 2.2.2).

Parsing is strict about lengths and lenient about nothing: every decoder raises
`PduError` on truncated or inconsistent input so the server can answer with a
fault or bind_nak (or drop the connection) instead of crashing.
"""

from __future__ import annotations

import enum
import struct
import uuid
from dataclasses import dataclass, field

HEADER_SIZE = 16
SEC_TRAILER_SIZE = 8
DREP_LE = b"\x10\x00\x00\x00"


class PduError(Exception):
    """Malformed or unsupported PDU."""


class PType(enum.IntEnum):
    REQUEST = 0
    RESPONSE = 2
    FAULT = 3
    BIND = 11
    BIND_ACK = 12
    BIND_NAK = 13
    ALTER_CONTEXT = 14
    ALTER_CONTEXT_RESP = 15
    AUTH3 = 16
    SHUTDOWN = 17
    CO_CANCEL = 18
    ORPHANED = 19


PFC_FIRST_FRAG = 0x01
PFC_LAST_FRAG = 0x02
PFC_SUPPORT_HEADER_SIGN = 0x04  # in bind / bind_ack (same bit as PENDING_CANCEL)
PFC_CONC_MPX = 0x10
PFC_DID_NOT_EXECUTE = 0x20
PFC_OBJECT_UUID = 0x80


class AuthType(enum.IntEnum):
    NONE = 0
    SPNEGO = 9
    NTLMSSP = 10


class AuthLevel(enum.IntEnum):
    NONE = 1
    CONNECT = 2
    CALL = 3
    PKT = 4
    INTEGRITY = 5
    PRIVACY = 6


# Fault status codes (C706 appendix E, MS-RPCE 2.2.2.12 / 3.1.1.5.5).
NCA_S_OP_RNG_ERROR = 0x1C010002
NCA_S_UNK_IF = 0x1C010003
NCA_S_PROTO_ERROR = 0x1C01000B
NCA_S_FAULT_CONTEXT_MISMATCH = 0x1C00001A
FAULT_ACCESS_DENIED = 0x00000005
FAULT_NDR = 0x000006F7  # RPC_X_BAD_STUB_DATA
FAULT_SEC_PKG_ERROR = 0x00000721
FAULT_CANT_PERFORM = 0x000006D8
FAULT_OTHER = 0x00000001

# bind_nak reasons (C706 12.6.4.6)
BIND_NAK_REASON_NOT_SPECIFIED = 0
BIND_NAK_LOCAL_LIMIT_EXCEEDED = 2
BIND_NAK_PROTOCOL_VERSION_NOT_SUPPORTED = 4
BIND_NAK_AUTH_TYPE_NOT_RECOGNIZED = 8
BIND_NAK_INVALID_CHECKSUM = 9

# p_cont_def_result_t / p_provider_reason_t
RESULT_ACCEPTANCE = 0
RESULT_USER_REJECTION = 1
RESULT_PROVIDER_REJECTION = 2
RESULT_NEGOTIATE_ACK = 3  # MS-RPCE 2.2.2.4 bind time feature negotiation
REASON_NOT_SPECIFIED = 0
REASON_ABSTRACT_SYNTAX_NOT_SUPPORTED = 1
REASON_TRANSFER_SYNTAXES_NOT_SUPPORTED = 2

NDR_SYNTAX = (uuid.UUID("8a885d04-1ceb-11c9-9fe8-08002b104860"), 2)
NULL_SYNTAX = (uuid.UUID(int=0), 0)
# MS-RPCE 3.3.1.5.3: the first 8 bytes identify bind time feature negotiation.
BTFN_PREFIX = uuid.UUID("6cb71c2c-9812-4540-0000-000000000000").bytes_le[:8]

Syntax = tuple[uuid.UUID, int]  # (uuid, version as major | minor << 16)


def syntax_version(major: int, minor: int) -> int:
    return (major & 0xFFFF) | ((minor & 0xFFFF) << 16)


@dataclass
class Header:
    ptype: int
    flags: int
    frag_length: int
    auth_length: int
    call_id: int
    vers_minor: int = 0
    drep: bytes = DREP_LE

    @classmethod
    def parse(cls, data: bytes) -> Header:
        if len(data) < HEADER_SIZE:
            raise PduError("short header")
        vers, minor, ptype, flags = data[0], data[1], data[2], data[3]
        drep = bytes(data[4:8])
        frag_length, auth_length, call_id = struct.unpack_from("<HHI", data, 8)
        if vers != 5 or minor > 1:
            raise PduError(f"unsupported RPC version {vers}.{minor}")
        if drep[0] & 0xF0 != 0x10 or drep[1] != 0:
            # Big-endian or non-ASCII/IEEE peers are not supported.
            raise PduError("unsupported data representation")
        if frag_length < HEADER_SIZE:
            raise PduError("frag_length too small")
        return cls(ptype, flags, frag_length, auth_length, call_id, minor, drep)

    def pack(self) -> bytes:
        return (
            bytes([5, self.vers_minor, self.ptype, self.flags])
            + self.drep
            + struct.pack("<HHI", self.frag_length, self.auth_length, self.call_id)
        )


@dataclass
class SecTrailer:
    auth_type: int
    auth_level: int
    pad_length: int
    context_id: int

    def pack(self) -> bytes:
        return struct.pack(
            "<BBBBI", self.auth_type, self.auth_level, self.pad_length, 0, self.context_id
        )


@dataclass
class Pdu:
    """A whole fragment split into header, body (between header and sec_trailer
    padding included) and optional auth part."""

    header: Header
    body: bytes
    trailer: SecTrailer | None
    auth_value: bytes
    raw: bytes

    @classmethod
    def parse(cls, raw: bytes) -> Pdu:
        h = Header.parse(raw)
        if h.frag_length != len(raw):
            raise PduError("frag_length does not match the fragment")
        if h.auth_length:
            start = len(raw) - h.auth_length - SEC_TRAILER_SIZE
            if start < HEADER_SIZE:
                raise PduError("auth_length too large")
            at, al, pad, _res, ctx = struct.unpack_from("<BBBBI", raw, start)
            trailer = SecTrailer(at, al, pad, ctx)
            return cls(h, raw[HEADER_SIZE:start], trailer, raw[start + SEC_TRAILER_SIZE :], raw)
        return cls(h, raw[HEADER_SIZE:], None, b"", raw)


def build_pdu(
    ptype: int,
    flags: int,
    call_id: int,
    body: bytes,
    trailer: SecTrailer | None = None,
    auth_value: bytes = b"",
) -> bytes:
    """Assemble a fragment; `body` must already include any auth padding."""
    auth_part = trailer.pack() + auth_value if trailer is not None else b""
    length = HEADER_SIZE + len(body) + len(auth_part)
    h = Header(ptype, flags, length, len(auth_value) if trailer else 0, call_id)
    return h.pack() + body + auth_part


# --- bind / alter_context -------------------------------------------------


@dataclass
class ContextElem:
    context_id: int
    abstract: Syntax
    transfers: list[Syntax]


@dataclass
class Bind:
    max_xmit_frag: int
    max_recv_frag: int
    assoc_group_id: int
    contexts: list[ContextElem]

    @classmethod
    def parse(cls, body: bytes) -> Bind:
        try:
            max_xmit, max_recv, group, n = struct.unpack_from("<HHIB", body, 0)
            off = 12
            contexts = []
            for _ in range(n):
                ctx_id, n_ts = struct.unpack_from("<HB", body, off)
                off += 4
                abstract = _syntax(body, off)
                off += 20
                transfers = []
                for _ in range(n_ts):
                    transfers.append(_syntax(body, off))
                    off += 20
                contexts.append(ContextElem(ctx_id, abstract, transfers))
        except struct.error as e:
            raise PduError(f"truncated bind: {e}") from None
        return cls(max_xmit, max_recv, group, contexts)

    def pack(self) -> bytes:
        out = bytearray(
            struct.pack(
                "<HHIBBH",
                self.max_xmit_frag,
                self.max_recv_frag,
                self.assoc_group_id,
                len(self.contexts),
                0,
                0,
            )
        )
        for c in self.contexts:
            out += struct.pack("<HBB", c.context_id, len(c.transfers), 0)
            out += _pack_syntax(c.abstract)
            for t in c.transfers:
                out += _pack_syntax(t)
        return bytes(out)


def _syntax(data: bytes, off: int) -> Syntax:
    if off + 20 > len(data):
        raise PduError("truncated syntax id")
    return uuid.UUID(bytes_le=bytes(data[off : off + 16])), struct.unpack_from(
        "<I", data, off + 16
    )[0]


def _pack_syntax(s: Syntax) -> bytes:
    return s[0].bytes_le + struct.pack("<I", s[1])


@dataclass
class ContextResult:
    result: int
    reason: int
    transfer: Syntax = NULL_SYNTAX


@dataclass
class BindAck:
    max_xmit_frag: int
    max_recv_frag: int
    assoc_group_id: int
    sec_addr: bytes  # including the terminating NUL; empty for alter_context_resp
    results: list[ContextResult] = field(default_factory=list)

    def pack(self) -> bytes:
        out = bytearray(
            struct.pack(
                "<HHIH",
                self.max_xmit_frag,
                self.max_recv_frag,
                self.assoc_group_id,
                len(self.sec_addr),
            )
        )
        out += self.sec_addr
        # The result list is 4-aligned relative to the PDU start (header is 16 bytes).
        while (HEADER_SIZE + len(out)) % 4:
            out.append(0)
        out += struct.pack("<BBH", len(self.results), 0, 0)
        for r in self.results:
            out += struct.pack("<HH", r.result, r.reason) + _pack_syntax(r.transfer)
        return bytes(out)

    @classmethod
    def parse(cls, body: bytes) -> BindAck:
        try:
            max_xmit, max_recv, group, addr_len = struct.unpack_from("<HHIH", body, 0)
            off = 10 + addr_len
            sec_addr = bytes(body[10:off])
            off += (-(HEADER_SIZE + off)) % 4
            (n,) = struct.unpack_from("<B", body, off)
            off += 4
            results = []
            for _ in range(n):
                res, reason = struct.unpack_from("<HH", body, off)
                results.append(ContextResult(res, reason, _syntax(body, off + 4)))
                off += 24
        except struct.error as e:
            raise PduError(f"truncated bind_ack: {e}") from None
        return cls(max_xmit, max_recv, group, sec_addr, results)


def bind_nak_body(reason: int) -> bytes:
    # provider_reject_reason, then p_rt_versions_supported: one version, 5.0
    return struct.pack("<HBBB", reason, 1, 5, 0) + b"\x00\x00\x00"


# --- request / response / fault -----------------------------------------------


@dataclass
class Request:
    alloc_hint: int
    context_id: int
    opnum: int
    object_uuid: uuid.UUID | None
    stub: bytes

    @classmethod
    def parse(cls, flags: int, body: bytes) -> Request:
        if len(body) < 8:
            raise PduError("truncated request")
        alloc_hint, ctx, opnum = struct.unpack_from("<IHH", body, 0)
        off = 8
        obj = None
        if flags & PFC_OBJECT_UUID:
            if len(body) < 24:
                raise PduError("truncated request object uuid")
            obj = uuid.UUID(bytes_le=bytes(body[8:24]))
            off = 24
        return cls(alloc_hint, ctx, opnum, obj, bytes(body[off:]))

    def header_bytes(self) -> bytes:
        h = struct.pack("<IHH", self.alloc_hint, self.context_id, self.opnum)
        return h + (self.object_uuid.bytes_le if self.object_uuid else b"")


def response_prefix(alloc_hint: int, context_id: int) -> bytes:
    return struct.pack("<IHBB", alloc_hint, context_id, 0, 0)


def fault_body(status: int, context_id: int = 0) -> bytes:
    # alloc_hint, p_cont_id, cancel_count, reserved/flags, status, reserved
    return struct.pack("<IHBBII", 0, context_id, 0, 0, status, 0)


def parse_fault_status(body: bytes) -> int:
    if len(body) < 12:
        raise PduError("truncated fault")
    return int(struct.unpack_from("<I", body, 8)[0])
