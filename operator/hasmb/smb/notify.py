"""CHANGE_NOTIFY (MS-SMB2 3.3.5.19)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hasmb.smb.request import Registry
from hasmb.smb.state import Open

if TYPE_CHECKING:
    from hasmb.smb.server import SmbServer


def register(reg: Registry) -> None:
    return None


def report(server: SmbServer, op: Open, action: int) -> None:
    return None
