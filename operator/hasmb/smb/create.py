"""CREATE and CLOSE (MS-SMB2 3.3.5.9, 3.3.5.10; MS-FSA 2.1.5.1 for the open semantics).

Create contexts are parsed here; each one the server understands is handled by
a function in `CONTEXT_HANDLERS`-style hooks (durable/persistent handles add
theirs in the continuous-availability work via `CreateHooks`).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hasmb.smb import oplock, paths
from hasmb.smb.constants import (
    ACCESS_SYSTEM_SECURITY,
    ATTR_DIRECTORY,
    ATTR_READONLY,
    ATTR_SETTABLE,
    CLOSE_FLAG_POSTQUERY_ATTRIB,
    DELETE,
    FILE_ADD_FILE,
    FILE_ADD_SUBDIRECTORY,
    FILE_ALL_ACCESS,
    FILE_APPEND_DATA,
    FILE_CREATE,
    FILE_CREATED,
    FILE_DELETE_ON_CLOSE,
    FILE_DIRECTORY_FILE,
    FILE_EXECUTE,
    FILE_GENERIC_EXECUTE,
    FILE_GENERIC_READ,
    FILE_GENERIC_WRITE,
    FILE_NON_DIRECTORY_FILE,
    FILE_OPEN,
    FILE_OPEN_BY_FILE_ID,
    FILE_OPENED,
    FILE_OVERWRITE,
    FILE_OVERWRITE_IF,
    FILE_OVERWRITTEN,
    FILE_READ_ATTRIBUTES,
    FILE_READ_DATA,
    FILE_SHARE_DELETE,
    FILE_SHARE_READ,
    FILE_SHARE_WRITE,
    FILE_SUPERSEDE,
    FILE_SUPERSEDED,
    FILE_WRITE_ATTRIBUTES,
    FILE_WRITE_DATA,
    FILE_WRITE_EA,
    GENERIC_ALL,
    GENERIC_EXECUTE,
    GENERIC_READ,
    GENERIC_WRITE,
    MAXIMUM_ALLOWED,
    OPLOCK_LEVEL_BATCH,
    OPLOCK_LEVEL_EXCLUSIVE,
    OPLOCK_LEVEL_II,
    OPLOCK_LEVEL_LEASE,
    OPLOCK_LEVEL_NONE,
    SYNCHRONIZE,
    WRITE_DAC,
    WRITE_OWNER,
    Command,
    Status,
)
from hasmb.smb.errors import SmbError, errno_to_status
from hasmb.smb.fence import Fenced
from hasmb.smb.fileinfo import (
    XATTR_ATTRS,
    XATTR_BTIME,
    FileMeta,
    filetime_now,
    set_xattr,
    stat_meta,
)
from hasmb.smb.request import Registry, Request
from hasmb.smb.state import Open, TreeConnect

if TYPE_CHECKING:
    from hasmb.smb.server import SmbServer

log = logging.getLogger("hasmb.smb")

_REQ = struct.Struct("<HBBIQQIIIIIHHII")
_RESP = struct.Struct("<HBBIQQQQQQII16sII")
_CLOSE_REQ = struct.Struct("<HHI16s")
_CLOSE_RESP = struct.Struct("<HHIQQQQQQI")
DATA_ACCESS = FILE_READ_DATA | FILE_WRITE_DATA | FILE_APPEND_DATA | FILE_EXECUTE | DELETE
WRITE_ACCESS = (
    FILE_WRITE_DATA
    | FILE_APPEND_DATA
    | FILE_WRITE_EA
    | FILE_WRITE_ATTRIBUTES
    | DELETE
    | WRITE_DAC
    | WRITE_OWNER
    | 0x40  # FILE_DELETE_CHILD
)
VALID_ACCESS = 0x1F01FF | ACCESS_SYSTEM_SECURITY | MAXIMUM_ALLOWED | 0xF0000000
VALID_ATTRS = 0x00007FB7
READ_ONLY_SHARE_ACCESS = 0x001200A9


def register(reg: Registry) -> None:
    reg.add(Command.CREATE, handle_create)
    reg.add(Command.CLOSE, handle_close)


@dataclass
class CreateContext:
    name: bytes
    data: bytes


@dataclass
class CreateParams:
    """What a CREATE asked for, passed to context hooks."""

    name: str
    desired_access: int
    file_attributes: int
    share_access: int
    disposition: int
    options: int
    oplock_level: int
    contexts: dict[bytes, CreateContext] = field(default_factory=dict)
    response_contexts: list[tuple[bytes, bytes]] = field(default_factory=list)


CreateHook = Callable[[Request, CreateParams, Open], Awaitable[None]]


def parse_contexts(req: Request, offset: int, length: int) -> dict[bytes, CreateContext]:
    out: dict[bytes, CreateContext] = {}
    if length == 0:
        return out
    blob = req.buffer(offset, length)
    pos = 0
    while True:
        if pos + 16 > len(blob):
            raise SmbError(Status.INVALID_PARAMETER, "truncated create context")
        nxt, name_off, name_len, _r, data_off, data_len = struct.unpack_from("<IHHHHI", blob, pos)
        name = blob[pos + name_off : pos + name_off + name_len]
        data = blob[pos + data_off : pos + data_off + data_len] if data_len else b""
        if len(name) != name_len or len(data) != data_len or name_len == 0:
            raise SmbError(Status.INVALID_PARAMETER, "bad create context")
        if name in out:
            raise SmbError(Status.INVALID_PARAMETER, "duplicate create context")
        out[name] = CreateContext(name, data)
        if nxt == 0:
            return out
        if nxt % 8 or nxt < 16:
            raise SmbError(Status.INVALID_PARAMETER, "bad create context chain")
        pos += nxt


def pack_contexts(items: list[tuple[bytes, bytes]]) -> bytes:
    out = b""
    for i, (name, data) in enumerate(items):
        name_off = 16
        data_off = (name_off + len(name) + 7) // 8 * 8
        entry = struct.pack(
            "<IHHHHI", 0, name_off, len(name), 0, data_off if data else 0, len(data)
        )
        entry += name + b"\x00" * (data_off - name_off - len(name)) + data
        if i != len(items) - 1:
            entry += b"\x00" * ((-len(entry)) % 8)
            entry = struct.pack("<I", len(entry)) + entry[4:]
        out += entry
    return out


def map_generic(access: int) -> int:
    if access & GENERIC_READ:
        access |= FILE_GENERIC_READ
    if access & GENERIC_WRITE:
        access |= FILE_GENERIC_WRITE
    if access & GENERIC_EXECUTE:
        access |= FILE_GENERIC_EXECUTE
    if access & GENERIC_ALL:
        access |= FILE_ALL_ACCESS
    return access & ~(GENERIC_READ | GENERIC_WRITE | GENERIC_EXECUTE | GENERIC_ALL)


def share_conflict(existing: Open, access: int, share: int) -> bool:
    """MS-FSA 2.1.5.1.2.1: does an open with (access, share) conflict with `existing`?"""
    ea = existing.granted_access
    if not ea & DATA_ACCESS or not access & DATA_ACCESS:
        return False  # attribute-only opens take part in no sharing check
    es = existing.share_access
    if ea & (FILE_READ_DATA | FILE_EXECUTE) and not share & FILE_SHARE_READ:
        return True
    if ea & (FILE_WRITE_DATA | FILE_APPEND_DATA) and not share & FILE_SHARE_WRITE:
        return True
    if ea & DELETE and not share & FILE_SHARE_DELETE:
        return True
    if access & (FILE_READ_DATA | FILE_EXECUTE) and not es & FILE_SHARE_READ:
        return True
    if access & (FILE_WRITE_DATA | FILE_APPEND_DATA) and not es & FILE_SHARE_WRITE:
        return True
    return bool(access & DELETE and not es & FILE_SHARE_DELETE)


def _validate(req: Request, p: CreateParams, impersonation: int) -> None:
    if impersonation > 3:
        raise SmbError(Status.BAD_IMPERSONATION_LEVEL)
    if p.options & FILE_DIRECTORY_FILE and p.options & FILE_NON_DIRECTORY_FILE:
        raise SmbError(Status.INVALID_PARAMETER)
    if p.options & 0xFF000000 or p.options & 0x00100000:  # reserved / RESERVE_OPFILTER
        raise SmbError(Status.NOT_SUPPORTED if p.options & 0x00100000 else Status.INVALID_PARAMETER)
    if p.disposition > FILE_OVERWRITE_IF:
        raise SmbError(Status.INVALID_PARAMETER)
    if p.desired_access & ~VALID_ACCESS or p.desired_access & 0x0C000000:
        raise SmbError(Status.ACCESS_DENIED)
    if p.file_attributes & ~VALID_ATTRS:
        raise SmbError(Status.INVALID_PARAMETER)
    if p.oplock_level not in (
        OPLOCK_LEVEL_NONE,
        OPLOCK_LEVEL_II,
        OPLOCK_LEVEL_EXCLUSIVE,
        OPLOCK_LEVEL_BATCH,
        OPLOCK_LEVEL_LEASE,
    ):
        raise SmbError(Status.INVALID_PARAMETER)
    if p.options & FILE_DELETE_ON_CLOSE and not (p.desired_access & DELETE):
        raise SmbError(Status.INVALID_PARAMETER)
    if p.options & FILE_DIRECTORY_FILE and p.disposition in (
        FILE_SUPERSEDE,
        FILE_OVERWRITE,
        FILE_OVERWRITE_IF,
    ):
        raise SmbError(Status.INVALID_PARAMETER)


async def handle_create(req: Request) -> bytes:
    req.structure_size(57)
    tree = req.require_tree()
    session = req.require_session()
    (
        _,
        _secflags,
        oplock_level,
        impersonation,
        _cflags,
        _res,
        access,
        attrs,
        share_access,
        disposition,
        options,
        name_off,
        name_len,
        ctx_off,
        ctx_len,
    ) = req.body(_REQ)
    if name_len % 2:
        raise SmbError(Status.INVALID_PARAMETER)
    name = req.buffer(name_off, name_len).decode("utf-16-le", "surrogatepass") if name_len else ""
    p = CreateParams(
        name=name,
        desired_access=access,
        file_attributes=attrs,
        share_access=share_access & 0x7,
        disposition=disposition,
        options=options,
        oplock_level=oplock_level,
    )
    if share_access & ~0x7:
        raise SmbError(Status.INVALID_PARAMETER)
    _validate(req, p, impersonation)
    p.contexts = parse_contexts(req, ctx_off, ctx_len)
    if tree.share.is_ipc:
        op = await _open_pipe(req, tree, p)
    else:
        op, action = await open_file(req, tree, p)
        req.extra["create_action"] = action
    session.opens[op.volatile_id] = op
    req.server.state.add_open(op)
    req.compound.file_id = op.file_id
    if not tree.share.is_ipc:
        await _standard_contexts(req, p, op)
    for hook in req.server.create_hooks:  # after the oplock/lease grant (durability needs it)
        await hook(req, p, op)
    return _create_response(op, p, req.extra.get("create_action", FILE_OPENED))


def _create_response(op: Open, p: CreateParams, action: int) -> bytes:
    if op.pipe is not None:
        now = filetime_now()
        meta = FileMeta(now, now, now, now, 0, 4096, 0x80, False, 1, 0, 0)
    else:
        meta = stat_meta(op.host_path)
    ctx = pack_contexts(p.response_contexts)
    ctx_off = 64 + 88 if ctx else 0
    level = op.oplock_level if op.lease is None else OPLOCK_LEVEL_LEASE
    return (
        _RESP.pack(
            89,
            level,
            0,
            action,
            meta.creation,
            meta.access,
            meta.write,
            meta.change,
            meta.allocation,
            meta.size,
            meta.attributes,
            0,
            op.file_id,
            ctx_off,
            len(ctx),
        )
        + ctx
    )


async def _standard_contexts(req: Request, p: CreateParams, op: Open) -> None:
    ctxs = p.contexts
    if b"MxAc" in ctxs:
        p.response_contexts.append((b"MxAc", struct.pack("<II", 0, op.tree.maximal_access)))
    if b"QFid" in ctxs:
        st = os.stat(op.host_path)
        p.response_contexts.append(
            (b"QFid", struct.pack("<QQ", st.st_ino, st.st_dev) + b"\x00" * 16)
        )
    if b"AlSi" in ctxs and len(ctxs[b"AlSi"].data) >= 8 and op.fd >= 0:
        (size,) = struct.unpack_from("<Q", ctxs[b"AlSi"].data)
        try:
            if size > os.fstat(op.fd).st_size:
                with req.server.fence.mutation("allocate"):
                    os.posix_fallocate(op.fd, 0, size)
        except OSError:
            pass
    await oplock.grant_on_create(req, p, op)


async def _open_pipe(req: Request, tree: TreeConnect, p: CreateParams) -> Open:
    session = req.require_session()
    name = p.name.lstrip("\\").lower()
    from hasmb.rpc import pipes  # contract 4 (RPC engineer)

    ctx = pipes.PipeContext(
        netname=req.server.config.netname,
        shares=[
            pipes.PipeShareInfo(
                name=s.name,
                type=0x80000003 if s.is_ipc else 0,  # STYPE_IPC | STYPE_SPECIAL, STYPE_DISKTREE
                comment=s.config.comment,
                path="" if s.is_ipc else "C:\\" + s.name,
            )
            for s in req.server.shares.values()
        ],
        user=session.user,
        session_key=session.session_key,
        users=req.server.users,
    )
    pipe = pipes.open_pipe(name, ctx)
    if pipe is None:
        raise SmbError(Status.OBJECT_NAME_NOT_FOUND)
    pid, vid = req.server.state.new_file_ids()
    return Open(
        persistent_id=pid,
        volatile_id=vid,
        session=session,
        tree=tree,
        smb_path=name,
        host_path="",
        is_directory=False,
        granted_access=map_generic(p.desired_access),
        share_access=p.share_access,
        create_options=p.options,
        pipe=pipe,
    )


def _exists(host: str) -> bool:
    return os.path.exists(host)


def _parent_exists(host: str) -> bool:
    return os.path.isdir(os.path.dirname(host))


async def open_file(req: Request, tree: TreeConnect, p: CreateParams) -> tuple[Open, int]:
    """MS-FSA 2.1.5.1 reduced to a POSIX filesystem."""
    session = req.require_session()
    server = req.server
    share = tree.share
    if p.options & FILE_OPEN_BY_FILE_ID:
        raise SmbError(Status.NOT_SUPPORTED)
    parts = paths.split_smb_path(p.name)
    host = paths.resolve(share.root, parts)
    access = map_generic(p.desired_access)
    if access & MAXIMUM_ALLOWED:
        access = (access & ~MAXIMUM_ALLOWED) | tree.maximal_access
    if access & ~tree.maximal_access & 0x1F01FF:
        raise SmbError(Status.ACCESS_DENIED)
    if access & ACCESS_SYSTEM_SECURITY:
        raise SmbError(Status.PRIVILEGE_NOT_HELD)
    try:
        st: os.stat_result | None = os.stat(host, follow_symlinks=False)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        raise SmbError(Status.OBJECT_PATH_NOT_FOUND) from None
    if st is not None and stat.S_ISLNK(st.st_mode):
        raise SmbError(Status.ACCESS_DENIED, "symlink")
    if st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        raise SmbError(Status.ACCESS_DENIED, "special file")
    read_only = share.config.read_only
    d = p.disposition
    action = FILE_OPENED
    is_root = not parts
    if st is None:
        if d in (FILE_OPEN, FILE_OVERWRITE):
            if not _parent_exists(host):
                raise SmbError(Status.OBJECT_PATH_NOT_FOUND)
            raise SmbError(Status.OBJECT_NAME_NOT_FOUND)
        if not _parent_exists(host):
            raise SmbError(Status.OBJECT_PATH_NOT_FOUND)
        if read_only:
            raise SmbError(Status.ACCESS_DENIED)
        if p.file_attributes & ATTR_READONLY and p.options & FILE_DELETE_ON_CLOSE:
            raise SmbError(Status.CANNOT_DELETE)
        is_dir = bool(p.options & FILE_DIRECTORY_FILE)
        try:
            with server.fence.mutation("create"):
                if is_dir:
                    os.mkdir(host, 0o777)
                    fd = -1
                else:
                    fd = os.open(host, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
        except OSError as exc:
            raise SmbError(errno_to_status(exc)) from exc
        with server.fence.mutation("create attributes"):
            _init_new(host, p.file_attributes, is_dir)
        action = FILE_CREATED
        # the creator gets whatever it asked for on a new file (it owns it)
    else:
        is_dir = stat.S_ISDIR(st.st_mode)
        if d == FILE_CREATE:
            raise SmbError(Status.OBJECT_NAME_COLLISION)
        if is_dir and p.options & FILE_NON_DIRECTORY_FILE:
            raise SmbError(Status.FILE_IS_A_DIRECTORY)
        if not is_dir and p.options & FILE_DIRECTORY_FILE:
            raise SmbError(Status.NOT_A_DIRECTORY)
        if is_dir and d in (FILE_SUPERSEDE, FILE_OVERWRITE, FILE_OVERWRITE_IF):
            raise SmbError(Status.INVALID_PARAMETER)
        meta = stat_meta(host, st)
        if meta.attributes & ATTR_READONLY and not is_dir:
            if access & (FILE_WRITE_DATA | FILE_APPEND_DATA) or d in (
                FILE_OVERWRITE,
                FILE_OVERWRITE_IF,
                FILE_SUPERSEDE,
            ):
                raise SmbError(Status.ACCESS_DENIED)
            if p.options & FILE_DELETE_ON_CLOSE:
                raise SmbError(Status.CANNOT_DELETE)
        if is_root and p.options & FILE_DELETE_ON_CLOSE:
            raise SmbError(Status.CANNOT_DELETE)
        fd = -1
        if d in (FILE_OVERWRITE, FILE_OVERWRITE_IF, FILE_SUPERSEDE):
            if read_only:
                raise SmbError(Status.ACCESS_DENIED)
            action = FILE_SUPERSEDED if d == FILE_SUPERSEDE else FILE_OVERWRITTEN
    if is_dir and access & (FILE_ADD_FILE | FILE_ADD_SUBDIRECTORY):
        pass  # on directories these are the "add entry" rights, not data writes
    if read_only and access & (FILE_WRITE_DATA | FILE_APPEND_DATA | DELETE) and not is_dir:
        raise SmbError(Status.ACCESS_DENIED)
    st2 = os.stat(host)
    key = (st2.st_dev, st2.st_ino)
    node = server.state.node_for(key, host)
    if node.delete_pending and action != FILE_CREATED:
        _maybe_drop_node(server, node)
        raise SmbError(Status.DELETE_PENDING)
    await oplock.break_for_open(req, node, access, p)
    if node.opens or server.state.files.get(key) is not node:
        # the break may have let holders close (and delete) the file meanwhile
        if not _exists(host):
            raise SmbError(Status.OBJECT_NAME_NOT_FOUND)
        node = server.state.node_for(key, host)
    if node.delete_pending and action != FILE_CREATED:
        _maybe_drop_node(server, node)
        raise SmbError(Status.DELETE_PENDING)
    for other in node.opens:
        if share_conflict(other, access, p.share_access):
            _maybe_drop_node(server, node)
            if fd >= 0 and action == FILE_CREATED:
                os.close(fd)
            raise SmbError(Status.SHARING_VIOLATION)
    if not is_dir and fd < 0:
        flags = os.O_NOFOLLOW | (
            os.O_RDWR
            if access & (FILE_WRITE_DATA | FILE_APPEND_DATA) or action != FILE_OPENED
            else os.O_RDONLY
        )
        try:
            fd = os.open(host, flags)
        except OSError as exc:
            _maybe_drop_node(server, node)
            raise SmbError(errno_to_status(exc)) from exc
        if action in (FILE_OVERWRITTEN, FILE_SUPERSEDED):
            try:
                with server.fence.mutation("overwrite"):
                    os.ftruncate(fd, 0)
                    # overwrite replaces the attributes; the data changed: ARCHIVE is set
                    new_attrs = (p.file_attributes & ATTR_SETTABLE) | 0x20
                    set_xattr(host, XATTR_ATTRS, new_attrs.to_bytes(4, "little"))
            except Fenced:
                os.close(fd)
                _maybe_drop_node(server, node)
                raise
    pid, vid = server.state.new_file_ids()
    op = Open(
        persistent_id=pid,
        volatile_id=vid,
        session=session,
        tree=tree,
        smb_path=paths.smb_name(parts),
        host_path=host,
        is_directory=is_dir,
        granted_access=access,
        share_access=p.share_access,
        create_options=p.options,
        fd=fd,
        node=node,
        delete_on_close=bool(p.options & FILE_DELETE_ON_CLOSE),
        client_guid=req.conn.client_guid,
    )
    if action == FILE_CREATED:
        from hasmb.smb import notify

        notify.report(server, op, 1)
    return op, action


def _init_new(host: str, attrs: int, is_dir: bool) -> None:
    set_xattr(host, XATTR_BTIME, filetime_now().to_bytes(8, "little"))
    attrs &= ATTR_SETTABLE  # NORMAL is the absence of others; sparse only via FSCTL
    if attrs & ~ATTR_DIRECTORY:
        set_xattr(
            host, XATTR_ATTRS, (attrs & ~ATTR_DIRECTORY | 0x20 * (not is_dir)).to_bytes(4, "little")
        )


def _maybe_drop_node(server: SmbServer, node: object) -> None:
    from hasmb.smb.state import FileNode

    assert isinstance(node, FileNode)
    if not node.opens and server.state.files.get(node.key) is node:
        del server.state.files[node.key]


async def close_open(
    server: SmbServer, op: Open, notify_status: int = Status.NOTIFY_CLEANUP
) -> None:
    """Release everything an open holds; delete the file if it is the last open of a
    file marked for deletion (MS-FSA 2.1.5.4)."""
    if op.closed:
        return
    op.closed = True
    if op.session is not None:
        op.session.opens.pop(op.volatile_id, None)
    from hasmb.smb import notify

    notify.stop(server, op, notify_status)
    await oplock.release(server, op)
    if op.pipe is not None:
        try:
            op.pipe.close()
        except Exception:
            log.exception("pipe close failed")
    node = op.node
    op.release_fd()  # deferred to the end of in-flight I/O if there is any
    if node is not None and op.delete_on_close:
        node.delete_pending = True
        if op.is_directory:
            notify.delete_pending(server, node)
    server.state.remove_open(op)
    await server.ca.on_closed(op)  # a persistent open's record goes before the reply
    if node is not None:
        node.signal_locks()  # blocked LOCKs of this open end; others re-check
    if node is not None and node.delete_pending and not node.opens:
        try:
            with server.fence.mutation("delete on close"):
                if op.is_directory:
                    os.rmdir(node.path)
                else:
                    os.unlink(node.path)
            notify.report(server, op, notify.REMOVED)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                log.info("delete on close of %s failed: %s", node.path, exc)
        except Fenced as exc:
            # the new owner applies it if the open is persistent; otherwise it is lost
            # with the connection, as when a server dies before the close
            log.warning("delete on close of %s not applied: %s", node.path, exc)


async def handle_close(req: Request) -> bytes:
    req.structure_size(24)
    (_, flags, _r, file_id) = req.body(_CLOSE_REQ)
    op = req.lookup_open(file_id)
    meta = None
    if flags & CLOSE_FLAG_POSTQUERY_ATTRIB and op.pipe is None:
        try:
            meta = stat_meta(op.host_path)
        except OSError:
            meta = None
    await close_open(req.server, op)
    if meta is None:
        return _CLOSE_RESP.pack(60, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    return _CLOSE_RESP.pack(
        60,
        CLOSE_FLAG_POSTQUERY_ATTRIB,
        0,
        meta.creation,
        meta.access,
        meta.write,
        meta.change,
        meta.allocation,
        meta.size,
        meta.attributes,
    )


__all__ = ["FILE_READ_ATTRIBUTES", "READ_ONLY_SHARE_ACCESS", "SYNCHRONIZE", "close_open"]
