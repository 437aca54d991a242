"""Durable and persistent handle create contexts (MS-SMB2 2.2.13.2.3-2.2.13.2.13,
2.2.14.2.3-2.2.14.2.12, 3.3.5.9.6, 3.3.5.9.7, 3.3.5.9.10, 3.3.5.9.12, 3.3.5.9.13).

Pure protocol logic: which durable request a CREATE carries (validating the
combinations the specification forbids), whether an open qualifies for
durability once its oplock or lease is known, and the response contexts.
The state changes (reconnect, reclaim window, store) live in
`hasmb.smb.persistence`.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from hasmb.smb.constants import (
    DIALECT_300,
    LEASE_HANDLE,
    OPLOCK_LEVEL_BATCH,
    Status,
)
from hasmb.smb.errors import SmbError

DHNQ = b"DHnQ"
DHNC = b"DHnC"
DH2Q = b"DH2Q"
DH2C = b"DH2C"
LEASE = b"RqLs"
# SMB2_CREATE_APP_INSTANCE_ID, a GUID-named context (MS-SMB2 2.2.13.2.13)
APP_INSTANCE_ID = bytes.fromhex("45BCA66AEFA7F74A9008FA462E144D74")

DHANDLE_FLAG_PERSISTENT = 0x2
DEFAULT_TIMEOUT_MS = 60_000
# Windows Server 2012 and Samba cap the durable timeout at 300 s
MAX_TIMEOUT_MS = 300_000

Kind = Literal["none", "v1", "v2", "reconnect_v1", "reconnect_v2"]


class _Context(Protocol):
    @property
    def data(self) -> bytes: ...


@dataclass(frozen=True)
class DurableRequest:
    """The durable-handle part of one CREATE request."""

    kind: Kind = "none"
    timeout_ms: int = 0  # as requested (0 = server default)
    persistent: bool = False  # SMB2_DHANDLE_FLAG_PERSISTENT asked for
    create_guid: bytes = b""
    file_id: bytes = b""  # reconnects: the FileId the client held
    app_instance_id: bytes = b""

    @property
    def reconnect(self) -> bool:
        return self.kind in ("reconnect_v1", "reconnect_v2")

    @property
    def persistent_id(self) -> int:
        return int.from_bytes(self.file_id[:8], "little")


def parse_request(contexts: Mapping[bytes, _Context], dialect: int) -> DurableRequest:
    """Classify the durable contexts of a CREATE; invalid combinations raise."""
    v2 = dialect >= DIALECT_300  # the v2 contexts are ignored below SMB 3.0
    has_q, has_c = DHNQ in contexts, DHNC in contexts
    has_2q, has_2c = v2 and DH2Q in contexts, v2 and DH2C in contexts
    app = b""
    if v2 and APP_INSTANCE_ID in contexts:
        data = contexts[APP_INSTANCE_ID].data
        if len(data) < 20:
            raise SmbError(Status.INVALID_PARAMETER, "short AppInstanceId context")
        (size,) = struct.unpack_from("<H", data)
        if size != 20:
            raise SmbError(Status.INVALID_PARAMETER, "bad AppInstanceId structure size")
        app = data[4:20]
    if has_2c:
        # 3.3.5.9.12: DH2C with any other durable context is invalid
        if has_q or has_c or has_2q:
            raise SmbError(Status.INVALID_PARAMETER, "DH2C combined with another durable context")
        data = contexts[DH2C].data
        if len(data) < 36:
            raise SmbError(Status.INVALID_PARAMETER, "short DH2C context")
        file_id, guid, flags = struct.unpack_from("<16s16sI", data)
        return DurableRequest(
            "reconnect_v2",
            persistent=bool(flags & DHANDLE_FLAG_PERSISTENT),
            create_guid=guid,
            file_id=file_id,
            app_instance_id=app,
        )
    if has_2q:
        # 3.3.5.9.10: DH2Q with DHnQ or DHnC is invalid
        if has_q or has_c:
            raise SmbError(Status.INVALID_PARAMETER, "DH2Q combined with a v1 durable context")
        data = contexts[DH2Q].data
        if len(data) < 32:
            raise SmbError(Status.INVALID_PARAMETER, "short DH2Q context")
        timeout, flags, _reserved, guid = struct.unpack_from("<IIQ16s", data)
        return DurableRequest(
            "v2",
            timeout_ms=timeout,
            persistent=bool(flags & DHANDLE_FLAG_PERSISTENT),
            create_guid=guid,
            app_instance_id=app,
        )
    if has_c:
        # 3.3.5.9.7: a reconnect wins over a DHnQ in the same request
        data = contexts[DHNC].data
        if len(data) < 16:
            raise SmbError(Status.INVALID_PARAMETER, "short DHnC context")
        return DurableRequest("reconnect_v1", file_id=data[:16])
    if has_q:
        if len(contexts[DHNQ].data) < 16:
            raise SmbError(Status.INVALID_PARAMETER, "short DHnQ context")
        return DurableRequest("v1")
    return DurableRequest("none", app_instance_id=app)


@dataclass(frozen=True)
class Grant:
    durable: bool
    persistent: bool = False
    timeout_ms: int = 0  # the reclaim window the server keeps
    response_timeout_ms: int = 0  # what the DH2Q response carries


def decide(
    d: DurableRequest,
    *,
    is_directory: bool,
    oplock_level: int,
    lease_state: int | None,
    share_ca: bool,
    persistent_capable: bool,
) -> Grant:
    """Whether an open gets durability (3.3.5.9.6, 3.3.5.9.10).

    Directories are never durable. A persistent handle needs the flag, a CA
    share and PERSISTENT_HANDLES on the connection, whatever the oplock; any
    other durable handle needs a batch oplock or a lease with H.
    """
    if d.kind not in ("v1", "v2") or is_directory:
        return Grant(False)
    cacheable = oplock_level == OPLOCK_LEVEL_BATCH or (
        lease_state is not None and bool(lease_state & LEASE_HANDLE)
    )
    if d.kind == "v1":
        if not cacheable:
            return Grant(False)
        return Grant(True, False, DEFAULT_TIMEOUT_MS, 0)
    persistent = d.persistent and share_ca and persistent_capable
    if not persistent and not cacheable:
        return Grant(False)
    timeout = min(d.timeout_ms or DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS)
    return Grant(True, persistent, timeout, timeout)


def response_context(d: DurableRequest, g: Grant) -> tuple[bytes, bytes] | None:
    if not g.durable:
        return None
    if d.kind == "v1":
        return (DHNQ, b"\x00" * 8)  # 2.2.14.2.3: 8 reserved bytes
    flags = DHANDLE_FLAG_PERSISTENT if g.persistent else 0
    return (DH2Q, struct.pack("<II", g.response_timeout_ms, flags))  # 2.2.14.2.12
