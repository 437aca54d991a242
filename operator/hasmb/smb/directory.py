"""QUERY_DIRECTORY (MS-SMB2 3.3.5.18) with the MS-FSCC 2.4 directory information classes
and Windows wildcard matching (MS-FSA 2.1.4.4)."""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Callable

from hasmb.smb.constants import (
    FILE_LIST_DIRECTORY,
    QD_INDEX_SPECIFIED,
    QD_REOPEN,
    QD_RESTART_SCANS,
    QD_RETURN_SINGLE_ENTRY,
    Command,
    Status,
)
from hasmb.smb.errors import SmbError
from hasmb.smb.fileinfo import FileMeta, stat_meta
from hasmb.smb.paths import STATE_DIR_NAME
from hasmb.smb.request import Registry, Request
from hasmb.smb.state import Open

_REQ = struct.Struct("<HBBI16sHHI")
_DIR_COMMON = struct.Struct("<IIQQQQQQII")  # 64 bytes: up to FileNameLength

FileDirectoryInformation = 1
FileFullDirectoryInformation = 2
FileBothDirectoryInformation = 3
FileNamesInformation = 12
FileIdBothDirectoryInformation = 37
FileIdFullDirectoryInformation = 38
FileIdExtdDirectoryInformation = 60


def register(reg: Registry) -> None:
    reg.add(Command.QUERY_DIRECTORY, handle_query_directory)


def pattern_matcher(pattern: str) -> Callable[[str], bool]:
    if pattern in ("", "*", "*.*", "<.*"):
        return lambda _n: True
    if not any(c in pattern for c in '*?<>"'):
        low = pattern.lower()
        return lambda n: n.lower() == low
    rx = ""
    for ch in pattern:
        if ch == "*":
            rx += ".*"
        elif ch == "?":
            rx += "."
        elif ch == ">":
            rx += ".?"
        elif ch == "<":
            rx += ".*"
        elif ch == '"':
            rx += r"\.?"
        else:
            rx += re.escape(ch)
    compiled = re.compile(rx + r"\Z", re.IGNORECASE | re.DOTALL)
    return lambda n: compiled.match(n) is not None


def _entry(cls: int, name: str, m: FileMeta, index: int) -> bytes:
    raw = name.encode("utf-16-le", "surrogatepass")
    if cls == FileNamesInformation:
        return struct.pack("<III", 0, index, len(raw)) + raw
    common = _DIR_COMMON.pack(
        0,
        index,
        m.creation,
        m.access,
        m.write,
        m.change,
        m.size,
        m.allocation,
        m.attributes,
        len(raw),
    )
    if cls == FileDirectoryInformation:
        return common + raw
    if cls == FileFullDirectoryInformation:
        return common + struct.pack("<I", 0) + raw
    if cls == FileIdFullDirectoryInformation:
        return common + struct.pack("<IIQ", 0, 0, m.file_id) + raw
    if cls == FileBothDirectoryInformation:
        return common + struct.pack("<IBB24s", 0, 0, 0, b"") + raw
    if cls == FileIdBothDirectoryInformation:
        return common + struct.pack("<IBB24sHQ", 0, 0, 0, b"", 0, m.file_id) + raw
    if cls == FileIdExtdDirectoryInformation:
        return common + struct.pack("<IIQQ", 0, 0, m.file_id, 0) + raw
    raise SmbError(Status.INVALID_INFO_CLASS)


_CLASSES = (
    FileDirectoryInformation,
    FileFullDirectoryInformation,
    FileBothDirectoryInformation,
    FileNamesInformation,
    FileIdBothDirectoryInformation,
    FileIdFullDirectoryInformation,
    FileIdExtdDirectoryInformation,
)


async def handle_query_directory(req: Request) -> bytes:
    req.structure_size(33)
    (_, cls, flags, _index, file_id, name_off, name_len, out_len) = req.body(_REQ)
    op = req.lookup_open(file_id)
    if cls not in _CLASSES:
        raise SmbError(Status.INVALID_INFO_CLASS)
    if not op.is_directory:
        raise SmbError(Status.INVALID_PARAMETER)
    if not op.granted_access & FILE_LIST_DIRECTORY:
        raise SmbError(Status.ACCESS_DENIED)
    if out_len > req.conn.max_transact:
        raise SmbError(Status.INVALID_PARAMETER)
    pattern = req.buffer(name_off, name_len).decode("utf-16-le") if name_len else ""
    if name_len == 0 and op.dir_entries is None:
        raise SmbError(Status.INVALID_PARAMETER)
    if "\\" in pattern or "/" in pattern:
        raise SmbError(Status.OBJECT_NAME_INVALID)
    restart = bool(flags & (QD_RESTART_SCANS | QD_REOPEN | QD_INDEX_SPECIFIED))
    if op.dir_entries is None or restart:
        try:
            names = sorted(os.listdir(op.host_path))
            if op.host_path == op.tree.share.root:
                names = [n for n in names if n.lower() != STATE_DIR_NAME]
        except OSError as exc:
            raise SmbError(Status.ACCESS_DENIED) from exc
        if pattern:
            op.dir_pattern = pattern
        op.dir_pattern = op.dir_pattern or "*"
        match = pattern_matcher(op.dir_pattern)
        op.dir_entries = [n for n in [".", "..", *names] if match(n)]
        op.dir_pos = 0
        first = True
    else:
        first = False
    out, count = _fill(op, cls, flags, out_len)
    if count == 0:
        raise SmbError(Status.NO_SUCH_FILE if first else Status.NO_MORE_FILES)
    return struct.pack("<HHI", 9, 72, len(out)) + bytes(out)


def _fill(op: Open, cls: int, flags: int, out_len: int) -> tuple[bytearray, int]:
    entries = op.dir_entries or []
    out = bytearray()
    last_off = -1
    count = 0
    while op.dir_pos < len(entries):
        name = entries[op.dir_pos]
        if name == ".":
            path = op.host_path
        elif name == "..":
            path = os.path.dirname(op.host_path) if op.smb_path else op.host_path
        else:
            path = os.path.join(op.host_path, name)
        try:
            meta = stat_meta(path, os.stat(path, follow_symlinks=False))
        except OSError:
            op.dir_pos += 1
            continue
        if os.path.islink(path):
            # a symlink is shown only when it resolves inside the share
            op.dir_pos += 1
            continue
        entry = _entry(cls, name, meta, 0)
        pad = (-len(out)) % 8
        if len(out) + pad + len(entry) > out_len:
            if count == 0:
                raise SmbError(Status.INFO_LENGTH_MISMATCH)
            break
        out += b"\x00" * pad
        if last_off >= 0:
            struct.pack_into("<I", out, last_off, len(out) - last_off)
        last_off = len(out)
        out += entry
        count += 1
        op.dir_pos += 1
        if flags & QD_RETURN_SINGLE_ENTRY:
            break
    return out, count
