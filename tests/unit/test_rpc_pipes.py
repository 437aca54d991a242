"""srvsvc over the contract-4 named pipe, with requests and responses built and
parsed by impacket's independent MS-SRVS structures."""

from __future__ import annotations

import struct
import uuid

from impacket.dcerpc.v5 import srvs
from impacket.dcerpc.v5.dtypes import NULL

from hasmb.rpc.pdu import (
    NCA_S_OP_RNG_ERROR,
    NDR_SYNTAX,
    PFC_FIRST_FRAG,
    PFC_LAST_FRAG,
    Bind,
    BindAck,
    ContextElem,
    Pdu,
    PType,
    build_pdu,
    parse_fault_status,
)
from hasmb.rpc.pipes import NamedPipe, PipeContext, PipeShareInfo, open_pipe

SRVSVC = (uuid.UUID("4b324fc8-1670-01d3-1278-5a47bf6ee188"), 3)
BOTH = PFC_FIRST_FRAG | PFC_LAST_FRAG


def ctx() -> PipeContext:
    return PipeContext(
        netname="SVM1",
        shares=[
            PipeShareInfo("data", 0, "the data", "C:\\data"),
            PipeShareInfo("logs", 0, "", "C:\\logs"),
        ],
        user="alice",
        session_key=b"k" * 16,
    )


def request(call_id: int, opnum: int, stub: bytes, flags: int = BOTH) -> bytes:
    return build_pdu(PType.REQUEST, flags, call_id, struct.pack("<IHH", len(stub), 0, opnum) + stub)


async def read_pdu(pipe: NamedPipe) -> Pdu:
    head = await pipe.read(16)
    (frag_len,) = struct.unpack_from("<H", head, 8)
    rest = await pipe.read(frag_len - 16)
    return Pdu.parse(head + rest)


async def bound_pipe() -> NamedPipe:
    pipe = open_pipe("\\PIPE\\srvsvc", ctx())
    assert pipe is not None
    bind = Bind(4280, 4280, 0, [ContextElem(0, SRVSVC, [NDR_SYNTAX])])
    ack_raw = await pipe.transceive(build_pdu(PType.BIND, BOTH, 1, bind.pack()), 4280)
    ack = Pdu.parse(ack_raw)
    assert ack.header.ptype == PType.BIND_ACK
    parsed = BindAck.parse(ack.body)
    assert parsed.sec_addr == b"\\PIPE\\srvsvc\x00"
    assert parsed.results[0].result == 0
    return pipe


def test_unknown_pipe_is_none() -> None:
    assert open_pipe("lsarpc", ctx()) is None
    assert open_pipe("srvsvcx", ctx()) is None
    assert open_pipe("SRVSVC", ctx()) is not None


async def test_share_enum_levels_decode_with_impacket() -> None:
    pipe = await bound_pipe()
    for call_id, level in enumerate((0, 1, 2, 501, 502), start=2):
        req = srvs.NetrShareEnum()
        req["ServerName"] = NULL
        req["InfoStruct"]["Level"] = level
        req["InfoStruct"]["ShareInfo"]["tag"] = level
        req["InfoStruct"]["ShareInfo"][f"Level{level}"]["Buffer"] = NULL
        req["PreferedMaximumLength"] = 0xFFFFFFFF
        req["ResumeHandle"] = NULL
        await pipe.write(request(call_id, 15, req.getData()))
        resp_pdu = await read_pdu(pipe)
        assert resp_pdu.header.ptype == PType.RESPONSE
        resp = srvs.NetrShareEnumResponse()
        resp.fromString(resp_pdu.body[8:])
        assert resp["ErrorCode"] == 0
        buf = resp["InfoStruct"]["ShareInfo"][f"Level{level}"]["Buffer"]
        names = [e[f"shi{level}_netname"][:-1] for e in buf]
        assert names == ["data", "logs", "IPC$"]
        assert resp["TotalEntries"] == 3
        if level in (2, 502):
            assert buf[0][f"shi{level}_path"][:-1] == "C:\\data"
        if level == 1:
            assert buf[2]["shi1_type"] == 0x80000003
    pipe.close()


async def test_share_get_info_and_server_info() -> None:
    pipe = await bound_pipe()
    req = srvs.NetrShareGetInfo()
    req["ServerName"] = NULL
    req["NetName"] = "DATA\x00"
    req["Level"] = 2
    await pipe.write(request(2, 16, req.getData()))
    resp = srvs.NetrShareGetInfoResponse()
    resp.fromString((await read_pdu(pipe)).body[8:])
    assert resp["InfoStruct"]["ShareInfo2"]["shi2_remark"][:-1] == "the data"
    req["NetName"] = "missing\x00"
    await pipe.write(request(3, 16, req.getData()))
    pdu = await read_pdu(pipe)
    assert struct.unpack("<I", pdu.body[-4:])[0] == 2310  # NERR_NetNameNotFound
    sreq = srvs.NetrServerGetInfo()
    sreq["ServerName"] = NULL
    sreq["Level"] = 101
    await pipe.write(request(4, 21, sreq.getData()))
    sresp = srvs.NetrServerGetInfoResponse()
    sresp.fromString((await read_pdu(pipe)).body[8:])
    assert sresp["InfoStruct"]["ServerInfo101"]["sv101_name"][:-1] == "SVM1"
    assert sresp["InfoStruct"]["ServerInfo101"]["sv101_platform_id"] == 500
    pipe.close()


async def test_fragmented_request_split_writes_and_short_reads() -> None:
    pipe = await bound_pipe()
    req = srvs.NetrShareEnum()
    req["ServerName"] = "\\\\SVM1\x00"
    req["InfoStruct"]["Level"] = 1
    req["InfoStruct"]["ShareInfo"]["tag"] = 1
    req["InfoStruct"]["ShareInfo"]["Level1"]["Buffer"] = NULL
    req["PreferedMaximumLength"] = 0xFFFFFFFF
    req["ResumeHandle"] = NULL
    stub = req.getData()
    first = request(9, 15, stub[:8], PFC_FIRST_FRAG)
    last = request(9, 15, stub[8:], PFC_LAST_FRAG)
    data = first + last
    for i in range(0, len(data), 7):  # the SMB layer may deliver any split
        await pipe.write(data[i : i + 7])
    head = await pipe.read(10)
    assert pipe.available > 0
    rest = await pipe.read(65536)
    pdu = Pdu.parse(head + rest)
    assert pdu.header.ptype == PType.RESPONSE and pdu.header.call_id == 9
    assert pipe.available == 0
    pipe.close()


async def test_unknown_opnum_faults_and_pipe_keeps_working() -> None:
    pipe = await bound_pipe()
    await pipe.write(request(2, 77, b""))
    pdu = await read_pdu(pipe)
    assert pdu.header.ptype == PType.FAULT
    assert parse_fault_status(pdu.body) == NCA_S_OP_RNG_ERROR
    sreq = srvs.NetrServerGetInfo()
    sreq["ServerName"] = NULL
    sreq["Level"] = 100
    await pipe.write(request(3, 21, sreq.getData()))
    assert (await read_pdu(pipe)).header.ptype == PType.RESPONSE
    pipe.close()


async def test_message_mode_one_fragment_per_read() -> None:
    many = ctx()
    many.shares = [PipeShareInfo(f"s{i:03d}", 0, "c" * 80, f"C:\\s{i}") for i in range(120)]
    pipe = open_pipe("srvsvc", many)
    assert pipe is not None
    bind = Bind(4280, 4280, 0, [ContextElem(0, SRVSVC, [NDR_SYNTAX])])
    await pipe.write(build_pdu(PType.BIND, BOTH, 1, bind.pack()))
    assert pipe.has_data and pipe.available == 0
    Pdu.parse(await pipe.read(65536))
    req = srvs.NetrShareEnum()
    req["ServerName"] = NULL
    req["InfoStruct"]["Level"] = 2
    req["InfoStruct"]["ShareInfo"]["tag"] = 2
    req["InfoStruct"]["ShareInfo"]["Level2"]["Buffer"] = NULL
    req["PreferedMaximumLength"] = 0xFFFFFFFF
    req["ResumeHandle"] = NULL
    first = await pipe.transceive(request(2, 15, req.getData()), 65536)
    frags = [Pdu.parse(first)]
    assert pipe.available == 0  # a whole message: no STATUS_BUFFER_OVERFLOW
    while not frags[-1].header.flags & PFC_LAST_FRAG:
        assert pipe.has_data
        frags.append(Pdu.parse(await pipe.read(65536)))  # parse() checks frag_length
    assert len(frags) > 2 and not pipe.has_data
    resp = srvs.NetrShareEnumResponse()
    resp.fromString(b"".join(f.body[8:] for f in frags))
    assert resp["TotalEntries"] == 121
    pipe.close()
