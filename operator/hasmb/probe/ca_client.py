"""A continuously-available SMB3 client handle on smbprotocol, as Hyper-V and SQL Server use one.

`CaFile` holds one durable-v2 open (persistent on a CA share). When the
connection breaks, any operation in flight is retried after `reclaim()` has
built a new connection (same ClientGuid, as MS-SMB2 3.3.5.9.12 requires),
session and tree connect and reopened the handle with DH2C. Writes are
replayed at their offset, so a write whose reply was lost is applied again
idempotently instead of being lost.

smbprotocol is synchronous and thread based; callers on an event loop run
`CaFile` methods in a worker thread.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from smbprotocol.connection import Capabilities, Connection, Dialects
from smbprotocol.create_contexts import (
    CreateContextName,
    DurableHandleFlags,
    SMB2CreateContextRequest,
    SMB2CreateDurableHandleReconnectV2,
    SMB2CreateDurableHandleRequestV2,
)
from smbprotocol.exceptions import SMBResponseException
from smbprotocol.open import (
    CreateDisposition,
    CreateOptions,
    FilePipePrinterAccessMask,
    ImpersonationLevel,
    Open,
    RequestedOplockLevel,
    ShareAccess,
)
from smbprotocol.session import Session
from smbprotocol.tree import TreeConnect

log = logging.getLogger(__name__)

T = TypeVar("T")

# Per-request deadline: a hung server (node cut off) must surface as a failure
# we can act on, not a thread blocked for smbprotocol's 10-minute default.
DEFAULT_REQUEST_TIMEOUT = 5.0


class ReclaimFailed(Exception):
    """The handle could not be reclaimed before the deadline."""


@dataclass(frozen=True)
class CaTarget:
    host: str
    port: int
    share: str
    user: str
    password: str
    encrypt: bool = False

    @property
    def unc(self) -> str:
        return rf"\\{self.host}\{self.share}"


@dataclass
class HandleInfo:
    """What the client must remember to reclaim: MS-SMB2 2.2.13.2.12."""

    file_id: bytes
    create_guid: uuid.UUID
    persistent: bool
    timeout_ms: int


@dataclass
class Stall:
    """One interruption as the caller saw it."""

    started: float
    ended: float
    attempts: int
    reason: str

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclass
class CaFile:
    target: CaTarget
    path: str
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    reclaim_deadline: float = 60.0
    # TCP connect + NEGOTIATE of a (re)connection; None = request_timeout. A SYN to a
    # Service endpoint that just died goes unanswered: a short timeout retries sooner.
    connect_timeout: float | None = None
    durable_timeout_ms: int = 60_000
    # A batch oplock lets a non-CA server grant a (non-persistent) durable handle,
    # MS-SMB2 3.3.5.9.10; CA shares grant persistence without one.
    batch_oplock: bool = False
    client_guid: uuid.UUID = field(default_factory=uuid.uuid4)
    stalls: list[Stall] = field(default_factory=list)
    handle: HandleInfo | None = field(default=None, init=False)
    # Live view for a chaos driver (read from another thread; monotonic seconds): when
    # the current operation started, and when the interruption it is in began.
    busy_since: float | None = field(default=None, init=False)
    stalled_since: float | None = field(default=None, init=False)
    _conn: Any = field(default=None, init=False, repr=False)
    _open: Any = field(default=None, init=False, repr=False)

    # --- connection plumbing ---------------------------------------------

    def _connect(self) -> tuple[Any, Any]:
        conn = Connection(self.client_guid, self.target.host, self.target.port)
        # smbprotocol does not offer PERSISTENT_HANDLES by default; a CA server only
        # grants persistence to clients that do (MS-SMB2 3.3.5.4).
        conn.client_capabilities |= Capabilities.SMB2_GLOBAL_CAP_PERSISTENT_HANDLES
        timeout = self.connect_timeout or self.request_timeout
        conn.connect(Dialects.SMB_3_1_1, timeout=timeout)
        try:
            session = Session(
                conn, self.target.user, self.target.password, require_encryption=self.target.encrypt
            )
            session.connect()
            tree = TreeConnect(session, self.target.unc)
            tree.connect()
        except BaseException:
            conn.disconnect(close=False)
            raise
        return conn, tree

    def _drop(self) -> None:
        conn, self._conn, self._open = self._conn, None, None
        if conn is not None:
            try:
                conn.disconnect(close=False)
            except Exception:  # the transport is usually dead already
                log.debug("disconnect of a broken connection failed", exc_info=True)

    def _create(self, tree: Any, contexts: list[Any], disposition: int) -> tuple[Any, list[Any]]:
        handle = Open(tree, self.path)
        responses = handle.create(
            ImpersonationLevel.Impersonation,
            FilePipePrinterAccessMask.GENERIC_READ | FilePipePrinterAccessMask.GENERIC_WRITE,
            0,
            ShareAccess.FILE_SHARE_READ,
            disposition,
            CreateOptions.FILE_NON_DIRECTORY_FILE,
            create_contexts=contexts,
            oplock_level=RequestedOplockLevel.SMB2_OPLOCK_LEVEL_BATCH if self.batch_oplock else 0,
        )
        return handle, responses or []

    # --- public API --------------------------------------------------------

    def open(self, disposition: int = CreateDisposition.FILE_OVERWRITE_IF) -> HandleInfo:
        """Open with DH2Q, asking for persistence (granted only on CA shares)."""
        conn, tree = self._connect()
        create_guid = uuid.uuid4()
        request = SMB2CreateDurableHandleRequestV2()
        request["timeout"] = self.durable_timeout_ms
        request["flags"] = DurableHandleFlags.SMB2_DHANDLE_FLAG_PERSISTENT
        request["create_guid"] = create_guid
        context = SMB2CreateContextRequest()
        context["buffer_name"] = CreateContextName.SMB2_CREATE_DURABLE_HANDLE_REQUEST_V2
        context["buffer_data"] = request
        try:
            handle, responses = self._create(tree, [context], disposition)
        except BaseException:
            conn.disconnect(close=False)
            raise
        persistent = False
        timeout_ms = 0
        for response in responses:
            if hasattr(response, "fields") and "timeout" in response.fields:
                timeout_ms = int(response["timeout"].get_value())
                persistent = bool(
                    response["flags"].get_value() & DurableHandleFlags.SMB2_DHANDLE_FLAG_PERSISTENT
                )
        self._conn, self._open = conn, handle
        self.handle = HandleInfo(handle.file_id, create_guid, persistent, timeout_ms)
        return self.handle

    def reclaim(self, reason: str = "reconnect") -> int:
        """Rebuild the connection and reopen the handle with DH2C, retrying until the deadline.

        Returns the number of attempts it took.
        """
        if self.handle is None:
            raise RuntimeError("reclaim() before open()")
        started = time.monotonic()
        self._drop()
        attempts = 0
        last_error: BaseException | None = None
        while time.monotonic() - started < self.reclaim_deadline:
            attempts += 1
            try:
                conn, tree = self._connect()
            except Exception as exc:  # refused, reset, timed out: the partner is not there yet
                last_error = exc
                time.sleep(min(0.05 * attempts, 0.25))
                continue
            reconnect = SMB2CreateDurableHandleReconnectV2()
            reconnect["file_id"] = self.handle.file_id
            reconnect["create_guid"] = self.handle.create_guid
            reconnect["flags"] = (
                DurableHandleFlags.SMB2_DHANDLE_FLAG_PERSISTENT if self.handle.persistent else 0
            )
            context = SMB2CreateContextRequest()
            context["buffer_name"] = CreateContextName.SMB2_CREATE_DURABLE_HANDLE_RECONNECT_V2
            context["buffer_data"] = reconnect
            try:
                handle, _ = self._create(tree, [context], CreateDisposition.FILE_OPEN)
            except Exception as exc:
                # STATUS_FILE_NOT_AVAILABLE while the new owner loads state, or the old
                # connection not yet seen as gone: retry until the deadline.
                last_error = exc
                conn.disconnect(close=False)
                time.sleep(min(0.05 * attempts, 0.25))
                continue
            self._conn, self._open = conn, handle
            self.handle.file_id = handle.file_id
            return attempts
        raise ReclaimFailed(
            f"could not reclaim {self.path} within {self.reclaim_deadline}s: {last_error!r}"
        )

    def _with_reclaim(self, op: Callable[[Any], T], what: str) -> T:
        """Run op on the open; on a transport failure reclaim and replay it.

        A stall is measured as the caller sees it: from the start of the first
        attempt that failed or hung to the end of the replay that succeeded.
        """
        self.busy_since = time.monotonic()
        try:
            return self._retry(op, what)
        finally:
            self.busy_since = self.stalled_since = None

    def _retry(self, op: Callable[[Any], T], what: str) -> T:
        failed_at: float | None = None
        attempts = 0
        reason = ""
        while True:
            attempt_started = time.monotonic()
            try:
                if self._open is None:
                    reason = reason or f"{what}: no connection"
                    attempts += self.reclaim(reason)
                result = op(self._open)
            except SMBResponseException:
                raise  # a real protocol answer: surface it, never retry blindly
            except ReclaimFailed:
                raise
            except Exception as exc:
                log.info("%s on %s failed (%r); reclaiming", what, self.path, exc)
                if failed_at is None:
                    failed_at = self.stalled_since = attempt_started
                    reason = f"{what}: {type(exc).__name__}"
                elif time.monotonic() - failed_at > self.reclaim_deadline:
                    raise ReclaimFailed(f"{what} on {self.path} kept failing: {exc!r}") from exc
                self._drop()
                continue
            if failed_at is not None or attempts:
                start = failed_at if failed_at is not None else attempt_started
                self.stalls.append(Stall(start, time.monotonic(), attempts, reason))
            return result

    def _call(self, handle: Any, build: Callable[[], tuple[Any, Callable[..., T]]]) -> T:
        message, unpack = build()
        conn = handle.connection
        request = conn.send(
            message, handle.tree_connect.session.session_id, handle.tree_connect.tree_connect_id
        )
        conn.receive(request, timeout=self.request_timeout)
        return unpack(request)

    def current_stall(self, now: float, hung_after: float = 0.5) -> float:
        """Seconds the caller has been waiting in an interruption right now: since the
        first failed attempt, or since the start of a request hung longer than
        `hung_after`; 0.0 while I/O flows."""
        stalled, busy = self.stalled_since, self.busy_since
        if stalled is not None:
            return max(0.0, now - stalled)
        if busy is not None and now - busy > hung_after:
            return now - busy
        return 0.0

    def write(self, offset: int, data: bytes, write_through: bool = True) -> int:
        def op(handle: Any) -> int:
            count: int = self._call(
                handle, lambda: handle.write(data, offset, write_through=write_through, send=False)
            )
            return count

        return self._with_reclaim(op, "write")

    def read(self, offset: int, length: int) -> bytes:
        def op(handle: Any) -> bytes:
            data: bytes = self._call(handle, lambda: handle.read(offset, length, send=False))
            return data

        return self._with_reclaim(op, "read")

    def close(self) -> None:
        if self._open is not None:
            try:
                self._open.close()
            finally:
                self._drop()
        self.handle = None

    def abandon(self) -> None:
        """Drop the connection without closing the handle (what a client crash looks like)."""
        self._drop()
