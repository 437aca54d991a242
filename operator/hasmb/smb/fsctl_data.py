"""FSCTLs on file data: server-side copy (MS-SMB2 3.3.5.15.6, request-resume-key 3.3.5.15.5)
and sparse files (MS-FSCC 2.3.64 set-sparse, 2.3.67 set-zero-data, 2.3.51
query-allocated-ranges)."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import os
import struct

from hasmb.smb.constants import (
    ATTR_SPARSE_FILE,
    FILE_APPEND_DATA,
    FILE_READ_DATA,
    FILE_WRITE_ATTRIBUTES,
    FILE_WRITE_DATA,
    FSCTL_GET_COMPRESSION,
    FSCTL_QUERY_ALLOCATED_RANGES,
    FSCTL_SET_COMPRESSION,
    FSCTL_SET_SPARSE,
    FSCTL_SET_ZERO_DATA,
    FSCTL_SRV_COPYCHUNK,
    FSCTL_SRV_COPYCHUNK_WRITE,
    FSCTL_SRV_REQUEST_RESUME_KEY,
    Status,
)
from hasmb.smb.errors import SmbError, errno_to_status
from hasmb.smb.fence import Fence
from hasmb.smb.fileinfo import XATTR_ATTRS, set_xattr, stat_meta
from hasmb.smb.fileio import check_lock_conflict
from hasmb.smb.request import Registry, Request
from hasmb.smb.state import Open

MAX_CHUNKS = 256
MAX_CHUNK_SIZE = 1024 * 1024
MAX_TOTAL = 16 * 1024 * 1024
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02


def register(reg: Registry) -> None:
    reg.add_fsctl(FSCTL_SRV_REQUEST_RESUME_KEY, request_resume_key)
    reg.add_fsctl(FSCTL_SRV_COPYCHUNK, copychunk)
    reg.add_fsctl(FSCTL_SRV_COPYCHUNK_WRITE, copychunk)
    reg.add_fsctl(FSCTL_SET_SPARSE, set_sparse)
    reg.add_fsctl(FSCTL_SET_ZERO_DATA, set_zero_data)
    reg.add_fsctl(FSCTL_QUERY_ALLOCATED_RANGES, query_allocated_ranges)
    reg.add_fsctl(FSCTL_GET_COMPRESSION, get_compression)
    reg.add_fsctl(FSCTL_SET_COMPRESSION, set_compression)


async def get_compression(req: Request, op: Open | None, data: bytes, max_out: int) -> bytes:
    if op is None or op.pipe is not None:
        raise SmbError(Status.INVALID_PARAMETER)
    if max_out < 2:
        raise SmbError(Status.INVALID_PARAMETER)
    return struct.pack("<H", 0)  # COMPRESSION_FORMAT_NONE


async def set_compression(req: Request, op: Open | None, data: bytes, max_out: int) -> bytes:
    if op is None or op.pipe is not None:
        raise SmbError(Status.INVALID_PARAMETER)
    if len(data) < 2:
        raise SmbError(Status.INVALID_PARAMETER)
    (fmt,) = struct.unpack_from("<H", data)
    if fmt != 0:
        raise SmbError(Status.NOT_SUPPORTED)
    return b""


def _file(op: Open | None) -> Open:
    if op is None or op.pipe is not None:
        raise SmbError(Status.INVALID_PARAMETER)
    if op.is_directory:
        raise SmbError(Status.INVALID_PARAMETER)
    return op


async def request_resume_key(req: Request, op: Open | None, data: bytes, max_out: int) -> bytes:
    f = _file(op)
    if max_out < 32:
        raise SmbError(Status.INVALID_PARAMETER)
    if not f.resume_key:
        f.resume_key = os.urandom(24)
        req.server.state.by_resume_key[f.resume_key] = f
    return f.resume_key + struct.pack("<II", 0, 0)


def _copy_limits() -> bytes:
    return struct.pack("<III", MAX_CHUNKS, MAX_CHUNK_SIZE, MAX_TOTAL)


async def copychunk(req: Request, op: Open | None, data: bytes, max_out: int) -> bytes:
    target = _file(op)
    if max_out < 12:
        raise SmbError(Status.INVALID_PARAMETER)
    if len(data) < 32:
        raise SmbError(Status.INVALID_PARAMETER)
    key, count, _r = struct.unpack_from("<24sII", data)
    if len(data) < 32 + count * 24:
        raise SmbError(Status.INVALID_PARAMETER)
    chunks = [struct.unpack_from("<QQII", data, 32 + i * 24)[:3] for i in range(count)]
    total = sum(c[2] for c in chunks)
    if (
        count > MAX_CHUNKS
        or any(c[2] > MAX_CHUNK_SIZE or c[2] == 0 for c in chunks)
        or (total > MAX_TOTAL)
    ):
        req.status = Status.INVALID_PARAMETER
        return _copy_limits()
    source = req.server.state.by_resume_key.get(key)
    if source is None or source.closed:
        raise SmbError(Status.OBJECT_NAME_NOT_FOUND)
    if (
        source.session is not None
        and req.session is not None
        and (source.session.user.lower() != req.session.user.lower())
    ):
        raise SmbError(Status.ACCESS_DENIED)
    ctl = int.from_bytes(req.msg[68:72], "little")
    if not target.granted_access & FILE_WRITE_DATA:
        raise SmbError(Status.ACCESS_DENIED)
    if ctl == FSCTL_SRV_COPYCHUNK and not target.granted_access & FILE_READ_DATA:
        raise SmbError(Status.ACCESS_DENIED)
    if not source.granted_access & FILE_READ_DATA:
        raise SmbError(Status.ACCESS_DENIED)
    written = 0
    done = 0
    try:
        for src_off, dst_off, length in chunks:
            check_lock_conflict(source, src_off, length, write=False)
            check_lock_conflict(target, dst_off, length, write=True)
            try:
                with source.io() as sfd, target.io() as tfd:
                    n = await asyncio.to_thread(
                        _copy, req.server.fence, sfd, tfd, src_off, dst_off, length
                    )
            except OSError as exc:
                raise SmbError(errno_to_status(exc)) from exc
            if n < length:
                raise SmbError(Status.INVALID_VIEW_SIZE)
            written += n
            done += 1
    except SmbError as err:
        # the response still reports how far the copy got (MS-SMB2 3.3.5.15.6.2)
        req.status = err.status
    return struct.pack("<III", done, 0, written)


def _copy(fence: Fence, src: int, dst: int, src_off: int, dst_off: int, length: int) -> int:
    size = os.fstat(src).st_size
    if src_off + length > size:
        return 0
    data = os.pread(src, length, src_off)
    with fence.mutation("copy chunk"):
        return os.pwrite(dst, data, dst_off)


def _set_attr_bit(fence: Fence, op: Open, bit: int, on: bool) -> None:
    attrs = stat_meta(op.host_path).attributes & ~0x80
    attrs = (attrs | bit) if on else (attrs & ~bit)
    attrs &= ~0x10
    if attrs == 0:
        attrs = 0x20 if not op.is_directory else 0
    with fence.mutation("set sparse"):
        set_xattr(op.host_path, XATTR_ATTRS, attrs.to_bytes(4, "little"))


async def set_sparse(req: Request, op: Open | None, data: bytes, max_out: int) -> bytes:
    f = _file(op)
    if not f.granted_access & (FILE_WRITE_DATA | FILE_WRITE_ATTRIBUTES | FILE_APPEND_DATA):
        raise SmbError(Status.ACCESS_DENIED)
    on = bool(data[0]) if data else True
    _set_attr_bit(req.server.fence, f, ATTR_SPARSE_FILE, on)
    return b""


def _punch_hole(fd: int, offset: int, length: int) -> bool:
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    res = libc.fallocate(
        ctypes.c_int(fd),
        ctypes.c_int(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE),
        ctypes.c_longlong(offset),
        ctypes.c_longlong(length),
    )
    return int(res) == 0


def _zero_range(fence: Fence, fd: int, offset: int, end: int) -> None:
    size = os.fstat(fd).st_size
    end = min(end, size)
    if end <= offset:
        return
    with fence.mutation("zero data"):
        if _punch_hole(fd, offset, end - offset):
            return
    step = 1024 * 1024
    pos = offset
    while pos < end:
        n = min(step, end - pos)
        with fence.mutation("zero data"):
            os.pwrite(fd, b"\x00" * n, pos)
        pos += n


async def set_zero_data(req: Request, op: Open | None, data: bytes, max_out: int) -> bytes:
    f = _file(op)
    if len(data) < 16:
        raise SmbError(Status.INVALID_PARAMETER)
    offset, beyond = struct.unpack_from("<qq", data)
    if offset < 0 or beyond < 0 or offset > beyond:
        raise SmbError(Status.INVALID_PARAMETER)
    if not f.granted_access & FILE_WRITE_DATA:
        raise SmbError(Status.ACCESS_DENIED)
    check_lock_conflict(f, offset, beyond - offset, write=True)
    try:
        with f.io() as fd:
            await asyncio.to_thread(_zero_range, req.server.fence, fd, offset, beyond)
    except OSError as exc:
        raise SmbError(errno_to_status(exc)) from exc
    return b""


def _allocated(fd: int, offset: int, length: int, sparse: bool) -> list[tuple[int, int]]:
    size = os.fstat(fd).st_size
    end = min(offset + length, size)
    if end <= offset:
        return []
    if not sparse:
        return [(offset, end - offset)]
    out: list[tuple[int, int]] = []
    pos = offset
    while pos < end:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                break
            raise
        if data >= end:
            break
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
        if out and out[-1][0] + out[-1][1] == data:
            out[-1] = (out[-1][0], hole - out[-1][0])
        else:
            out.append((data, hole - data))
        pos = hole
    return out


async def query_allocated_ranges(req: Request, op: Open | None, data: bytes, max_out: int) -> bytes:
    f = _file(op)
    if len(data) < 16:
        raise SmbError(Status.INVALID_PARAMETER)
    offset, length = struct.unpack_from("<qq", data)
    if offset < 0 or length < 0 or offset + length < 0:
        raise SmbError(Status.INVALID_PARAMETER)
    if not f.granted_access & FILE_READ_DATA:
        raise SmbError(Status.ACCESS_DENIED)
    sparse = bool(stat_meta(f.host_path).attributes & ATTR_SPARSE_FILE)
    try:
        with f.io() as fd:
            ranges = await asyncio.to_thread(_allocated, fd, offset, length, sparse)
    except OSError as exc:
        raise SmbError(errno_to_status(exc)) from exc
    if ranges and max_out < 16:
        raise SmbError(Status.BUFFER_TOO_SMALL)
    fit = max_out // 16
    if len(ranges) > fit:
        ranges = ranges[:fit]
        req.status = Status.BUFFER_OVERFLOW
    return b"".join(struct.pack("<qq", o, n) for o, n in ranges)
