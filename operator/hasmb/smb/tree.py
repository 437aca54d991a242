"""TREE_CONNECT and TREE_DISCONNECT (MS-SMB2 3.3.5.7, 3.3.5.8)."""

from __future__ import annotations

import struct

from hasmb.smb.constants import (
    DIALECT_300,
    FILE_ALL_ACCESS,
    SHARE_CAP_CLUSTER,
    SHARE_CAP_CONTINUOUS_AVAILABILITY,
    SHARE_TYPE_DISK,
    SHARE_TYPE_PIPE,
    SHAREFLAG_ENCRYPT_DATA,
    SHAREFLAG_NO_CACHING,
    Command,
    Status,
)
from hasmb.smb.errors import SmbError
from hasmb.smb.request import Registry, Request
from hasmb.smb.state import TreeConnect

_REQ = struct.Struct("<HHHH")
READ_ONLY_ACCESS = 0x001200A9
MAX_TREES = 1024


def register(reg: Registry) -> None:
    reg.add(Command.TREE_CONNECT, handle_tree_connect, needs_tree=False)
    reg.add(Command.TREE_DISCONNECT, handle_tree_disconnect)


async def handle_tree_connect(req: Request) -> bytes:
    req.structure_size(9)
    session = req.require_session()
    (_, _flags, path_off, path_len) = req.body(_REQ)
    unc = req.buffer(path_off, path_len).decode("utf-16-le")
    if not unc.startswith("\\\\"):
        raise SmbError(Status.BAD_NETWORK_NAME)
    parts = unc[2:].split("\\")
    if len(parts) != 2 or not parts[1]:
        raise SmbError(Status.BAD_NETWORK_NAME)
    share = req.server.shares.get(parts[1].lower())
    if share is None:
        raise SmbError(Status.BAD_NETWORK_NAME)
    if (session.anonymous or session.guest) and not (share.is_ipc or share.config.guest_ok):
        raise SmbError(Status.ACCESS_DENIED)
    if len(session.trees) >= MAX_TREES:
        raise SmbError(Status.INSUFFICIENT_RESOURCES)
    conn = req.conn
    encrypt = share.config.encrypt and not share.is_ipc
    if encrypt and (conn.dialect < DIALECT_300 or not conn.cipher or session.keys is None):
        raise SmbError(Status.ACCESS_DENIED, "share requires encryption")
    access = READ_ONLY_ACCESS if share.config.read_only else FILE_ALL_ACCESS
    tree = TreeConnect(
        tree_id=session.next_tree_id,
        share=share,
        session=session,
        maximal_access=access,
        encrypt=encrypt or session.encrypt_data,
    )
    session.next_tree_id += 1
    session.trees[tree.tree_id] = tree
    req.tree = tree
    flags = SHAREFLAG_NO_CACHING if share.is_ipc else 0
    if encrypt:
        flags |= SHAREFLAG_ENCRYPT_DATA
    caps = 0
    if share.config.continuously_available and conn.dialect >= DIALECT_300:
        caps |= SHARE_CAP_CONTINUOUS_AVAILABILITY
        if req.server.config.witness.listen:
            # a witness runs (hasmb-smbd starts it whenever witness.listen is set):
            # clients may register with it (MS-SMB2 2.2.10, MS-SWN)
            caps |= SHARE_CAP_CLUSTER
    stype = SHARE_TYPE_PIPE if share.is_ipc else SHARE_TYPE_DISK
    return struct.pack("<HBBIII", 16, stype, 0, flags, caps, access)


async def handle_tree_disconnect(req: Request) -> bytes:
    from hasmb.smb.create import close_open

    req.structure_size(4)
    session = req.require_session()
    tree = req.require_tree()
    for op in [o for o in session.opens.values() if o.tree is tree]:
        await close_open(req.server, op)  # pending notifies end NOTIFY_CLEANUP
    session.trees.pop(tree.tree_id, None)
    return struct.pack("<HH", 4, 0)
