"""FSCTLs on file data: server-side copy and sparse files (filled in by priority 3)."""

from __future__ import annotations

from hasmb.smb.request import Registry


def register(reg: Registry) -> None:
    return None
