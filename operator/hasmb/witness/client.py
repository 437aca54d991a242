"""Witness (MS-SWN) client for hasmb-probe and tests.

    wc = await WitnessClient.connect("10.96.0.11", user="alice", password="pw")
    ifaces = await wc.get_interface_list()
    handle = await wc.register("SVM1", "10.96.0.10", "probe-1")      # V1
    note = await wc.async_notify(handle)         # blocks until the server notifies
    if note.message_type == CLIENT_MOVE_NOTIFICATION: reconnect to note.move_targets()
    await wc.unregister(handle); wc.close()

Without `port` the endpoint mapper on `epm_port` (135) is asked first.
Calls that return a Win32 error raise `WitnessCallError(code)`.
`choose_witness_interface()` picks where to register (MS-SWN 3.2.4.1: a
witness interface on another node than the one serving the SMB connection)
and `notifications()` loops AsyncNotify, riding over keep-alive timeouts.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from hasmb.rpc.client import RpcClient, epm_lookup
from hasmb.rpc.ndr import ContextHandle, NdrReader, NdrWriter
from hasmb.rpc.pdu import AuthLevel
from hasmb.witness.messages import (
    CLIENT_MOVE_NOTIFICATION,
    ERROR_TIMEOUT,
    IF_IPV4_VALID,
    IF_IPV6_VALID,
    IF_WITNESS,
    IP_CHANGE_NOTIFICATION,
    RESOURCE_CHANGE_NOTIFICATION,
    SHARE_MOVE_NOTIFICATION,
    STATE_AVAILABLE,
    WITNESS_V1,
    WITNESS_V2,
    IpAddrInfo,
    ResourceChange,
    parse_ip_lists,
    parse_resource_changes,
)
from hasmb.witness.rpc import WITNESS_UUID, WITNESS_VERSION


class WitnessCallError(Exception):
    def __init__(self, code: int, op: str) -> None:
        super().__init__(f"{op} failed: Win32 error 0x{code:x}")
        self.code = code


@dataclass(frozen=True)
class InterfaceInfo:
    group_name: str
    version: int
    state: int
    ipv4: str | None
    ipv6: str | None
    flags: int


@dataclass
class WitnessNotification:
    message_type: int
    resource_changes: list[ResourceChange] = field(default_factory=list)
    ip_lists: list[list[IpAddrInfo]] = field(default_factory=list)

    def move_targets(self) -> list[str]:
        """Online addresses of a CLIENT_MOVE / SHARE_MOVE / IP_CHANGE."""
        return [a.address for lst in self.ip_lists for a in lst if a.online]


def _parse_interface(raw: bytes) -> InterfaceInfo:
    name = raw[:520].decode("utf-16-le").split("\x00", 1)[0]
    version, state = struct.unpack_from("<IH", raw, 520)
    (flags,) = struct.unpack_from("<I", raw, 548)
    v4 = str(ipaddress.IPv4Address(raw[528:532])) if flags & IF_IPV4_VALID else None
    v6 = str(ipaddress.IPv6Address(raw[532:548])) if flags & IF_IPV6_VALID else None
    return InterfaceInfo(name, version, state, v4, v6, flags)


class WitnessClient:
    def __init__(self, rpc: RpcClient) -> None:
        self._rpc = rpc

    @classmethod
    async def connect(
        cls,
        host: str,
        *,
        user: str,
        password: str,
        port: int | None = None,
        epm_port: int = 135,
        domain: str = "",
        level: int = AuthLevel.PRIVACY,
    ) -> WitnessClient:
        if port is None:
            port = await epm_lookup(host, WITNESS_UUID, WITNESS_VERSION, epm_port)
        rpc = await RpcClient.connect(
            host,
            port,
            WITNESS_UUID,
            WITNESS_VERSION,
            user=user,
            password=password,
            domain=domain,
            level=level,
        )
        return cls(rpc)

    def close(self) -> None:
        self._rpc.close()

    async def get_interface_list(self) -> list[InterfaceInfo]:
        r = NdrReader(await self._rpc.call(0, b""))
        out: list[InterfaceInfo] = []
        if r.referent():
            n = r.u32()
            if r.referent():
                count = r.u32()
                if count != n:
                    raise WitnessCallError(0, "GetInterfaceList: inconsistent count")
                for _ in range(count):
                    r.align(4)
                    out.append(_parse_interface(r.raw(552)))
        code = r.u32()
        if code:
            raise WitnessCallError(code, "GetInterfaceList")
        return out

    async def register(
        self, net_name: str, ip: str, client_name: str, version: int = WITNESS_V1
    ) -> ContextHandle:
        w = NdrWriter()
        w.u32(version)
        w.unique_wstring(net_name)
        w.unique_wstring(ip)
        w.unique_wstring(client_name)
        return self._handle_result(await self._rpc.call(1, w.bytes()), "Register")

    async def register_ex(
        self,
        net_name: str,
        share: str | None,
        ip: str,
        client_name: str,
        flags: int = 0,
        keepalive_timeout: int = 0,
        version: int = WITNESS_V2,
    ) -> ContextHandle:
        w = NdrWriter()
        w.u32(version)
        w.unique_wstring(net_name)
        w.unique_wstring(share)
        w.unique_wstring(ip)
        w.unique_wstring(client_name)
        w.u32(flags)
        w.u32(keepalive_timeout)
        return self._handle_result(await self._rpc.call(4, w.bytes()), "RegisterEx")

    @staticmethod
    def _handle_result(stub: bytes, op: str) -> ContextHandle:
        r = NdrReader(stub)
        h = r.context_handle()
        code = r.u32()
        if code:
            raise WitnessCallError(code, op)
        return h

    async def unregister(self, handle: ContextHandle) -> None:
        w = NdrWriter()
        w.context_handle(handle)
        code = NdrReader(await self._rpc.call(2, w.bytes())).u32()
        if code:
            raise WitnessCallError(code, "UnRegister")

    async def async_notify(self, handle: ContextHandle) -> WitnessNotification:
        w = NdrWriter()
        w.context_handle(handle)
        r = NdrReader(await self._rpc.call(3, w.bytes()))
        if not r.referent():
            raise WitnessCallError(r.u32(), "AsyncNotify")
        mtype = r.u32()
        length = r.u32()
        num = r.u32()
        buf = b""
        if r.referent():
            size = r.u32()
            if size != length:
                raise WitnessCallError(0, "AsyncNotify: inconsistent length")
            buf = r.raw(size)
        code = r.u32()
        if code:
            raise WitnessCallError(code, "AsyncNotify")
        note = WitnessNotification(mtype)
        if mtype == RESOURCE_CHANGE_NOTIFICATION:
            note.resource_changes = parse_resource_changes(buf, num)
        elif mtype in (CLIENT_MOVE_NOTIFICATION, SHARE_MOVE_NOTIFICATION, IP_CHANGE_NOTIFICATION):
            note.ip_lists = parse_ip_lists(buf, num)
        return note


def choose_witness_interface(
    interfaces: list[InterfaceInfo], connected_ip: str
) -> InterfaceInfo | None:
    """An available witness interface whose address is not the one the SMB
    connection uses (so the witness runs where the failure is not)."""
    usable = [i for i in interfaces if i.flags & IF_WITNESS and i.state == STATE_AVAILABLE]
    others = [i for i in usable if connected_ip not in (i.ipv4, i.ipv6)]
    candidates = others or usable
    return candidates[0] if candidates else None


async def notifications(
    client: WitnessClient, handle: ContextHandle
) -> AsyncIterator[WitnessNotification]:
    """AsyncNotify in a loop; a keep-alive ERROR_TIMEOUT just asks again."""
    while True:
        try:
            yield await client.async_notify(handle)
        except WitnessCallError as e:
            if e.code != ERROR_TIMEOUT:
                raise
