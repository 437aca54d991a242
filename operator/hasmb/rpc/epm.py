"""Endpoint mapper (C706 appendix O "ept_map", MS-RPCE 2.2.1.2.x towers).

Only ept_map (opnum 3) is served: it resolves an interface uuid/version to the
ncacn_ip_tcp port registered for it.  Everything else faults op_rng_error.
"""

from __future__ import annotations

import ipaddress
import struct
import uuid
from dataclasses import dataclass

from hasmb.rpc.interface import CallContext, RpcFault
from hasmb.rpc.ndr import NULL_HANDLE, NdrError, NdrReader, NdrWriter
from hasmb.rpc.pdu import NCA_S_OP_RNG_ERROR, NDR_SYNTAX, AuthLevel

EPM_UUID = uuid.UUID("e1af8308-5d1f-11c9-91a4-08002b14a0fa")
EPT_S_NOT_REGISTERED = 0x16C9A0D6
PROT_UUID = 0x0D
PROT_NCACN = 0x0B
PROT_TCP = 0x07
PROT_IP = 0x09
MAX_TOWERS = 500


@dataclass(frozen=True)
class TcpEndpoint:
    uuid: uuid.UUID
    version: tuple[int, int]
    port: int
    host: str = "0.0.0.0"


def build_tower(ep: TcpEndpoint) -> bytes:
    def floor(lhs: bytes, rhs: bytes) -> bytes:
        return struct.pack("<H", len(lhs)) + lhs + struct.pack("<H", len(rhs)) + rhs

    host = ep.host if _is_ipv4(ep.host) else "0.0.0.0"
    floors = [
        floor(
            bytes([PROT_UUID]) + ep.uuid.bytes_le + struct.pack("<H", ep.version[0]),
            struct.pack("<H", ep.version[1]),
        ),
        floor(
            bytes([PROT_UUID]) + NDR_SYNTAX[0].bytes_le + struct.pack("<H", 2), struct.pack("<H", 0)
        ),
        floor(bytes([PROT_NCACN]), struct.pack("<H", 0)),
        floor(bytes([PROT_TCP]), struct.pack(">H", ep.port)),
        floor(bytes([PROT_IP]), ipaddress.IPv4Address(host).packed),
    ]
    return struct.pack("<H", len(floors)) + b"".join(floors)


def _is_ipv4(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 4
    except ValueError:
        return False


def parse_tower_interface(tower: bytes) -> tuple[uuid.UUID, int] | None:
    """(uuid, major version) from floor 1, or None if the tower is not one."""
    try:
        (count,) = struct.unpack_from("<H", tower, 0)
        if count < 1:
            return None
        (lhs_len,) = struct.unpack_from("<H", tower, 2)
        lhs = tower[4 : 4 + lhs_len]
        if lhs_len < 19 or lhs[0] != PROT_UUID:
            return None
        return uuid.UUID(bytes_le=bytes(lhs[1:17])), struct.unpack_from("<H", lhs, 17)[0]
    except struct.error:
        return None


def parse_tower_port(tower: bytes) -> int | None:
    """The TCP port floor of a tower (client side)."""
    try:
        (count,) = struct.unpack_from("<H", tower, 0)
        off = 2
        for _ in range(count):
            (ll,) = struct.unpack_from("<H", tower, off)
            lhs = tower[off + 2 : off + 2 + ll]
            off += 2 + ll
            (rl,) = struct.unpack_from("<H", tower, off)
            rhs = tower[off + 2 : off + 2 + rl]
            off += 2 + rl
            if lhs[:1] == bytes([PROT_TCP]) and rl == 2:
                return int(struct.unpack(">H", rhs)[0])
    except struct.error:
        return None
    return None


class EndpointMapper:
    uuid = EPM_UUID
    version = (3, 0)
    min_auth_level: int = AuthLevel.NONE

    def __init__(self, endpoints: list[TcpEndpoint]) -> None:
        self.endpoints = endpoints

    async def dispatch(self, opnum: int, stub: bytes, ctx: CallContext) -> bytes:
        if opnum != 3:
            raise RpcFault(NCA_S_OP_RNG_ERROR)
        r = NdrReader(stub)
        if r.referent():  # object uuid (full pointer)
            r.raw(16)
        tower = b""
        if r.referent():
            length = r.u32()
            max_count = r.u32()
            if max_count != length or length > 4096:
                raise NdrError("bad tower length")
            tower = r.raw(length)
        r.context_handle()
        max_towers = min(r.u32(), MAX_TOWERS)
        wanted = parse_tower_interface(tower)
        found = [
            e
            for e in self.endpoints
            if wanted is not None and e.uuid == wanted[0] and e.version[0] == wanted[1]
        ][:max_towers]
        w = NdrWriter()
        w.context_handle(NULL_HANDLE)
        w.u32(len(found))
        w.u32(max_towers)
        w.u32(0)
        w.u32(len(found))
        for _ in found:
            w.referent()
        for e in found:
            t = build_tower(e)
            w.u32(len(t))
            w.u32(len(t))
            w.raw(t)
        w.u32(0 if found else EPT_S_NOT_REGISTERED)
        return w.bytes()
