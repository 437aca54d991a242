"""SET_INFO (MS-SMB2 3.3.5.21; MS-FSA 2.1.5.15 for the file information classes)."""

from __future__ import annotations

import os
import struct

from hasmb.smb import paths
from hasmb.smb.constants import (
    ATTR_DIRECTORY,
    ATTR_READONLY,
    ATTR_SETTABLE,
    DELETE,
    FILE_APPEND_DATA,
    FILE_WRITE_ATTRIBUTES,
    FILE_WRITE_DATA,
    INFO_FILE,
    INFO_FILESYSTEM,
    INFO_SECURITY,
    WRITE_DAC,
    WRITE_OWNER,
    Command,
    Status,
)
from hasmb.smb.errors import SmbError, errno_to_status
from hasmb.smb.fence import Fence
from hasmb.smb.fileinfo import (
    XATTR_ATTRS,
    XATTR_BTIME,
    filetime_to_ns,
    set_xattr,
    stat_meta,
)
from hasmb.smb.request import Registry, Request
from hasmb.smb.state import Open

_REQ = struct.Struct("<HBBIHHI16s")

FileBasicInformation = 4
FileRenameInformation = 10
FileLinkInformation = 11
FileDispositionInformation = 13
FilePositionInformation = 14
FileFullEaInformation = 15
FileModeInformation = 16
FileAllocationInformation = 19
FileEndOfFileInformation = 20
FilePipeInformation = 23
FileValidDataLengthInformation = 39
FileShortNameInformation = 40
FileDispositionInformationEx = 64
FileRenameInformationEx = 65

_MIN_SIZES = {
    FileBasicInformation: 36,
    FileRenameInformation: 20,
    FileRenameInformationEx: 20,
    FileDispositionInformation: 1,
    FileDispositionInformationEx: 4,
    FilePositionInformation: 8,
    FileModeInformation: 4,
    FileAllocationInformation: 8,
    FileEndOfFileInformation: 8,
    FileValidDataLengthInformation: 8,
    FilePipeInformation: 8,
}


def register(reg: Registry) -> None:
    reg.add(Command.SET_INFO, handle_set_info)


async def handle_set_info(req: Request) -> bytes:
    req.structure_size(33)
    (_, info_type, cls, length, offset, _r, _addl, file_id) = req.body(_REQ)
    op = req.lookup_open(file_id)
    data = req.buffer(offset, length)
    if len(data) != length:
        raise SmbError(Status.INVALID_PARAMETER)
    # every SET_INFO changes what the new owner must see: none starts unfenced
    req.server.fence.check("SET_INFO")
    if info_type == INFO_FILE:
        if op.tree.share.config.read_only and cls != FilePositionInformation:
            raise SmbError(Status.ACCESS_DENIED)
        await set_file_info(req, op, cls, data)
    elif info_type == INFO_SECURITY:
        if not op.granted_access & (WRITE_DAC | WRITE_OWNER):
            raise SmbError(Status.ACCESS_DENIED)
        # ACLs are not persisted; accepting keeps Windows Explorer/robocopy happy
    elif info_type == INFO_FILESYSTEM:
        raise SmbError(Status.NOT_SUPPORTED)
    else:
        raise SmbError(Status.INVALID_PARAMETER)
    return struct.pack("<H", 2)


async def set_file_info(req: Request, op: Open, cls: int, data: bytes) -> None:
    if op.pipe is not None:
        if cls == FilePipeInformation:
            return
        raise SmbError(Status.NOT_SUPPORTED)
    minimum = _MIN_SIZES.get(cls)
    if minimum is not None and len(data) < minimum:
        raise SmbError(Status.INFO_LENGTH_MISMATCH)
    if cls == FileBasicInformation:
        _set_basic(req.server.fence, op, data)
    elif cls in (FileRenameInformation, FileRenameInformationEx):
        await _rename(req, op, data, ex=cls == FileRenameInformationEx)
    elif cls == FileDispositionInformation:
        _set_disposition(req, op, bool(data[0]))
    elif cls == FileDispositionInformationEx:
        (flags,) = struct.unpack_from("<I", data)
        _set_disposition(req, op, bool(flags & 0x1))
    elif cls == FilePositionInformation:
        (op.position,) = struct.unpack_from("<Q", data)
    elif cls == FileModeInformation:
        (mode,) = struct.unpack_from("<I", data)
        if mode & ~0x103E:
            raise SmbError(Status.INVALID_PARAMETER)
        op.mode = mode
    elif cls in (FileEndOfFileInformation, FileAllocationInformation):
        _set_size(req.server.fence, op, data, allocation=cls == FileAllocationInformation)
        from hasmb.smb import oplock

        oplock.on_write(req.server, op)
    elif cls == FileValidDataLengthInformation:
        if not op.granted_access & FILE_WRITE_DATA:
            raise SmbError(Status.ACCESS_DENIED)
    elif cls == FileFullEaInformation:
        raise SmbError(Status.EAS_NOT_SUPPORTED)
    elif cls in (FileLinkInformation, FileShortNameInformation):
        raise SmbError(Status.NOT_SUPPORTED)
    else:
        raise SmbError(Status.INVALID_INFO_CLASS)


def _set_basic(fence: Fence, op: Open, data: bytes) -> None:
    if not op.granted_access & FILE_WRITE_ATTRIBUTES:
        raise SmbError(Status.ACCESS_DENIED)
    creation, access, write, _change, attrs = struct.unpack_from("<qqqqI", data)
    if attrs:
        if attrs & ATTR_DIRECTORY and not op.is_directory:
            raise SmbError(Status.INVALID_PARAMETER)
        if attrs & ~(ATTR_SETTABLE | ATTR_DIRECTORY | 0x80 | 0x200):
            raise SmbError(Status.INVALID_PARAMETER)
        keep = stat_meta(op.host_path).attributes & 0x200  # sparse stays as it was
        new = (attrs & ATTR_SETTABLE) | keep
        with fence.mutation("set attributes"):
            set_xattr(op.host_path, XATTR_ATTRS, new.to_bytes(4, "little"))
    if creation > 0:
        with fence.mutation("set creation time"):
            set_xattr(op.host_path, XATTR_BTIME, creation.to_bytes(8, "little"))
    if access > 0 or write > 0:
        st = os.stat(op.host_path)
        atime = filetime_to_ns(access) if access > 0 else st.st_atime_ns
        mtime = filetime_to_ns(write) if write > 0 else st.st_mtime_ns
        try:
            with fence.mutation("set times"):
                os.utime(op.host_path, ns=(atime, mtime))
        except OSError as exc:
            raise SmbError(errno_to_status(exc)) from exc


def _set_disposition(req: Request, op: Open, delete: bool) -> None:
    if not op.granted_access & DELETE:
        raise SmbError(Status.ACCESS_DENIED)
    node = op.node
    if node is None:
        raise SmbError(Status.INVALID_PARAMETER)
    if delete:
        if not op.smb_path:
            raise SmbError(Status.CANNOT_DELETE)
        if stat_meta(op.host_path).attributes & ATTR_READONLY:
            raise SmbError(Status.CANNOT_DELETE)
        if op.is_directory:
            try:
                if os.listdir(op.host_path):
                    raise SmbError(Status.DIRECTORY_NOT_EMPTY)
            except OSError as exc:
                raise SmbError(errno_to_status(exc)) from exc
    node.delete_pending = delete
    if delete and op.is_directory:
        from hasmb.smb import notify

        notify.delete_pending(req.server, node)


def _set_size(fence: Fence, op: Open, data: bytes, allocation: bool) -> None:
    if not op.granted_access & (FILE_WRITE_DATA | FILE_APPEND_DATA):
        raise SmbError(Status.ACCESS_DENIED)
    if op.is_directory:
        raise SmbError(Status.INVALID_PARAMETER)
    (size,) = struct.unpack_from("<Q", data)
    if size > 0x7FFFFFFFFFFFFFFF:
        raise SmbError(Status.INVALID_PARAMETER)
    try:
        current = os.fstat(op.fd).st_size
        if allocation and size >= current:
            return
        with fence.mutation("set size"):
            os.ftruncate(op.fd, size)
    except OSError as exc:
        raise SmbError(errno_to_status(exc)) from exc


async def _rename(req: Request, op: Open, data: bytes, ex: bool) -> None:
    if ex:
        (flags,) = struct.unpack_from("<I", data)
        replace = bool(flags & 0x1)
    else:
        replace = bool(data[0])
    (_root, name_len) = struct.unpack_from("<QI", data, 8)
    raw = data[20 : 20 + name_len]
    if len(raw) != name_len or name_len == 0 or name_len % 2:
        raise SmbError(Status.INVALID_PARAMETER)
    if not op.granted_access & DELETE:
        raise SmbError(Status.ACCESS_DENIED)
    if not op.smb_path:
        raise SmbError(Status.ACCESS_DENIED)
    target = raw.decode("utf-16-le", "surrogatepass").lstrip("\\")
    parts = paths.split_smb_path(target)
    if not parts:
        raise SmbError(Status.OBJECT_NAME_INVALID)
    _do_rename(req, op, parts, replace)


def _do_rename(req: Request, op: Open, parts: list[str], replace: bool) -> None:
    root = op.tree.share.root
    new_host = paths.resolve(root, parts)
    if not os.path.isdir(os.path.dirname(new_host)):
        raise SmbError(Status.OBJECT_PATH_NOT_FOUND)
    old_host = op.host_path
    same = os.path.normcase(new_host) == os.path.normcase(old_host)
    if op.is_directory and (new_host + "/").startswith(old_host + "/") and not same:
        raise SmbError(Status.INVALID_PARAMETER)
    if not same and os.path.lexists(new_host):
        if not replace:
            raise SmbError(Status.OBJECT_NAME_COLLISION)
        if os.path.isdir(new_host):
            raise SmbError(Status.ACCESS_DENIED)
        st = os.stat(new_host)
        if (st.st_dev, st.st_ino) in req.server.state.files:
            raise SmbError(Status.ACCESS_DENIED)
    if op.is_directory:
        prefix = old_host + "/"
        for other in req.server.state.opens.values():
            if other is not op and other.host_path.startswith(prefix):
                raise SmbError(Status.ACCESS_DENIED)
    if op.node is not None:
        for other in op.node.opens:
            if other is not op and not other.share_access & 0x4:
                raise SmbError(Status.SHARING_VIOLATION)
    try:
        with req.server.fence.mutation("rename"):
            os.rename(old_host, new_host)
    except OSError as exc:
        raise SmbError(errno_to_status(exc)) from exc
    new_smb = paths.smb_name(parts)
    from hasmb.smb import notify

    notify.report(req.server, op, 4)
    if op.node is not None:
        op.node.path = new_host
        for other in op.node.opens:
            other.host_path = new_host
            other.smb_path = new_smb
    op.host_path = new_host
    op.smb_path = new_smb
    notify.report(req.server, op, 5)
