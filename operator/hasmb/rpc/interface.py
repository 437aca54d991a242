"""What an RPC interface implementation looks like to the connection machinery.

An interface is identified by its abstract syntax (uuid, major, minor) and
dispatches opnums on NDR stub data.  Handlers raise `RpcFault` to answer with
a fault PDU; any other exception is turned into a generic fault and logged.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from hasmb.rpc.pdu import AuthLevel


class RpcFault(Exception):
    """Answer the current call with a fault PDU carrying `status`."""

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message or f"fault 0x{status:08x}")
        self.status = status


@dataclass
class Association:
    """Per-connection state visible to interfaces (context handle rundown)."""

    conn_id: int
    peer: str
    rundown: list[Callable[[], None]] = field(default_factory=list)


@dataclass
class CallContext:
    association: Association
    call_id: int
    auth_level: int
    user: str | None


class RpcInterface(Protocol):
    uuid: uuid.UUID
    version: tuple[int, int]
    min_auth_level: int

    def dispatch(self, opnum: int, stub: bytes, ctx: CallContext) -> Awaitable[bytes]:
        """Return the response stub or raise RpcFault."""
        ...


def version_matches(iface: RpcInterface, requested: int) -> bool:
    """C706 12.6.3.1: same major version, requested minor not newer than ours."""
    major, minor = requested & 0xFFFF, requested >> 16
    return major == iface.version[0] and minor <= iface.version[1]


DEFAULT_MIN_AUTH = AuthLevel.NONE
