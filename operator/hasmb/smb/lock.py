"""LOCK (MS-SMB2 3.3.5.14)."""

from __future__ import annotations

from hasmb.smb.request import Registry


def register(reg: Registry) -> None:
    return None
