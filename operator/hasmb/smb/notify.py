"""CHANGE_NOTIFY (MS-SMB2 3.3.5.19; MS-FSA 2.1.5.10 for the filter semantics).

Changes are reported by this server's own handlers (create, delete, rename,
write, set-info) through `report`; changes made behind the server's back on
the host filesystem are not seen. A directory open that has issued one
CHANGE_NOTIFY keeps collecting changes between requests, as Windows does.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hasmb.smb.constants import WATCH_TREE, Command, Status
from hasmb.smb.errors import SmbError
from hasmb.smb.request import Registry, Request
from hasmb.smb.state import Open

if TYPE_CHECKING:
    from hasmb.smb.server import SmbServer

log = logging.getLogger("hasmb.smb.notify")
_REQ = struct.Struct("<HHI16sII")
FILTER_FILE_NAME = 0x001
FILTER_DIR_NAME = 0x002
FILTER_ATTRIBUTES = 0x004
FILTER_SIZE = 0x008
FILTER_LAST_WRITE = 0x010
FILTER_VALID = 0xFFF
MAX_BUFFERED = 1000

ADDED, REMOVED, MODIFIED, RENAMED_OLD, RENAMED_NEW = 1, 2, 3, 4, 5


@dataclass(eq=False)
class Watch:
    completion_filter: int
    recursive: bool
    changes: list[tuple[int, str]] = field(default_factory=list)
    overflow: bool = False
    waiters: list[asyncio.Future[int]] = field(default_factory=list)  # FIFO of pending requests
    max_len: int = 0


def register(reg: Registry) -> None:
    reg.add(Command.CHANGE_NOTIFY, handle_change_notify)


def _encode(changes: list[tuple[int, str]]) -> bytes:
    out = bytearray()
    last = -1
    for action, name in changes:
        raw = name.encode("utf-16-le", "surrogatepass")
        pad = (-len(out)) % 4
        out += b"\x00" * pad
        if last >= 0:
            struct.pack_into("<I", out, last, len(out) - last)
        last = len(out)
        out += struct.pack("<III", 0, action, len(raw)) + raw
    return bytes(out)


def _take(watch: Watch, max_len: int, req: Request) -> bytes:
    changes, watch.changes = watch.changes, []
    overflow, watch.overflow = watch.overflow, False
    data = _encode(changes)
    # the buffer size of the first request on a handle bounds all later ones (Windows)
    if overflow or len(data) > min(max_len, watch.max_len):
        req.status = Status.NOTIFY_ENUM_DIR
        return struct.pack("<HHI", 9, 0, 0)
    return struct.pack("<HHI", 9, 72, len(data)) + data


async def handle_change_notify(req: Request) -> bytes:
    req.structure_size(32)
    (_, flags, out_len, file_id, completion_filter, _r) = req.body(_REQ)
    op = req.lookup_open(file_id)
    if not op.is_directory:
        raise SmbError(Status.INVALID_PARAMETER)
    if out_len > req.conn.max_transact:
        raise SmbError(Status.INVALID_PARAMETER)
    if not op.granted_access & 0x1:  # FILE_LIST_DIRECTORY
        raise SmbError(Status.ACCESS_DENIED)
    watch = op.notify_watch
    if watch is None:
        watch = Watch(completion_filter & FILTER_VALID, bool(flags & WATCH_TREE), max_len=out_len)
        op.notify_watch = watch
        req.server.state.watchers.append(op)
    log.debug(
        "notify on %r filter %#x pending %d", op.smb_path, completion_filter, len(watch.changes)
    )
    if watch.changes or watch.overflow:
        return _take(watch, out_len, req)
    if len(watch.waiters) >= 64:
        raise SmbError(Status.INSUFFICIENT_RESOURCES)
    waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    watch.waiters.append(waiter)
    try:
        await req.go_async()
        status = await req.wait_cancellable(waiter)
    finally:
        if waiter in watch.waiters:
            watch.waiters.remove(waiter)
    if status != Status.SUCCESS:
        req.status = status
        return struct.pack("<HHI", 9, 0, 0)
    return _take(watch, out_len, req)


def stop(server: SmbServer, op: Open, status: int) -> None:
    """The directory handle goes away: finish a pending notify with `status`."""
    watch = op.notify_watch
    if watch is None:
        return
    if op in server.state.watchers:
        server.state.watchers.remove(op)
    for waiter in watch.waiters:
        if not waiter.done():
            waiter.set_result(status)
    op.notify_watch = None


def delete_pending(server: SmbServer, node: object) -> None:
    """A watched directory is about to be deleted: its pending notifies end with
    STATUS_DELETE_PENDING (what Windows answers)."""
    for w in list(server.state.watchers):
        watch = w.notify_watch
        if watch is None or w.node is not node:
            continue
        for waiter in watch.waiters:
            if not waiter.done():
                waiter.set_result(Status.DELETE_PENDING)


def report(server: SmbServer, op: Open, action: int, kind: int = 0) -> None:
    """`op` (a file or directory) was added/removed/modified/renamed."""
    watchers = server.state.watchers
    log.debug("change %d on %r (%d watchers)", action, op.smb_path, len(watchers))
    if not watchers:
        return
    path = op.smb_path
    if not path:
        return
    parent, _, name = path.rpartition("\\")
    if not kind:
        if action in (ADDED, REMOVED, RENAMED_OLD, RENAMED_NEW):
            kind = FILTER_DIR_NAME if op.is_directory else FILTER_FILE_NAME
        else:
            kind = FILTER_LAST_WRITE | FILTER_SIZE | FILTER_ATTRIBUTES
    for w in list(watchers):
        watch = w.notify_watch
        if watch is None or w.tree.share is not op.tree.share or w is op:
            continue
        base = w.smb_path
        if base == parent:
            rel = name
        elif watch.recursive and (not base or parent.startswith(base + "\\")):
            rel = path[len(base) + 1 :] if base else path
        else:
            continue
        if not watch.completion_filter & kind:
            continue
        if len(watch.changes) >= MAX_BUFFERED:
            watch.overflow = True
        else:
            watch.changes.append((action, rel))
        if watch.waiters:
            asyncio.get_running_loop().call_soon(_wake, watch)


def _wake(watch: Watch) -> None:
    """Complete the oldest pending request with everything collected so far."""
    for waiter in watch.waiters:
        if not waiter.done():
            if watch.changes or watch.overflow:
                waiter.set_result(Status.SUCCESS)
            return
