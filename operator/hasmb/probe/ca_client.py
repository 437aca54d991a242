"""A continuously-available SMB3 client handle on smbprotocol, as Hyper-V and SQL Server use one.

`CaFile` holds one durable-v2 open (persistent on a CA share). When the
connection breaks, any operation in flight is retried after `reclaim()` has
built a new connection (same ClientGuid, as MS-SMB2 3.3.5.9.12 requires),
session and tree connect and reopened the handle with DH2C. Writes are
replayed at their offset, so a write whose reply was lost is applied again
idempotently instead of being lost.

A witness (hasmb.probe.witness_agent) may ask the handle to move: `request_move()`
from any thread. The next operation then reclaims the handle at the new address
before it runs (a planned CLIENT_MOVE: the old path still works, the client
leaves it first). With `dead_host` the connection to that address is closed at
once, so a request hung on a failed node fails now and is replayed after the
reclaim (RESOURCE_CHANGE "unavailable": no TCP timeout to wait for); a
reconnection attempt hung on that address, or on any address but the new
destination, is cut short the same way.

smbprotocol is synchronous and thread based; callers on an event loop run
`CaFile` methods in a worker thread.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
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
MAX_TRAIL = 20  # failed attempts kept per stall
# A request answered this late without any failure is recorded as a stall too: what
# the caller sees is the wait, not its cause.
SLOW_REPLY = 0.2


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
    # Each failed attempt: "+seconds since the stall began host: error" (diagnosis).
    trail: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.ended - self.started


def _abort(conn: Any, host: str) -> None:
    try:
        conn.transport.close()
    except Exception:
        log.debug("abort of the connection to %s failed", host, exc_info=True)


@dataclass(frozen=True)
class MoveRequest:
    """A witness notification this handle must act on."""

    host: str  # where to reclaim (the same address for a reconnect in place)
    reason: str
    requested_at: float  # monotonic: when the notification arrived
    event: int = 0  # the witness agent's event number, for the report


@dataclass(frozen=True)
class MoveDone:
    request: MoveRequest
    back_at: float  # monotonic: the handle was reclaimed at request.host

    @property
    def seconds(self) -> float:
        return self.back_at - self.request.requested_at


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
    # Witness-driven moves completed (notification -> handle reclaimed at the new address).
    moves: list[MoveDone] = field(default_factory=list, init=False)
    _conn: Any = field(default=None, init=False, repr=False)
    _conn_host: str | None = field(default=None, init=False, repr=False)
    _open: Any = field(default=None, init=False, repr=False)
    # The connection being set up by a reclaim (not yet adopted), and its address.
    _attempt: Any = field(default=None, init=False, repr=False)
    _attempt_host: str | None = field(default=None, init=False, repr=False)
    _trail: list[str] = field(default_factory=list, init=False, repr=False)
    # Guards the move hand-off between a witness thread and the I/O thread.
    _move_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _pending_move: MoveRequest | None = field(default=None, init=False, repr=False)
    _moving: list[MoveRequest] = field(default_factory=list, init=False, repr=False)

    # --- connection plumbing ---------------------------------------------

    def _connect(self) -> tuple[Any, Any]:
        conn = Connection(self.client_guid, self.target.host, self.target.port)
        with self._move_lock:
            self._attempt, self._attempt_host = conn, self.target.host
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
        with self._move_lock:
            conn, self._conn, self._open = self._conn, None, None
            self._conn_host = self._attempt = self._attempt_host = None
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
        self._adopt(conn, handle)
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
            # a move notified while we retry redirects the next attempt
            self._take_move()
            try:
                conn, tree = self._connect()
            except Exception as exc:  # refused, reset, timed out: the partner is not there yet
                last_error = exc
                self._note_attempt(f"connect: {exc!r}")
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
                self._note_attempt(f"reconnect create: {exc!r}")
                conn.disconnect(close=False)
                time.sleep(min(0.05 * attempts, 0.25))
                continue
            self._adopt(conn, handle)
            self.handle.file_id = handle.file_id
            self._moved(time.monotonic())
            return attempts
        raise ReclaimFailed(
            f"could not reclaim {self.path} within {self.reclaim_deadline}s: {last_error!r}"
        )

    def _note_attempt(self, what: str) -> None:
        if len(self._trail) < MAX_TRAIL:
            now = time.monotonic()
            host = self._attempt_host or self.target.host
            since = self.stalled_since or now
            self._trail.append(f"+{now - since:.3f}s {host}: {what}"[:300])

    def _adopt(self, conn: Any, handle: Any) -> None:
        with self._move_lock:
            self._conn, self._open, self._conn_host = conn, handle, self.target.host
            self._attempt = self._attempt_host = None

    # --- witness-driven moves (MS-SWN 3.2, the client) ---------------------------

    @property
    def connected_host(self) -> str | None:
        """The address of the live connection (None between connections)."""
        return self._conn_host

    def request_move(self, request: MoveRequest, dead_host: str | None = None) -> None:
        """Ask the I/O thread to reclaim the handle at request.host before its next
        operation. `dead_host`: that address went unavailable, close a connection to
        it right now instead of waiting for the hung request to time out. A
        reconnection attempt in progress to dead_host, or to anywhere but
        request.host, is closed too. Safe from any thread; a newer request replaces
        one not yet taken."""
        with self._move_lock:
            self._pending_move = request
            doomed: list[Any] = []
            if dead_host is not None and self._conn_host == dead_host:
                doomed.append(self._conn)
            attempt = self._attempt_host
            if self._attempt is not None and (attempt == dead_host or attempt != request.host):
                doomed.append(self._attempt)
        for conn in doomed:
            # Closing the socket makes the I/O thread's receive fail at once. In a
            # thread of its own: smbprotocol's close waits for a send in progress,
            # which a hung peer can hold up, and the caller must not wait for that.
            threading.Thread(
                target=_abort, args=(conn, request.host), name="probe-abort", daemon=True
            ).start()

    def restart_attempt(self, host: str) -> bool:
        """Close a reconnection attempt in progress to `host` (the witness says it is
        available again: the attempt may be stuck on the path that failed); the
        reclaim loop tries again at once. A live connection is left alone."""
        with self._move_lock:
            attempt = self._attempt
            if attempt is None or self._attempt_host != host:
                return False
        threading.Thread(
            target=_abort, args=(attempt, host), name="probe-abort", daemon=True
        ).start()
        return True

    def _take_move(self) -> MoveRequest | None:
        """Adopt a pending move: retarget, and remember it until the handle is back."""
        with self._move_lock:
            move, self._pending_move = self._pending_move, None
            if move is None:
                return None
            if move.host != self.target.host:
                self.target = dataclasses.replace(self.target, host=move.host)
            self._moving.append(move)
            return move

    def _moved(self, now: float) -> None:
        with self._move_lock:
            moving, self._moving = self._moving, []
        self.moves.extend(MoveDone(m, now) for m in moving)

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
        self._trail = []
        while True:
            attempt_started = time.monotonic()
            move = self._take_move()
            if move is not None:
                # Leave the old path before it fails (a planned move), or drop the
                # connection whose address the witness reported unavailable. The
                # caller waits meanwhile: that is a stall like any other.
                log.info("%s: witness %s -> %s", self.path, move.reason, move.host)
                if failed_at is None:
                    failed_at = self.stalled_since = attempt_started
                    reason = f"{what}: witness {move.reason}"
                self._drop()
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
                self._note_attempt(f"{what}: {exc!r}")
                self._drop()
                continue
            ended = time.monotonic()
            if failed_at is not None or attempts:
                start = failed_at if failed_at is not None else attempt_started
                self.stalls.append(Stall(start, ended, attempts, reason, list(self._trail)))
            elif ended - attempt_started >= SLOW_REPLY:
                # no failure, but the caller waited all the same (a server that
                # hesitates, e.g. on a hung API server): a stall like any other
                self.stalls.append(Stall(attempt_started, ended, 0, f"{what}: slow reply"))
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
