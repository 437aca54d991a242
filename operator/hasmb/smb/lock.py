"""LOCK (MS-SMB2 3.3.5.14; MS-FSA 2.1.5.7): byte-range locks, shared and exclusive,
blocking (async interim response, ended by CANCEL) and all-or-nothing lock arrays."""

from __future__ import annotations

import struct

from hasmb.smb.constants import (
    LOCKFLAG_EXCLUSIVE,
    LOCKFLAG_FAIL_IMMEDIATELY,
    LOCKFLAG_SHARED,
    LOCKFLAG_UNLOCK,
    Command,
    Status,
)
from hasmb.smb.errors import SmbError
from hasmb.smb.request import Registry, Request
from hasmb.smb.state import ByteRangeLock, FileNode, Open

_REQ = struct.Struct("<HHI16s")
_ELEM = struct.Struct("<QQII")
INVALID_LOCK_RANGE = 0xC00001A1
MAX_LOCKS_PER_REQUEST = 64 * 1024
_LOCK_FLAGS = (
    LOCKFLAG_SHARED,
    LOCKFLAG_EXCLUSIVE,
    LOCKFLAG_SHARED | LOCKFLAG_FAIL_IMMEDIATELY,
    LOCKFLAG_EXCLUSIVE | LOCKFLAG_FAIL_IMMEDIATELY,
)


def register(reg: Registry) -> None:
    reg.add(Command.LOCK, handle_lock)


def conflicts(node: FileNode, op: Open, offset: int, length: int, exclusive: bool) -> bool:
    for lk in node.locks:
        if not lk.overlaps(offset, length):
            continue
        if exclusive:
            return True
        # a shared request stacks on shared locks and on the requester's own exclusive one
        if lk.exclusive and lk.open is not op:
            return True
    return False


def _unlock(node: FileNode, op: Open, offset: int, length: int) -> None:
    for i, lk in enumerate(node.locks):
        if lk.open is op and lk.offset == offset and lk.length == length:
            del node.locks[i]
            return
    raise SmbError(Status.RANGE_NOT_LOCKED)


async def handle_lock(req: Request) -> bytes:
    req.structure_size(48)
    (_, count, _seq, file_id) = req.body(_REQ)
    op = req.lookup_open(file_id)
    if count == 0 or count > MAX_LOCKS_PER_REQUEST:
        raise SmbError(Status.INVALID_PARAMETER)
    if len(req.msg) < 64 + 24 + count * 24:
        raise SmbError(Status.INVALID_PARAMETER)
    elems = [_ELEM.unpack_from(req.msg, 88 + i * 24)[:3] for i in range(count)]
    node = op.node
    if node is None or op.is_directory:
        raise SmbError(Status.INVALID_PARAMETER if node is None else Status.INVALID_DEVICE_REQUEST)
    if elems[0][2] & LOCKFLAG_UNLOCK:
        # processed in order: an earlier failure wins over a later malformed element
        for offset, length, flags in elems:
            if flags != LOCKFLAG_UNLOCK:
                raise SmbError(Status.INVALID_PARAMETER)
            _unlock(node, op, offset, length)
            node.signal_locks()
        return struct.pack("<HH", 4, 0)
    for offset, length, flags in elems:
        if flags not in _LOCK_FLAGS:
            raise SmbError(Status.INVALID_PARAMETER)
        if count > 1 and not flags & LOCKFLAG_FAIL_IMMEDIATELY:
            raise SmbError(Status.INVALID_PARAMETER)
        if length and offset + length - 1 > 0xFFFFFFFFFFFFFFFF:
            raise SmbError(INVALID_LOCK_RANGE)
    from hasmb.smb import oplock

    oplock.on_lock(req.server, op)
    granted: list[ByteRangeLock] = []
    try:
        for offset, length, flags in elems:
            exclusive = bool(flags & LOCKFLAG_EXCLUSIVE)
            while conflicts(node, op, offset, length, exclusive):
                if flags & LOCKFLAG_FAIL_IMMEDIATELY:
                    raise SmbError(Status.LOCK_NOT_GRANTED)
                await req.go_async()
                waiter = node.lock_changed
                await req.wait_cancellable(waiter.wait())
                if op.closed:
                    raise SmbError(Status.RANGE_NOT_LOCKED)
            lk = ByteRangeLock(op, offset, length, exclusive)
            node.locks.append(lk)
            granted.append(lk)
    except SmbError:
        for lk in granted:
            if lk in node.locks:
                node.locks.remove(lk)
        if granted:
            node.signal_locks()
        raise
    return struct.pack("<HH", 4, 0)
