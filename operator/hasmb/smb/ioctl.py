"""IOCTL (MS-SMB2 3.3.5.15): dispatch to FSCTL handlers registered in the Registry.

Handlers here: validate-negotiate, query-network-interface-info, pipe transceive,
resiliency. Server-side copy and sparse-file FSCTLs live in hasmb.smb.fsctl_data.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

from hasmb.smb.constants import (
    DIALECT_311,
    FSCTL_DFS_GET_REFERRALS,
    FSCTL_LMR_REQUEST_RESILIENCY,
    FSCTL_PIPE_TRANSCEIVE,
    FSCTL_PIPE_WAIT,
    FSCTL_QUERY_NETWORK_INTERFACE_INFO,
    FSCTL_VALIDATE_NEGOTIATE_INFO,
    IOCTL_IS_FSCTL,
    Command,
    Status,
)
from hasmb.smb.errors import SmbError
from hasmb.smb.header import MalformedPacket
from hasmb.smb.request import RELATED_FILE_ID, Registry, Request
from hasmb.smb.state import Open

_REQ = struct.Struct("<HHI16sIIIIIIII")
_RESP = struct.Struct("<HHI16sIIIIII")
NO_FILE = b"\xff" * 16
MAX_RESILIENT_MS = 300_000

# FSCTLs that are not tied to an open file (FileId is all ones)
GLOBAL_FSCTLS = frozenset(
    {
        FSCTL_VALIDATE_NEGOTIATE_INFO,
        FSCTL_QUERY_NETWORK_INTERFACE_INFO,
        FSCTL_DFS_GET_REFERRALS,
        FSCTL_PIPE_WAIT,
    }
)


def register(reg: Registry) -> None:
    reg.add(Command.IOCTL, handle_ioctl)
    reg.add_fsctl(FSCTL_VALIDATE_NEGOTIATE_INFO, validate_negotiate)
    reg.add_fsctl(FSCTL_QUERY_NETWORK_INTERFACE_INFO, query_network_interfaces)
    reg.add_fsctl(FSCTL_PIPE_TRANSCEIVE, pipe_transceive)
    reg.add_fsctl(FSCTL_LMR_REQUEST_RESILIENCY, request_resiliency)
    from hasmb.smb import fsctl_data

    fsctl_data.register(reg)


async def handle_ioctl(req: Request) -> bytes:
    req.structure_size(57)
    (_, _r, ctl, file_id, in_off, in_len, _max_in, _out_off, _out_len, max_out, flags, _r2) = (
        req.body(_REQ)
    )
    data = req.buffer(in_off, in_len)
    if len(data) != in_len:
        raise SmbError(Status.INVALID_PARAMETER)
    if flags != IOCTL_IS_FSCTL:
        raise SmbError(Status.NOT_SUPPORTED)
    if max_out > req.conn.max_transact or in_len > req.conn.max_transact:
        raise SmbError(Status.INVALID_PARAMETER)
    op: Open | None = None
    if ctl not in GLOBAL_FSCTLS or (file_id != NO_FILE and file_id != RELATED_FILE_ID):
        if ctl in GLOBAL_FSCTLS and file_id == NO_FILE:
            op = None
        else:
            op = req.lookup_open(file_id)
    handler = req.server.registry.fsctls.get(ctl)
    if handler is None:
        if ctl == FSCTL_DFS_GET_REFERRALS:
            raise SmbError(Status.FS_DRIVER_REQUIRED)
        raise SmbError(Status.INVALID_DEVICE_REQUEST if op is not None else Status.NOT_SUPPORTED)
    out = await handler(req, op, data, max_out)
    if len(out) > max_out:
        if req.status == Status.SUCCESS:
            raise SmbError(Status.BUFFER_TOO_SMALL)
        out = out[:max_out]
    out_off = 64 + 48 if out else 0
    return (
        _RESP.pack(49, 0, ctl, file_id, 0 if not data else 112, 0, out_off or 112, len(out), 0, 0)
        + out
    )


async def validate_negotiate(req: Request, op: Open | None, data: bytes, max_out: int) -> bytes:
    """MS-SMB2 3.3.5.15.12: any mismatch means a downgrade attack: drop the connection."""
    conn = req.conn
    if conn.dialect == DIALECT_311:
        raise MalformedPacket("validate-negotiate on 3.1.1")
    if len(data) < 24:
        raise MalformedPacket("short validate-negotiate")
    caps, guid, sec_mode, count = struct.unpack_from("<I16sHH", data)
    dialects = (
        list(struct.unpack_from(f"<{count}H", data, 24)) if len(data) >= 24 + 2 * count else []
    )
    if (
        caps != conn.client_capabilities
        or guid != conn.client_guid
        or sec_mode != conn.client_security_mode
        or dialects != conn.client_dialects
    ):
        raise MalformedPacket("validate-negotiate mismatch")
    if max_out < 24:
        raise SmbError(Status.INVALID_PARAMETER)
    req.sign_response = True
    return struct.pack(
        "<I16sHH",
        conn.server_capabilities,
        req.server.server_guid,
        conn.server_security_mode,
        conn.dialect,
    )


async def query_network_interfaces(
    req: Request, op: Open | None, data: bytes, max_out: int
) -> bytes:
    ch = req.server.handler_for(req.conn)
    addr = "127.0.0.1"
    if ch is not None:
        sockname = ch.writer.get_extra_info("sockname")
        if sockname:
            addr = sockname[0]
    ip = ipaddress.ip_address(addr)
    if ip.version == 4:
        sa = struct.pack("<HH", socket.AF_INET, 0) + ip.packed
    else:
        sa = struct.pack("<HHI", 23, 0, 0) + ip.packed + struct.pack("<I", 0)
    sa = sa.ljust(128, b"\x00")
    return struct.pack("<IIIIQ", 0, 1, 0, 0, 10_000_000_000) + sa


async def pipe_transceive(req: Request, op: Open | None, data: bytes, max_out: int) -> bytes:
    if op is None or op.pipe is None:
        raise SmbError(Status.INVALID_DEVICE_REQUEST)
    try:
        out = await req.wait_cancellable(op.pipe.transceive(data, max_out))
    except SmbError:
        raise
    except Exception as exc:  # hasmb.rpc.pipes.PipeError
        raise SmbError(Status.PIPE_BROKEN) from exc
    if getattr(op.pipe, "available", 0):
        req.status = Status.BUFFER_OVERFLOW
    return out


async def request_resiliency(req: Request, op: Open | None, data: bytes, max_out: int) -> bytes:
    if op is None or op.pipe is not None:
        raise SmbError(Status.INVALID_PARAMETER)
    if len(data) < 8:
        raise SmbError(Status.INVALID_PARAMETER)
    (timeout, _r) = struct.unpack_from("<II", data)
    if timeout > MAX_RESILIENT_MS:
        raise SmbError(Status.INVALID_PARAMETER)
    op.resilient_timeout_ms = timeout or 120_000
    op.is_durable = True
    return b""
