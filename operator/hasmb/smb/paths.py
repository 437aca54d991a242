"""The share jail: turns a client's SMB path into a host path that stays inside the share.

Rules (what Windows/Samba answer in brackets):
- separators are backslashes; a leading backslash is refused [OBJECT_NAME_INVALID]
  as MS-SMB2 3.3.5.9 demands for CREATE names;
- `.` and `..` components are refused [OBJECT_PATH_SYNTAX_BAD];
- characters illegal in NTFS names and control characters [OBJECT_NAME_INVALID];
- DOS device names (CON, NUL, COM1, ... with any extension) [OBJECT_NAME_INVALID];
- alternate data streams (`name:stream`) [OBJECT_NAME_INVALID]; `name::$DATA`
  is the unnamed stream and is accepted as `name`;
- a resolved path (symlinks followed) outside the share root [ACCESS_DENIED].
"""

from __future__ import annotations

import os

from hasmb.smb.constants import Status
from hasmb.smb.errors import SmbError

_ILLEGAL = set('<>"|?*/') | {chr(c) for c in range(0x20)}
_DEVICES = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"COM{i}" for i in range(1, 10)]
    + [f"LPT{i}" for i in range(1, 10)]
)
MAX_COMPONENT = 255
STATE_DIR_NAME = ".hasmb-state"  # hasmb-smbd's default --state file:<first share>/.hasmb-state
MAX_PATH = 32767


def split_smb_path(name: str, *, allow_wildcards: bool = False) -> list[str]:
    """Validate an SMB path relative to the share root and return its components."""
    if not name:
        return []
    if len(name) > MAX_PATH:
        raise SmbError(Status.OBJECT_NAME_INVALID)
    if name.startswith("\\"):
        raise SmbError(Status.INVALID_PARAMETER, "absolute path")
    if name.endswith("::$DATA"):
        name = name[: -len("::$DATA")]
    parts: list[str] = []
    raw = name.split("\\")
    for i, comp in enumerate(raw):
        if comp == "":
            if i == len(raw) - 1 and i > 0:
                continue  # trailing backslash names the directory itself
            raise SmbError(Status.OBJECT_NAME_INVALID, "empty path component")
        if comp in (".", ".."):
            raise SmbError(Status.OBJECT_PATH_SYNTAX_BAD, "dot component")
        if ":" in comp:
            raise SmbError(Status.OBJECT_NAME_INVALID, "alternate data stream")
        bad = _ILLEGAL if not allow_wildcards else _ILLEGAL - set('<>"?*')
        if any(ch in bad for ch in comp):
            raise SmbError(Status.OBJECT_NAME_INVALID, "illegal character")
        if len(comp.encode("utf-8", "surrogatepass")) > MAX_COMPONENT:
            raise SmbError(Status.OBJECT_NAME_INVALID, "component too long")
        stem = comp.split(".", 1)[0].rstrip(" ").upper()
        if stem in _DEVICES:
            raise SmbError(Status.OBJECT_NAME_INVALID, "device name")
        parts.append(comp)
    return parts


def validate_component(comp: str) -> None:
    """One file name (as used by rename targets and directory patterns)."""
    split_smb_path(comp)


def is_within(root: str, path: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def resolve(root: str, parts: list[str]) -> str:
    """Host path for `parts`; symlinks may not lead outside `root` (a realpath)."""
    if parts and parts[0].lower() == STATE_DIR_NAME:
        # the default handle-state store lives here; clients never see it
        raise SmbError(Status.OBJECT_NAME_NOT_FOUND, "reserved name")
    if parts and not os.path.lexists(os.path.join(root, *parts)):
        parts = fold_case(root, parts)
    host = os.path.join(root, *parts) if parts else root
    real = os.path.realpath(host)
    if not is_within(root, real):
        raise SmbError(Status.ACCESS_DENIED, "path leaves the share")
    # A dangling final symlink would let a create follow it outside the share.
    if os.path.islink(host) and not os.path.exists(host):
        raise SmbError(Status.ACCESS_DENIED, "dangling symlink")
    return real


MAX_FOLD_SCAN = 100_000


def fold_case(root: str, parts: list[str]) -> list[str]:
    """Windows names are case-insensitive: map each missing component to an existing
    entry that differs only in case (the first match in directory order wins). Only
    misses pay for the directory scan; names that exist as given are used as they are."""
    out: list[str] = []
    current = root
    for i, comp in enumerate(parts):
        candidate = os.path.join(current, comp)
        if not os.path.lexists(candidate):
            want = comp.casefold()
            try:
                with os.scandir(current) as it:
                    for n, entry in enumerate(it):
                        if n > MAX_FOLD_SCAN:
                            break
                        if entry.name.casefold() == want:
                            comp = entry.name
                            break
            except OSError:
                return out + parts[i:]  # parent missing: the caller reports it
            candidate = os.path.join(current, comp)
        out.append(comp)
        current = candidate
    return out


def smb_name(parts: list[str]) -> str:
    return "\\".join(parts)
