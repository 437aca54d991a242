"""Oplocks and leases (MS-SMB2 3.3.5.9.8, 3.3.5.9.11, 3.3.4.6, 3.3.5.22)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hasmb.smb.request import Registry, Request
from hasmb.smb.state import FileNode, Open

if TYPE_CHECKING:
    from hasmb.smb.server import SmbServer


def register(reg: Registry) -> None:
    return None


async def grant_on_create(req: Request, params: Any, op: Open) -> None:
    op.oplock_level = 0


async def break_for_open(req: Request, node: FileNode, access: int, params: Any) -> None:
    return None


async def release(server: SmbServer, op: Open) -> None:
    return None


def on_write(server: SmbServer, op: Open) -> None:
    return None
