"""MS-SWN wire constants and the AsyncNotify message buffer (MS-SWN 2.2.2).

The message buffer is not NDR: it is a little-endian byte blob whose content
depends on MessageType.  IPv4/IPv6 addresses are in network byte order.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

WITNESS_V1 = 0x00010001
WITNESS_V2 = 0x00020000

# Win32 error codes (MS-ERREF 2.2) the interface returns.
ERROR_SUCCESS = 0
ERROR_ACCESS_DENIED = 5
ERROR_INVALID_PARAMETER = 87
ERROR_NOT_FOUND = 0x490
ERROR_NO_MORE_ITEMS = 0x103
ERROR_NO_SYSTEM_RESOURCES = 0x5AA
ERROR_REVISION_MISMATCH = 0x51A
ERROR_TIMEOUT = 0x5B4
ERROR_INVALID_STATE = 0x139F

# WITNESS_INTERFACE_INFO.State
STATE_UNKNOWN = 0x0000
STATE_AVAILABLE = 0x0001
STATE_UNAVAILABLE = 0x00FF
# WITNESS_INTERFACE_INFO.Flags
IF_IPV4_VALID = 0x1
IF_IPV6_VALID = 0x2
IF_WITNESS = 0x4

# RESP_ASYNC_NOTIFY.MessageType
RESOURCE_CHANGE_NOTIFICATION = 1
CLIENT_MOVE_NOTIFICATION = 2
SHARE_MOVE_NOTIFICATION = 3
IP_CHANGE_NOTIFICATION = 4

# RESOURCE_CHANGE.ChangeType
RESOURCE_STATE_UNKNOWN = 0x00
RESOURCE_STATE_AVAILABLE = 0x01
RESOURCE_STATE_UNAVAILABLE = 0xFF

# IPADDR_INFO.Flags
IPADDR_V4 = 0x01
IPADDR_V6 = 0x02
IPADDR_ONLINE = 0x08
IPADDR_OFFLINE = 0x10

# WitnessrRegisterEx Flags
REGISTER_NONE = 0x0
REGISTER_IP_NOTIFICATION = 0x1


class MessageError(Exception):
    """A notification buffer that does not parse."""


@dataclass(frozen=True)
class ResourceChange:
    name: str
    change_type: int

    def pack(self) -> bytes:
        name = (self.name + "\x00").encode("utf-16-le")
        return struct.pack("<II", 8 + len(name), self.change_type) + name


@dataclass(frozen=True)
class IpAddrInfo:
    address: str
    online: bool = True

    def pack(self) -> bytes:
        addr = ipaddress.ip_address(self.address)
        state = IPADDR_ONLINE if self.online else IPADDR_OFFLINE
        if addr.version == 4:
            return struct.pack("<I", IPADDR_V4 | state) + addr.packed + b"\x00" * 16
        return struct.pack("<I", IPADDR_V6 | state) + b"\x00" * 4 + addr.packed


def pack_ip_list(addrs: list[IpAddrInfo]) -> bytes:
    """IP_ADDR_INFO_LIST (MS-SWN 2.2.2.3): Length covers the whole structure."""
    body = b"".join(a.pack() for a in addrs)
    return struct.pack("<III", 12 + len(body), 0, len(addrs)) + body


@dataclass(frozen=True)
class Notification:
    """One AsyncNotify response: a message type and its messages."""

    message_type: int
    messages: tuple[bytes, ...]

    @property
    def buffer(self) -> bytes:
        return b"".join(self.messages)


def resource_change(name: str, available: bool) -> Notification:
    ct = RESOURCE_STATE_AVAILABLE if available else RESOURCE_STATE_UNAVAILABLE
    return Notification(RESOURCE_CHANGE_NOTIFICATION, (ResourceChange(name, ct).pack(),))


def move(message_type: int, destinations: list[IpAddrInfo]) -> Notification:
    return Notification(message_type, (pack_ip_list(destinations),))


# --- parsing (the client side: hasmb-probe and tests) --------------------------


def parse_resource_changes(buf: bytes, count: int) -> list[ResourceChange]:
    out = []
    off = 0
    for _ in range(count):
        if off + 8 > len(buf):
            raise MessageError("truncated RESOURCE_CHANGE")
        length, ct = struct.unpack_from("<II", buf, off)
        if length < 8 or off + length > len(buf):
            raise MessageError("bad RESOURCE_CHANGE length")
        name = buf[off + 8 : off + length].decode("utf-16-le").rstrip("\x00")
        out.append(ResourceChange(name, ct))
        off += length
    return out


def parse_ip_lists(buf: bytes, count: int) -> list[list[IpAddrInfo]]:
    out = []
    off = 0
    for _ in range(count):
        if off + 12 > len(buf):
            raise MessageError("truncated IP_ADDR_INFO_LIST")
        length, _res, n = struct.unpack_from("<III", buf, off)
        if length != 12 + 24 * n or off + length > len(buf):
            raise MessageError("bad IP_ADDR_INFO_LIST length")
        addrs = []
        for i in range(n):
            p = off + 12 + 24 * i
            (flags,) = struct.unpack_from("<I", buf, p)
            if flags & IPADDR_V4:
                addr = str(ipaddress.IPv4Address(buf[p + 4 : p + 8]))
            elif flags & IPADDR_V6:
                addr = str(ipaddress.IPv6Address(buf[p + 8 : p + 24]))
            else:
                raise MessageError("IPADDR_INFO with neither V4 nor V6")
            addrs.append(IpAddrInfo(addr, not flags & IPADDR_OFFLINE))
        out.append(addrs)
        off += length
    return out
