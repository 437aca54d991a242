"""QUERY_INFO (MS-SMB2 3.3.5.20): file, filesystem and security information
(MS-FSCC 2.4 and 2.5, MS-DTYP 2.4.6)."""

from __future__ import annotations

import os
import struct

from hasmb.smb import directory
from hasmb.smb.constants import (
    DIALECT_311,
    INFO_FILE,
    INFO_FILESYSTEM,
    INFO_QUOTA,
    INFO_SECURITY,
    READ_CONTROL,
    Command,
    Status,
)
from hasmb.smb.errors import SmbError, errno_to_status
from hasmb.smb.fileinfo import (
    FileMeta,
    basic_info,
    filetime_now,
    network_open_info,
    standard_info,
    stat_meta,
)
from hasmb.smb.request import Registry, Request
from hasmb.smb.state import Open

_REQ = struct.Struct("<HBBIHHIII16s")

# file information classes
FileBasicInformation = 4
FileStandardInformation = 5
FileInternalInformation = 6
FileEaInformation = 7
FileAccessInformation = 8
FileNameInformation = 9
FilePositionInformation = 14
FileFullEaInformation = 15
FileModeInformation = 16
FileAlignmentInformation = 17
FileAllInformation = 18
FileAlternateNameInformation = 21
FileStreamInformation = 22
FilePipeInformation = 23
FilePipeLocalInformation = 24
FileCompressionInformation = 28
FileNetworkOpenInformation = 34
FileAttributeTagInformation = 35
FileNormalizedNameInformation = 48
FileIdInformation = 59

# filesystem information classes
FileFsVolumeInformation = 1
FileFsSizeInformation = 3
FileFsDeviceInformation = 4
FileFsAttributeInformation = 5
FileFsControlInformation = 6
FileFsFullSizeInformation = 7
FileFsObjectIdInformation = 8
FileFsSectorSizeInformation = 11

# case-preserved names, unicode, persistent ACLs, sparse files (lookups fold case,
# so FILE_CASE_SENSITIVE_SEARCH is not claimed)
FS_ATTRIBUTES = 0x2 | 0x4 | 0x8 | 0x40
SECTOR = 512
CLUSTER = 4096


def register(reg: Registry) -> None:
    reg.add(Command.QUERY_INFO, handle_query_info)
    directory.register(reg)


def _meta(op: Open) -> FileMeta:
    try:
        return stat_meta(op.host_path, os.fstat(op.fd) if op.fd >= 0 else None)
    except OSError as exc:
        raise SmbError(errno_to_status(exc)) from exc


def _name_info(op: Open) -> bytes:
    raw = ("\\" + op.smb_path).encode("utf-16-le", "surrogatepass")
    return struct.pack("<I", len(raw)) + raw


def _delete_pending(op: Open) -> bool:
    return bool(op.node is not None and op.node.delete_pending)


def file_info(req: Request, op: Open, cls: int) -> tuple[bytes, int]:
    """(data, minimum size) for one file information class."""
    if op.pipe is not None:
        if cls == FileStandardInformation:
            return struct.pack("<QQIBBH", 4096, 0, 1, 1, 0, 0), 24
        raise SmbError(Status.INVALID_PARAMETER)
    if cls == FileBasicInformation:
        return basic_info(_meta(op)), 40
    if cls == FileStandardInformation:
        return standard_info(_meta(op), _delete_pending(op)), 24
    if cls == FileInternalInformation:
        return struct.pack("<Q", _meta(op).file_id), 8
    if cls == FileEaInformation:
        return struct.pack("<I", 0), 4
    if cls == FileAccessInformation:
        return struct.pack("<I", op.granted_access), 4
    if cls == FileNameInformation:
        return _name_info(op), 4
    if cls == FileNormalizedNameInformation:
        if req.conn.dialect < DIALECT_311:
            raise SmbError(Status.NOT_SUPPORTED)
        raw = op.smb_path.encode("utf-16-le", "surrogatepass")
        return struct.pack("<I", len(raw)) + raw, 4
    if cls == FilePositionInformation:
        return struct.pack("<Q", op.position), 8
    if cls == FileModeInformation:
        return struct.pack("<I", op.mode), 4
    if cls == FileAlignmentInformation:
        return struct.pack("<I", 0), 4
    if cls == FileAllInformation:
        m = _meta(op)
        data = (
            basic_info(m)
            + standard_info(m, _delete_pending(op))
            + struct.pack("<QIIQII", m.file_id, 0, op.granted_access, op.position, op.mode, 0)
            + _name_info(op)
        )
        return data, 100
    if cls == FileAlternateNameInformation:
        raise SmbError(Status.OBJECT_NAME_NOT_FOUND)
    if cls == FileStreamInformation:
        m = _meta(op)
        if m.is_dir:
            return b"", 0
        name = "::$DATA".encode("utf-16-le")
        return struct.pack("<IIQQ", 0, len(name), m.size, m.allocation) + name, 24
    if cls == FileCompressionInformation:
        m = _meta(op)
        return struct.pack("<QHBBB3s", m.size, 0, 0, 0, 0, b""), 16
    if cls == FileNetworkOpenInformation:
        return network_open_info(_meta(op)), 56
    if cls == FileAttributeTagInformation:
        return struct.pack("<II", _meta(op).attributes, 0), 8
    if cls == FileIdInformation:
        m = _meta(op)
        return struct.pack("<QQQ", m.dev, m.file_id, 0), 24
    if cls == FileFullEaInformation:
        raise SmbError(Status.NO_EAS_ON_FILE)
    raise SmbError(Status.INVALID_INFO_CLASS)


def fs_info(req: Request, op: Open, cls: int) -> tuple[bytes, int]:
    root = op.tree.share.root or "/"
    if cls == FileFsVolumeInformation:
        label = op.tree.share.name.encode("utf-16-le")
        serial = os.stat(root).st_dev & 0xFFFFFFFF
        return struct.pack("<QIIBB", req.server.start_time, serial, len(label), 0, 0) + label, 18
    if cls in (FileFsSizeInformation, FileFsFullSizeInformation):
        sv = os.statvfs(root)
        unit = sv.f_frsize or CLUSTER
        spu = max(1, unit // SECTOR)
        total = sv.f_blocks
        if cls == FileFsSizeInformation:
            return struct.pack("<QQII", total, sv.f_bavail, spu, SECTOR), 24
        return struct.pack("<QQQII", total, sv.f_bavail, sv.f_bfree, spu, SECTOR), 32
    if cls == FileFsDeviceInformation:
        return struct.pack("<II", 0x07, 0x20), 8  # FILE_DEVICE_DISK, FILE_DEVICE_IS_MOUNTED
    if cls == FileFsAttributeInformation:
        name = "NTFS".encode("utf-16-le")
        return struct.pack("<III", FS_ATTRIBUTES, 255, len(name)) + name, 12
    if cls == FileFsObjectIdInformation:
        return b"\x00" * 64, 64
    if cls == FileFsSectorSizeInformation:
        return struct.pack("<IIIIIII", SECTOR, SECTOR, SECTOR, SECTOR, 0x3, 0, 0), 28
    if cls == FileFsControlInformation:
        raise SmbError(Status.INVALID_PARAMETER)
    raise SmbError(Status.INVALID_INFO_CLASS)


def _sid(revision: int, authority: int, *subs: int) -> bytes:
    return (
        struct.pack("<BB", revision, len(subs))
        + authority.to_bytes(6, "big")
        + b"".join(struct.pack("<I", s) for s in subs)
    )


SID_EVERYONE = _sid(1, 1, 0)
SID_ADMINS = _sid(1, 5, 32, 544)
SID_USERS = _sid(1, 5, 32, 545)


def security_descriptor(addl: int) -> bytes:
    """A self-relative SD granting Everyone full access (no per-user ACLs are kept)."""
    owner = SID_ADMINS if addl & 0x1 else b""
    group = SID_USERS if addl & 0x2 else b""
    dacl = b""
    control = 0x8000  # SE_SELF_RELATIVE
    if addl & 0x4:
        ace_body = struct.pack("<I", 0x001F01FF) + SID_EVERYONE
        ace = struct.pack("<BBH", 0, 0x3, 4 + len(ace_body)) + ace_body
        dacl = struct.pack("<BBHHH", 2, 0, 8 + len(ace), 1, 0) + ace
        control |= 0x0004  # SE_DACL_PRESENT
    off = 20
    owner_off = off if owner else 0
    off += len(owner)
    group_off = off if group else 0
    off += len(group)
    dacl_off = off if dacl else 0
    return struct.pack("<BBHIIII", 1, 0, control, owner_off, group_off, 0, dacl_off) + (
        owner + group + dacl
    )


async def handle_query_info(req: Request) -> bytes:
    req.structure_size(41)
    (_, info_type, cls, out_len, _in_off, _r, _in_len, addl, _flags, file_id) = req.body(_REQ)
    op = req.lookup_open(file_id)
    if out_len > req.conn.max_transact:
        raise SmbError(Status.INVALID_PARAMETER)
    if info_type == INFO_FILE:
        if (
            op.pipe is None
            and not op.granted_access & 0x80
            and cls
            not in (
                FileNameInformation,
                FileAccessInformation,
                FilePositionInformation,
                FileModeInformation,
                FileAlignmentInformation,
                FileEaInformation,
                FileStreamInformation,
            )
        ):
            raise SmbError(Status.ACCESS_DENIED)
        data, minimum = file_info(req, op, cls)
    elif info_type == INFO_FILESYSTEM:
        if op.pipe is not None:
            raise SmbError(Status.INVALID_PARAMETER)
        data, minimum = fs_info(req, op, cls)
    elif info_type == INFO_SECURITY:
        if not op.granted_access & READ_CONTROL:
            raise SmbError(Status.ACCESS_DENIED)
        data = security_descriptor(addl)
        minimum = len(data)
        if out_len < len(data):
            raise SmbError(Status.BUFFER_TOO_SMALL, data=struct.pack("<I", len(data)))
    elif info_type == INFO_QUOTA:
        raise SmbError(Status.NOT_SUPPORTED)
    else:
        raise SmbError(Status.INVALID_PARAMETER)
    if out_len < minimum:
        raise SmbError(Status.INFO_LENGTH_MISMATCH)
    if len(data) > out_len:
        data = data[:out_len]
        req.status = Status.BUFFER_OVERFLOW
    return struct.pack("<HHI", 9, 72, len(data)) + data


__all__ = ["filetime_now", "handle_query_info"]
