"""The MS-SWN RPC interface: NDR (un)marshalling of opnums 0-5 onto WitnessRegistry.

IDL (MS-SWN 6): WITNESS_INTERFACE_INFO is {WCHAR InterfaceGroupName[260];
ULONG Version; USHORT State; ULONG IPV4; USHORT IPV6[8]; ULONG Flags} -- 552
bytes with NDR alignment; the addresses travel in network byte order.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import struct
import uuid
from collections.abc import Callable

from hasmb.rpc.interface import CallContext, RpcFault
from hasmb.rpc.ndr import NULL_HANDLE, ContextHandle, NdrReader, NdrWriter
from hasmb.rpc.pdu import NCA_S_OP_RNG_ERROR, AuthLevel
from hasmb.witness.config import WitnessInterfaceConfig
from hasmb.witness.messages import (
    ERROR_NO_MORE_ITEMS,
    ERROR_SUCCESS,
    IF_IPV4_VALID,
    IF_IPV6_VALID,
    IF_WITNESS,
    STATE_AVAILABLE,
    STATE_UNAVAILABLE,
    STATE_UNKNOWN,
    WITNESS_V2,
)
from hasmb.witness.registry import WitnessError, WitnessRegistry

log = logging.getLogger(__name__)

WITNESS_UUID = uuid.UUID("ccd8c074-d0e5-4a40-92b4-d074faa6ba28")
WITNESS_VERSION = (1, 1)

_STATE_CODES = {
    "available": STATE_AVAILABLE,
    "unavailable": STATE_UNAVAILABLE,
    "unknown": STATE_UNKNOWN,
}


def pack_interface_info(i: WitnessInterfaceConfig, witness_if: bool) -> bytes:
    name = i.name.encode("utf-16-le")[: 259 * 2]
    name = name + b"\x00" * (520 - len(name))
    # MS-SWN 3.1.4.1: only interfaces hosted elsewhere are offered for
    # registration (the witness must survive the failure it reports).
    flags = IF_WITNESS if witness_if else 0
    v4 = b"\x00" * 4
    v6 = b"\x00" * 16
    if i.ipv4:
        v4 = ipaddress.IPv4Address(i.ipv4).packed
        flags |= IF_IPV4_VALID
    if i.ipv6:
        v6 = ipaddress.IPv6Address(i.ipv6).packed
        flags |= IF_IPV6_VALID
    state = _STATE_CODES[i.state]
    # name(520) Version(4) State(2) pad(2) IPV4(4) IPV6(16) Flags(4)
    return name + struct.pack("<IHxx", WITNESS_V2, state) + v4 + v6 + struct.pack("<I", flags)


class WitnessRpcInterface:
    uuid = WITNESS_UUID
    version = WITNESS_VERSION
    # MS-SWN 3.1.4: the server requires packet integrity or privacy.
    min_auth_level: int = AuthLevel.INTEGRITY

    def __init__(
        self,
        registry: WitnessRegistry,
        interfaces: Callable[[], list[WitnessInterfaceConfig]],
        is_local: Callable[[WitnessInterfaceConfig], bool] = lambda _i: False,
    ) -> None:
        self._registry = registry
        self._interfaces = interfaces
        self._is_local = is_local
        # Replaced (after being set) whenever interfaces change, so a waiter that
        # took the current event before checking can never miss a change.
        self._changed = asyncio.Event()
        self._hooked: set[int] = set()

    async def dispatch(self, opnum: int, stub: bytes, ctx: CallContext) -> bytes:
        if opnum == 0:
            return await self._get_interface_list()
        if opnum in (1, 4):
            return self._register(NdrReader(stub), ctx, ex=opnum == 4)
        if opnum in (2, 5):
            return self._unregister(NdrReader(stub))
        if opnum == 3:
            return await self._async_notify(NdrReader(stub))
        raise RpcFault(NCA_S_OP_RNG_ERROR)

    def interfaces_changed(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _get_interface_list(self) -> bytes:
        ifaces = self._interfaces()
        w = NdrWriter()
        if not ifaces:
            w.referent(False)
            w.u32(ERROR_NO_MORE_ITEMS)
            return w.bytes()
        # MS-SWN 3.1.4.1: with no interface available, wait until one is.
        while not any(i.state == "available" for i in ifaces):
            changed = self._changed
            await changed.wait()
            ifaces = self._interfaces()
        w.referent()  # *InterfaceList
        w.u32(len(ifaces))
        w.referent(bool(ifaces))
        if ifaces:
            w.u32(len(ifaces))  # conformance
            for i in ifaces:
                w.align(4)
                w.raw(pack_interface_info(i, not self._is_local(i)))
        w.u32(ERROR_SUCCESS)
        return w.bytes()

    def _register(self, r: NdrReader, ctx: CallContext, ex: bool) -> bytes:
        version = r.u32()
        net_name = r.unique_wstring()
        share_name = r.unique_wstring() if ex else None
        ip = r.unique_wstring()
        client = r.unique_wstring()
        flags = r.u32() if ex else 0
        keepalive = r.u32() if ex else 0
        w = NdrWriter()
        try:
            reg = self._registry.register(
                version,
                net_name,
                ip,
                client,
                ex=ex,
                share_name=share_name,
                flags=flags,
                keepalive_timeout=keepalive,
                owner=ctx.association.conn_id,
            )
        except WitnessError as e:
            w.context_handle(NULL_HANDLE)
            w.u32(e.code)
            return w.bytes()
        assoc = ctx.association
        if assoc.conn_id not in self._hooked:
            self._hooked.add(assoc.conn_id)
            assoc.rundown.append(functools.partial(self._rundown, assoc.conn_id))
        w.context_handle(ContextHandle(0, reg.key))
        w.u32(ERROR_SUCCESS)
        return w.bytes()

    def _rundown(self, conn_id: int) -> None:
        self._hooked.discard(conn_id)
        self._registry.drop_owner(conn_id)

    def _unregister(self, r: NdrReader) -> bytes:
        handle = r.context_handle()
        w = NdrWriter()
        try:
            self._registry.unregister(handle.uuid)
        except WitnessError as e:
            log.info("witness: UnRegister %s: %s", handle.uuid, e)
            w.u32(e.code)
            return w.bytes()
        w.u32(ERROR_SUCCESS)
        return w.bytes()

    async def _async_notify(self, r: NdrReader) -> bytes:
        handle = r.context_handle()
        w = NdrWriter()
        try:
            n = await self._registry.wait(handle.uuid)
        except WitnessError as e:
            w.referent(False)
            w.u32(e.code)
            return w.bytes()
        buf = n.buffer
        w.referent()  # *pResp
        w.u32(n.message_type)
        w.u32(len(buf))
        w.u32(len(n.messages))
        w.referent(bool(buf))
        if buf:
            w.u32(len(buf))
            w.raw(buf)
        w.u32(ERROR_SUCCESS)
        return w.bytes()
