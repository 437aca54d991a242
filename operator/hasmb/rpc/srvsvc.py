"""srvsvc (MS-SRVS) subset: share enumeration and server info.

Opnums: 15 NetrShareEnum (levels 0, 1, 2, 501, 502), 16 NetrShareGetInfo
(0, 1, 2, 501, 502, 1005), 21 NetrServerGetInfo (100, 101, 102).  Other
opnums fault op_rng_error; unknown levels answer ERROR_INVALID_LEVEL.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from hasmb.rpc.interface import CallContext, RpcFault
from hasmb.rpc.ndr import NdrReader, NdrWriter
from hasmb.rpc.pdu import NCA_S_OP_RNG_ERROR, AuthLevel

SRVSVC_UUID = uuid.UUID("4b324fc8-1670-01d3-1278-5a47bf6ee188")

STYPE_DISKTREE = 0x00000000
STYPE_IPC = 0x00000003
STYPE_SPECIAL = 0x80000000

ERROR_SUCCESS = 0
ERROR_INVALID_LEVEL = 124
NERR_NET_NAME_NOT_FOUND = 2310

PLATFORM_ID_NT = 500
SV_TYPE = 0x00000001 | 0x00000002 | 0x00001000 | 0x00008000  # wks, server, NT, server NT

SHARE_LEVELS = (0, 1, 2, 501, 502)
GETINFO_LEVELS = (*SHARE_LEVELS, 1005)
SERVER_LEVELS = (100, 101, 102)


@dataclass(frozen=True)
class ShareInfo:
    name: str
    type: int
    comment: str
    path: str


def _put_share_scalars(w: NdrWriter, level: int, s: ShareInfo) -> None:
    if level == 1005:
        w.u32(0)
        return
    w.referent()  # netname
    if level == 0:
        return
    w.u32(s.type)
    w.referent()  # remark
    if level == 1:
        return
    if level == 501:
        w.u32(0)  # shi501_flags: manual caching
        return
    w.u32(0)  # permissions
    w.u32(0xFFFFFFFF)  # max_uses: unlimited
    w.u32(0)  # current_uses
    w.referent()  # path
    w.referent(False)  # password
    if level == 502:
        w.u32(0)  # reserved (security descriptor size)
        w.referent(False)  # security descriptor


def _put_share_deferred(w: NdrWriter, level: int, s: ShareInfo) -> None:
    if level == 1005:
        return
    w.wstring(s.name)
    if level == 0:
        return
    w.wstring(s.comment)
    if level in (2, 502):
        w.wstring(s.path)


class SrvsvcInterface:
    uuid = SRVSVC_UUID
    version = (3, 0)
    min_auth_level: int = AuthLevel.NONE

    def __init__(self, netname: str, shares: Callable[[], list[ShareInfo]]) -> None:
        self.netname = netname
        self._shares = shares

    def shares(self) -> list[ShareInfo]:
        out = list(self._shares())
        if not any(s.name.upper() == "IPC$" for s in out):
            out.append(
                ShareInfo("IPC$", STYPE_IPC | STYPE_SPECIAL, f"IPC Service ({self.netname})", "")
            )
        return out

    async def dispatch(self, opnum: int, stub: bytes, ctx: CallContext) -> bytes:
        r = NdrReader(stub)
        if opnum == 15:
            return self._share_enum(r)
        if opnum == 16:
            return self._share_get_info(r)
        if opnum == 21:
            return self._server_get_info(r)
        raise RpcFault(NCA_S_OP_RNG_ERROR)

    def _share_enum(self, r: NdrReader) -> bytes:
        r.unique_wstring()  # ServerName
        level = r.u32()
        r.u32()  # union discriminant
        if r.referent():
            r.u32()  # EntriesRead
            r.referent()  # Buffer (clients send NULL)
        r.u32()  # PreferedMaximumLength
        has_resume = r.referent() != 0
        if has_resume:
            r.u32()
        w = NdrWriter()
        shares = self.shares()
        if level not in SHARE_LEVELS:
            # Echo the level with an empty container so the union still decodes.
            w.u32(level)
            w.u32(level)
            w.referent(False)
            w.u32(0)
            self._resume(w, has_resume)
            w.u32(ERROR_INVALID_LEVEL)
            return w.bytes()
        w.u32(level)
        w.u32(level)
        w.referent()  # container
        w.u32(len(shares))
        w.referent(bool(shares))
        if shares:
            w.u32(len(shares))
            for s in shares:
                _put_share_scalars(w, level, s)
            for s in shares:
                _put_share_deferred(w, level, s)
        w.u32(len(shares))  # TotalEntries
        self._resume(w, has_resume)
        w.u32(ERROR_SUCCESS)
        return w.bytes()

    @staticmethod
    def _resume(w: NdrWriter, present: bool) -> None:
        w.referent(present)
        if present:
            w.u32(0)

    def _share_get_info(self, r: NdrReader) -> bytes:
        r.unique_wstring()
        name = r.wstring()
        level = r.u32()
        w = NdrWriter()
        share = next((s for s in self.shares() if s.name.lower() == name.lower()), None)
        if level not in GETINFO_LEVELS:
            raise RpcFault(0x1C000006)  # nca_s_fault_invalid_tag: no such union arm
        w.u32(level)
        if share is None:
            w.referent(False)
            w.u32(NERR_NET_NAME_NOT_FOUND)
            return w.bytes()
        w.referent()
        _put_share_scalars(w, level, share)
        _put_share_deferred(w, level, share)
        w.u32(ERROR_SUCCESS)
        return w.bytes()

    def _server_get_info(self, r: NdrReader) -> bytes:
        r.unique_wstring()
        level = r.u32()
        if level not in SERVER_LEVELS:
            raise RpcFault(0x1C000006)
        w = NdrWriter()
        w.u32(level)
        w.referent()
        w.u32(PLATFORM_ID_NT)
        w.referent()  # name
        if level >= 101:
            w.u32(10)  # version major
            w.u32(0)  # version minor
            w.u32(SV_TYPE)
            w.referent()  # comment
        if level == 102:
            for v in (0, 15, 0, 240, 3000, 0):  # users, disc, hidden, announce, anndelta, licenses
                w.u32(v)
            w.referent()  # userpath
        w.wstring(self.netname)
        if level >= 101:
            w.wstring(f"hasmb {self.netname}")
        if level == 102:
            w.wstring("C:\\")
        w.u32(ERROR_SUCCESS)
        return w.bytes()
