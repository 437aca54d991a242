"""File metadata as Windows sees it: FILETIMEs, DOS attributes, file ids, and the
MS-FSCC information structures shared by QUERY_INFO and QUERY_DIRECTORY."""

from __future__ import annotations

import os
import stat
import struct
import time
from dataclasses import dataclass

from hasmb.smb.constants import (
    ATTR_ARCHIVE,
    ATTR_DIRECTORY,
    ATTR_NORMAL,
    ATTR_READONLY,
    ATTR_SPARSE_FILE,
)

EPOCH_DIFF = 116444736000000000  # 100ns ticks between 1601-01-01 and 1970-01-01
XATTR_ATTRS = "user.hasmb.dosattrib"
XATTR_BTIME = "user.hasmb.btime"


def filetime_now() -> int:
    return time.time_ns() // 100 + EPOCH_DIFF


def ns_to_filetime(ns: int) -> int:
    return ns // 100 + EPOCH_DIFF


def filetime_to_ns(ft: int) -> int:
    return (ft - EPOCH_DIFF) * 100


def _get_xattr(path: str, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return None


def set_xattr(path: str, name: str, value: bytes) -> bool:
    try:
        os.setxattr(path, name, value, follow_symlinks=False)
        return True
    except OSError:
        return False


@dataclass(slots=True)
class FileMeta:
    creation: int
    access: int
    write: int
    change: int
    size: int
    allocation: int
    attributes: int
    is_dir: bool
    nlink: int
    file_id: int
    dev: int


def stat_meta(path: str, st: os.stat_result | None = None) -> FileMeta:
    if st is None:
        st = os.stat(path)
    is_dir = stat.S_ISDIR(st.st_mode)
    raw_attr = _get_xattr(path, XATTR_ATTRS)
    if raw_attr is not None and len(raw_attr) == 4:
        attrs = int.from_bytes(raw_attr, "little")
    else:
        attrs = 0 if is_dir else ATTR_ARCHIVE
        if not st.st_mode & stat.S_IWUSR:
            attrs |= ATTR_READONLY
    attrs &= ~(ATTR_DIRECTORY | ATTR_NORMAL)
    if is_dir:
        attrs |= ATTR_DIRECTORY
    if not is_dir and st.st_blocks * 512 < st.st_size and raw_attr is None:
        pass  # sparse only when a client asked for it (FSCTL_SET_SPARSE)
    if attrs == 0:
        attrs = ATTR_NORMAL
    raw_bt = _get_xattr(path, XATTR_BTIME)
    if raw_bt is not None and len(raw_bt) == 8:
        creation = int.from_bytes(raw_bt, "little")
    else:
        creation = ns_to_filetime(min(st.st_mtime_ns, st.st_ctime_ns))
    size = 0 if is_dir else st.st_size
    alloc = 0 if is_dir else max(st.st_blocks * 512, 0)
    if not is_dir and attrs & ATTR_SPARSE_FILE == 0:
        alloc = max(alloc, (size + 4095) // 4096 * 4096)
    return FileMeta(
        creation=creation,
        access=ns_to_filetime(st.st_atime_ns),
        write=ns_to_filetime(st.st_mtime_ns),
        change=ns_to_filetime(st.st_ctime_ns),
        size=size,
        allocation=alloc,
        attributes=attrs,
        is_dir=is_dir,
        nlink=st.st_nlink,
        file_id=st.st_ino,
        dev=st.st_dev,
    )


def basic_info(m: FileMeta) -> bytes:
    return struct.pack("<QQQQII", m.creation, m.access, m.write, m.change, m.attributes, 0)


def standard_info(m: FileMeta, delete_pending: bool) -> bytes:
    return struct.pack(
        "<QQIBBH", m.allocation, m.size, m.nlink, int(delete_pending), int(m.is_dir), 0
    )


def network_open_info(m: FileMeta) -> bytes:
    return struct.pack(
        "<QQQQQQII",
        m.creation,
        m.access,
        m.write,
        m.change,
        m.allocation,
        m.size,
        m.attributes,
        0,
    )
