"""READ, WRITE and FLUSH (MS-SMB2 3.3.5.11-3.3.5.13), named-pipe I/O included."""

from __future__ import annotations

import asyncio
import os
import struct

from hasmb.smb.constants import (
    FILE_APPEND_DATA,
    FILE_EXECUTE,
    FILE_READ_DATA,
    FILE_WRITE_DATA,
    FILE_WRITE_THROUGH,
    WRITEFLAG_WRITE_THROUGH,
    Command,
    Status,
)
from hasmb.smb.errors import SmbError, errno_to_status
from hasmb.smb.fence import Fence
from hasmb.smb.request import TAIL_HEADROOM, Registry, Request
from hasmb.smb.state import Open

_READ_REQ = struct.Struct("<HBBIQ16sIIIHH")
_READ_RESP = struct.Struct("<HBBIII")
_WRITE_REQ = struct.Struct("<HHIQ16sIIHHI")
_WRITE_RESP = struct.Struct("<HHIIHH")
_FLUSH_REQ = struct.Struct("<HHI16s")
THREAD_THRESHOLD = 64 * 1024
APPEND_OFFSET = 0xFFFFFFFFFFFFFFFF
MAX_FILE_OFFSET = 0x7FFFFFFFFFFFFFFF
MAX_FILE_SIZE = 0xFFFFFFF0000  # what NTFS (and Windows' SMB server) accept


def register(reg: Registry) -> None:
    reg.add(Command.READ, handle_read)
    reg.add(Command.WRITE, handle_write)
    reg.add(Command.FLUSH, handle_flush)


def check_lock_conflict(op: Open, offset: int, length: int, write: bool) -> None:
    """MS-FSA 2.1.4.10: I/O against a range another open has locked."""
    node = op.node
    if node is None or not node.locks or length == 0:
        return
    for lk in node.locks:
        if not lk.overlaps(offset, length):
            continue
        if lk.open is op and (lk.exclusive or not write):
            continue
        if not lk.exclusive and not write:
            continue
        raise SmbError(Status.FILE_LOCK_CONFLICT)


async def handle_read(req: Request) -> bytes:
    req.structure_size(49)
    (_, _pad, _flags, length, offset, file_id, min_count, _ch, _rem, _ci_off, _ci_len) = req.body(
        _READ_REQ
    )
    op = req.lookup_open(file_id)
    if length > req.conn.max_read:
        raise SmbError(Status.INVALID_PARAMETER)
    if op.pipe is not None:
        if not getattr(op.pipe, "available", 1):
            await req.go_async()
        piped = await req.wait_cancellable(op.pipe.read(length))
        if not piped:
            raise SmbError(Status.PIPE_BROKEN)
        if getattr(op.pipe, "available", 0):
            req.status = Status.BUFFER_OVERFLOW  # message-mode pipe: more of this PDU waits
        return _READ_RESP.pack(17, 80, 0, len(piped), 0, 0) + piped
    if op.is_directory:
        raise SmbError(Status.INVALID_DEVICE_REQUEST)
    if not op.granted_access & (FILE_READ_DATA | FILE_EXECUTE):
        raise SmbError(Status.ACCESS_DENIED)
    if offset > MAX_FILE_OFFSET:
        raise SmbError(Status.INVALID_PARAMETER)
    check_lock_conflict(op, offset, length, write=False)
    if length == 0:
        if min_count:
            raise SmbError(Status.END_OF_FILE)
        return _READ_RESP.pack(17, 80, 0, 0, 0, 0)
    # read straight into the buffer the response frame is built in (see Request.tail_frame)
    frame = bytearray(TAIL_HEADROOM + length + 16)
    view = memoryview(frame)[TAIL_HEADROOM : TAIL_HEADROOM + length]
    n: int | None
    try:
        with op.io() as fd:
            if length > THREAD_THRESHOLD:
                n = _read_cached(fd, view, offset)
                if n is None:
                    n = await asyncio.to_thread(os.preadv, fd, [view], offset)
            else:
                n = os.preadv(fd, [view], offset)
    except OSError as exc:
        raise SmbError(errno_to_status(exc)) from exc
    if not n or n < min_count:
        raise SmbError(Status.END_OF_FILE)
    op.position = offset + n
    req.tail = view[:n]
    req.tail_frame = frame
    return _READ_RESP.pack(17, 80, 0, n, 0, 0)


async def handle_write(req: Request) -> bytes:
    req.structure_size(49)
    (_, data_off, length, offset, file_id, _ch, _rem, _ci_off, _ci_len, flags) = req.body(
        _WRITE_REQ
    )
    op = req.lookup_open(file_id)
    if length and (data_off < 64 or data_off + length > len(req.msg)):
        raise SmbError(Status.INVALID_PARAMETER)
    data = memoryview(req.msg)[data_off : data_off + length]
    if length > req.conn.max_write:
        raise SmbError(Status.INVALID_PARAMETER)
    if op.pipe is not None:
        try:
            await op.pipe.write(bytes(data))
        except Exception as exc:  # hasmb.rpc.pipes.PipeError: not DCE/RPC
            raise SmbError(Status.PIPE_BROKEN) from exc
        return _WRITE_RESP.pack(17, 0, length, 0, 0, 0)
    if op.is_directory:
        raise SmbError(Status.INVALID_DEVICE_REQUEST)
    if not op.granted_access & (FILE_WRITE_DATA | FILE_APPEND_DATA):
        raise SmbError(Status.ACCESS_DENIED)
    if op.fd < 0:
        raise SmbError(Status.FILE_CLOSED)
    if offset == APPEND_OFFSET and not op.granted_access & FILE_WRITE_DATA:
        offset = os.fstat(op.fd).st_size  # append-only open: "end of file" (MS-FSA 2.1.5.3)
    elif not op.granted_access & FILE_WRITE_DATA:
        raise SmbError(Status.ACCESS_DENIED)  # append-only opens may only write at the end
    if offset > MAX_FILE_OFFSET or (length and offset >= MAX_FILE_SIZE):
        raise SmbError(Status.INVALID_PARAMETER)
    if length and offset + length >= MAX_FILE_SIZE:
        raise SmbError(Status.DISK_FULL)
    check_lock_conflict(op, offset, length, write=True)
    sync = bool(flags & WRITEFLAG_WRITE_THROUGH or op.create_options & FILE_WRITE_THROUGH)
    fence = req.server.fence
    try:
        with op.io() as fd:
            if length > THREAD_THRESHOLD or sync:
                written = await asyncio.to_thread(_pwrite, fence, fd, data, offset, sync)
            else:
                with fence.mutation("WRITE"):
                    written = os.pwrite(fd, data, offset)
    except OSError as exc:
        raise SmbError(errno_to_status(exc)) from exc
    op.position = offset + written
    from hasmb.smb import oplock

    oplock.on_write(req.server, op)
    if req.server.state.watchers:
        from hasmb.smb import notify

        notify.report(req.server, op, notify.MODIFIED)
    return _WRITE_RESP.pack(17, 0, written, 0, 0, 0)


def _read_cached(fd: int, buf: memoryview, offset: int) -> int | None:
    """Read on the event loop only if the page cache has every byte (RWF_NOWAIT never
    blocks); otherwise None and the caller reads in a worker thread."""
    flag = getattr(os, "RWF_NOWAIT", 0)
    if not flag:
        return None
    try:
        n = os.preadv(fd, [buf], offset, flag)
    except (BlockingIOError, OSError):
        return None
    return n if n == len(buf) else None


def _pwrite(fence: Fence, fd: int, data: memoryview, offset: int, sync: bool) -> int:
    # checked here, in the thread that makes the call: a thread hand-off is no window
    with fence.mutation("WRITE"):
        n = os.pwrite(fd, data, offset)
    if sync:
        os.fdatasync(fd)
    return n


async def handle_flush(req: Request) -> bytes:
    req.structure_size(24)
    (_, _r1, _r2, file_id) = req.body(_FLUSH_REQ)
    op = req.lookup_open(file_id)
    if op.pipe is not None:
        return struct.pack("<HH", 4, 0)
    if not op.granted_access & (FILE_WRITE_DATA | FILE_APPEND_DATA):
        raise SmbError(Status.ACCESS_DENIED)
    if op.fd >= 0:
        try:
            with op.io() as fd:
                await asyncio.to_thread(os.fsync, fd)
        except OSError as exc:
            raise SmbError(errno_to_status(exc)) from exc
    return struct.pack("<HH", 4, 0)
