"""Server state as dataclasses (MS-SMB2 3.3.1): connections, sessions, tree connects, opens.

`GlobalState` is the one place where opens live (GlobalOpenTable, 3.3.1.1),
looked up by persistent FileId and by CreateGuid, and where per-file shared
state (share modes, byte-range locks, delete-pending) is kept by file identity.
Continuous availability (durable/persistent handles) hangs its fields on `Open`.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from hasmb.smb.config import ShareConfig
    from hasmb.smb.crypto import SessionKeys


class NamedPipeLike(Protocol):
    async def write(self, data: bytes) -> None: ...
    async def read(self, max_len: int) -> bytes: ...
    async def transceive(self, data: bytes, max_out: int) -> bytes: ...
    def close(self) -> None: ...


@dataclass(eq=False)
class Share:
    config: ShareConfig
    root: str  # realpath of the share directory; "" for IPC$
    is_ipc: bool = False

    @property
    def name(self) -> str:
        return self.config.name


@dataclass(eq=False)
class TreeConnect:
    tree_id: int
    share: Share
    session: Session
    maximal_access: int = 0x001F01FF
    encrypt: bool = False


@dataclass(eq=False)
class Session:
    session_id: int
    connection: Connection
    authenticator: Any = None  # SpnegoNtlmAcceptor while the setup is in progress
    valid: bool = False
    user: str = ""
    domain: str = ""
    anonymous: bool = False
    guest: bool = False
    session_key: bytes = b""
    keys: SessionKeys | None = None
    signing_required: bool = False
    encrypt_data: bool = False
    preauth_hash: bytes = b""
    trees: dict[int, TreeConnect] = field(default_factory=dict)
    opens: dict[int, Open] = field(default_factory=dict)  # by volatile id
    next_tree_id: int = 1
    expired: bool = False


@dataclass(eq=False)
class ByteRangeLock:
    open: Open
    offset: int
    length: int
    exclusive: bool

    def overlaps(self, offset: int, length: int) -> bool:
        if self.length == 0 or length == 0:
            # zero-length ranges conflict only when strictly inside another (MS-FSA 2.1.5.10)
            if length == 0 and self.length == 0:
                return False
            if length == 0:
                return self.offset < offset < self.offset + self.length
            return offset < self.offset < offset + length
        return offset < self.offset + self.length and self.offset < offset + length


@dataclass(eq=False)
class Lease:
    client_guid: bytes
    key: bytes
    file_key: tuple[int, int]
    state: int = 0
    epoch: int = 0
    version: int = 1
    parent_key: bytes = b""
    breaking: bool = False
    breaking_to: int = 0  # where all pending conflicts want the lease to end up
    break_notified: int = 0  # the state the client was told to break to (and must ack)
    break_done: asyncio.Event = field(default_factory=asyncio.Event)
    opens: list[Open] = field(default_factory=list)


@dataclass(eq=False)
class FileNode:
    """Shared state of one file (by device and inode) across all opens."""

    key: tuple[int, int]
    path: str
    opens: list[Open] = field(default_factory=list)
    locks: list[ByteRangeLock] = field(default_factory=list)
    lock_changed: asyncio.Event = field(default_factory=asyncio.Event)
    delete_pending: bool = False

    def signal_locks(self) -> None:
        """Wake every blocked LOCK waiting on this file (each re-checks its range)."""
        ev, self.lock_changed = self.lock_changed, asyncio.Event()
        ev.set()


@dataclass(eq=False)
class Open:
    persistent_id: int
    volatile_id: int
    session: Session | None
    tree: TreeConnect
    smb_path: str  # as the client named it, relative to the share root
    host_path: str
    is_directory: bool
    granted_access: int
    share_access: int
    create_options: int
    fd: int = -1
    node: FileNode | None = None
    pipe: NamedPipeLike | None = None
    delete_on_close: bool = False
    oplock_level: int = 0
    oplock_breaking: bool = False
    oplock_break_to: int = 0
    break_event: asyncio.Event | None = None
    lease: Lease | None = None
    # directory enumeration (QUERY_DIRECTORY)
    dir_entries: list[str] | None = None
    dir_pos: int = 0
    dir_pattern: str = ""
    # durable / persistent handles (issue 4 builds on these)
    create_guid: bytes = b""
    app_instance_id: bytes = b""
    is_durable: bool = False
    is_persistent: bool = False
    durable_timeout_ms: int = 0
    disconnected_at: float | None = None
    client_guid: bytes = b""
    resilient_timeout_ms: int = 0
    channel_sequence: int = 0
    outstanding_requests: int = 0
    # server-side copy
    resume_key: bytes = b""
    position: int = 0
    mode: int = 0
    closed: bool = False
    notify_watch: Any = None  # hasmb.smb.notify.Watch once CHANGE_NOTIFY was issued

    inflight: int = 0

    @contextmanager
    def io(self) -> Iterator[int]:
        """The fd, kept open until this I/O ends even if a CLOSE arrives meanwhile
        (requests run concurrently; a reused fd number must never be written)."""
        from hasmb.smb.constants import Status
        from hasmb.smb.errors import SmbError

        if self.fd < 0 or self.closed:
            raise SmbError(Status.FILE_CLOSED)
        self.inflight += 1
        try:
            yield self.fd
        finally:
            self.inflight -= 1
            if self.inflight == 0 and self.closed:
                self.release_fd()

    def release_fd(self) -> None:
        if self.fd >= 0 and self.inflight == 0:
            fd, self.fd = self.fd, -1
            try:
                os.close(fd)
            except OSError:
                pass

    @property
    def file_id(self) -> bytes:
        return self.persistent_id.to_bytes(8, "little") + self.volatile_id.to_bytes(8, "little")


@dataclass(eq=False)
class GlobalState:
    """GlobalOpenTable and friends, shared by every connection of one server."""

    opens: dict[int, Open] = field(default_factory=dict)  # by persistent id
    by_create_guid: dict[bytes, Open] = field(default_factory=dict)
    by_resume_key: dict[bytes, Open] = field(default_factory=dict)
    files: dict[tuple[int, int], FileNode] = field(default_factory=dict)
    leases: dict[tuple[bytes, bytes], Lease] = field(default_factory=dict)
    sessions: dict[int, Session] = field(default_factory=dict)
    watchers: list[Open] = field(default_factory=list)  # directory opens with CHANGE_NOTIFY
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _session_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    on_open_change: list[Callable[[Open, str], None]] = field(default_factory=list)

    def new_file_ids(self) -> tuple[int, int]:
        n = next(self._ids)
        # persistent ids survive reconnects; keep them distinct from volatile ones
        return (n << 16) | (os.getpid() & 0xFFFF), n

    def new_session_id(self) -> int:
        # never 0 or all-ones; mix in a per-process salt so ids are not guessable sequences
        return (next(self._session_ids) << 20) | 0x1

    def node_for(self, key: tuple[int, int], path: str) -> FileNode:
        node = self.files.get(key)
        if node is None:
            node = FileNode(key=key, path=path)
            self.files[key] = node
        return node

    def add_open(self, op: Open) -> None:
        self.opens[op.persistent_id] = op
        if op.create_guid:
            self.by_create_guid[op.create_guid] = op
        if op.node is not None:
            op.node.opens.append(op)
        for cb in self.on_open_change:
            cb(op, "add")

    def remove_open(self, op: Open) -> None:
        self.opens.pop(op.persistent_id, None)
        if op.create_guid and self.by_create_guid.get(op.create_guid) is op:
            del self.by_create_guid[op.create_guid]
        if op.resume_key:
            self.by_resume_key.pop(op.resume_key, None)
        node = op.node
        if node is not None:
            if op in node.opens:
                node.opens.remove(op)
            before = len(node.locks)
            node.locks = [lk for lk in node.locks if lk.open is not op]
            if len(node.locks) != before:
                node.signal_locks()
            if not node.opens and self.files.get(node.key) is node:
                del self.files[node.key]
        for cb in self.on_open_change:
            cb(op, "remove")

    def by_persistent_id(self, persistent_id: int) -> Open | None:
        return self.opens.get(persistent_id)

    def lookup_create_guid(self, guid: bytes) -> Open | None:
        return self.by_create_guid.get(guid)


@dataclass(eq=False)
class Connection:
    """One TCP connection; the transport is attached by the server."""

    peer: str
    dialect: int = 0
    client_guid: bytes = b"\x00" * 16
    client_capabilities: int = 0
    client_security_mode: int = 0
    client_dialects: list[int] = field(default_factory=list)
    server_capabilities: int = 0
    server_security_mode: int = 0
    cipher: int = 0
    signing_algorithm: int = 0
    preauth_hash: bytes = b""
    negotiated: bool = False
    sessions: dict[int, Session] = field(default_factory=dict)
    max_transact: int = 8 * 1024 * 1024
    max_read: int = 8 * 1024 * 1024
    max_write: int = 8 * 1024 * 1024
    supports_multi_credit: bool = False
    credits_granted: int = 1
    pending: dict[int, Any] = field(default_factory=dict)  # async id -> PendingRequest
    closed: bool = False
