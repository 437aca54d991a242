"""PDU and NDR codecs: round trips and strict rejection of malformed input."""

from __future__ import annotations

import struct
import uuid

import pytest

from hasmb.rpc.ndr import ContextHandle, NdrError, NdrReader, NdrWriter
from hasmb.rpc.pdu import (
    NDR_SYNTAX,
    PFC_FIRST_FRAG,
    PFC_LAST_FRAG,
    Bind,
    BindAck,
    ContextElem,
    ContextResult,
    Pdu,
    PduError,
    PType,
    Request,
    SecTrailer,
    build_pdu,
    fault_body,
    parse_fault_status,
)

IFACE = (uuid.UUID("ccd8c074-d0e5-4a40-92b4-d074faa6ba28"), 1 | (1 << 16))


def test_bind_round_trip_with_auth_trailer() -> None:
    bind = Bind(4280, 4280, 0, [ContextElem(0, IFACE, [NDR_SYNTAX])])
    raw = build_pdu(
        PType.BIND,
        PFC_FIRST_FRAG | PFC_LAST_FRAG,
        7,
        bind.pack(),
        SecTrailer(10, 6, 0, 1),
        b"NTLMSSP\x00token",
    )
    pdu = Pdu.parse(raw)
    assert pdu.header.ptype == PType.BIND and pdu.header.call_id == 7
    assert pdu.trailer == SecTrailer(10, 6, 0, 1)
    assert pdu.auth_value == b"NTLMSSP\x00token"
    parsed = Bind.parse(pdu.body)
    assert parsed.contexts[0].abstract == IFACE
    assert parsed.contexts[0].transfers == [NDR_SYNTAX]


def test_bind_ack_aligns_result_list() -> None:
    for addr in (b"", b"5\x00", b"135\x00", b"\\PIPE\\srvsvc\x00"):
        ack = BindAck(4280, 4280, 0x1234, addr, [ContextResult(0, 0, NDR_SYNTAX)])
        body = ack.pack()
        assert (16 + len(body)) % 4 == 0
        back = BindAck.parse(body)
        assert back.sec_addr == addr and back.results[0].transfer == NDR_SYNTAX


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x05\x00\x0b\x03",  # short header
        b"\x04\x00\x0b\x03\x10\x00\x00\x00\x10\x00\x00\x00\x01\x00\x00\x00",  # version 4
        b"\x05\x00\x0b\x03\x00\x00\x00\x00\x10\x00\x00\x00\x01\x00\x00\x00",  # big endian
        b"\x05\x00\x0b\x03\x10\x00\x00\x00\x20\x00\x00\x00\x01\x00\x00\x00",  # frag_len lies
        b"\x05\x00\x0b\x03\x10\x00\x00\x00\x10\x00\x08\x00\x01\x00\x00\x00",  # auth_len too big
    ],
)
def test_malformed_headers_raise(raw: bytes) -> None:
    with pytest.raises(PduError):
        Pdu.parse(raw)


def test_truncated_bind_raises() -> None:
    bind = Bind(4280, 4280, 0, [ContextElem(0, IFACE, [NDR_SYNTAX])]).pack()
    for cut in (3, 13, 20, len(bind) - 1):
        with pytest.raises(PduError):
            Bind.parse(bind[:cut])


def test_request_with_object_uuid_and_fault() -> None:
    obj = uuid.uuid4()
    body = struct.pack("<IHH", 4, 0, 3) + obj.bytes_le + b"stub"
    req = Request.parse(0x80, body)
    assert req.object_uuid == obj and req.stub == b"stub" and req.opnum == 3
    with pytest.raises(PduError):
        Request.parse(0x80, body[:20])
    assert parse_fault_status(fault_body(0x1C010002)) == 0x1C010002


def test_ndr_strings_pointers_and_handles() -> None:
    w = NdrWriter()
    w.u8(1)
    w.unique_wstring("SVM1")
    w.unique_wstring(None)
    h = ContextHandle(0, uuid.uuid4())
    w.context_handle(h)
    w.u64(5)
    r = NdrReader(w.bytes())
    assert r.u8() == 1
    assert r.unique_wstring() == "SVM1"
    assert r.unique_wstring() is None
    assert r.context_handle() == h
    assert r.u64() == 5


def test_ndr_rejects_lying_strings() -> None:
    w = NdrWriter()
    w.u32(2)
    w.u32(0)
    w.u32(5)  # actual count larger than max count
    with pytest.raises(NdrError):
        NdrReader(w.bytes()).wstring()
    w = NdrWriter()
    w.u32(100)
    w.u32(0)
    w.u32(100)  # data missing
    with pytest.raises(NdrError):
        NdrReader(w.bytes()).wstring()
