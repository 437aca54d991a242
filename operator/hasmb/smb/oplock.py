"""Oplocks and leases: grants on CREATE, breaks on conflicting opens and writes, and the
OPLOCK_BREAK acknowledgment command (MS-SMB2 3.3.5.9.8, 3.3.5.9.11, 3.3.4.6, 3.3.4.7,
3.3.5.22; MS-FSA 2.1.5.17 for when a break is due).

Model: an Open holds either a classic oplock level (`Open.oplock_level`) or a
`Lease` shared by every open with the same (ClientGuid, LeaseKey). A new open of
a file first breaks what others hold (`break_for_open`), waiting (async) for the
acknowledgments that are required, then is granted what is still compatible.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import TYPE_CHECKING, Any

from hasmb.smb.constants import (
    DIALECT_210,
    DIALECT_300,
    FILE_OVERWRITE,
    FILE_OVERWRITE_IF,
    FILE_SUPERSEDE,
    FLAGS_SERVER_TO_REDIR,
    LEASE_FLAG_BREAK_IN_PROGRESS,
    LEASE_FLAG_PARENT_LEASE_KEY_SET,
    LEASE_HANDLE,
    LEASE_READ,
    LEASE_WRITE,
    OPLOCK_LEVEL_BATCH,
    OPLOCK_LEVEL_EXCLUSIVE,
    OPLOCK_LEVEL_II,
    OPLOCK_LEVEL_LEASE,
    OPLOCK_LEVEL_NONE,
    Command,
    Status,
)
from hasmb.smb.errors import SmbError
from hasmb.smb.header import Header
from hasmb.smb.request import Registry, Request
from hasmb.smb.state import FileNode, Lease, Open

if TYPE_CHECKING:
    from hasmb.smb.server import SmbServer

log = logging.getLogger("hasmb.smb")

DATA_ACCESS = 0x1 | 0x2 | 0x4 | 0x20 | 0x10000  # read, write, append, execute, delete
BREAK_TIMEOUT = 35.0  # seconds, as Windows (MS-SMB2 3.3.2.1 oplock break timer)
UNSOLICITED_MID = 0xFFFFFFFFFFFFFFFF
_OPLOCK_BREAK = struct.Struct("<HBBI16s")
_LEASE_ACK = struct.Struct("<HHI16sIQ")
_LEASE_BREAK = struct.Struct("<HHI16sIIIII")


def register(reg: Registry) -> None:
    reg.add(Command.OPLOCK_BREAK, handle_oplock_break, needs_tree=False)


# ---------------------------------------------------------------- lease request parsing
def parse_lease_request(data: bytes) -> tuple[bytes, int, int, bytes, int, int]:
    """RqLs -> (key, state, flags, parent key, epoch, version)."""
    if len(data) >= 52:
        key, state, flags, _dur, parent, epoch = struct.unpack_from("<16sIIQ16sH", data)
        return key, state, flags, parent, epoch, 2
    if len(data) >= 32:
        key, state, flags, _dur = struct.unpack_from("<16sIIQ", data)
        return key, state, flags, b"", 0, 1
    raise SmbError(Status.INVALID_PARAMETER, "short lease context")


def lease_response(lease: Lease) -> bytes:
    flags = LEASE_FLAG_BREAK_IN_PROGRESS if lease.breaking else 0
    if lease.version == 2:
        if lease.parent_key:
            flags |= LEASE_FLAG_PARENT_LEASE_KEY_SET
        return struct.pack(
            "<16sIIQ16sHH",
            lease.key,
            lease.state,
            flags,
            0,
            lease.parent_key or b"\x00" * 16,
            lease.epoch,
            0,
        )
    return struct.pack("<16sIIQ", lease.key, lease.state, flags, 0)


def _valid_state(state: int) -> int:
    state &= LEASE_READ | LEASE_HANDLE | LEASE_WRITE
    return state if state & LEASE_READ else 0  # H or W without R is not a lease


def _lease_of(req: Request, p: Any) -> tuple[bytes, int, int, bytes, int, int] | None:
    if p.oplock_level != OPLOCK_LEVEL_LEASE or req.conn.dialect < DIALECT_210:
        return None
    ctx = p.contexts.get(b"RqLs")
    if ctx is None:
        return None
    parsed = parse_lease_request(ctx.data)
    if req.conn.dialect < DIALECT_300 and parsed[5] == 2:
        # lease v2 needs SMB 3.x; 2.1 clients get v1 semantics
        parsed = (parsed[0], parsed[1], parsed[2], b"", 0, 1)
    return parsed


# ---------------------------------------------------------------- grants
async def grant_on_create(req: Request, p: Any, op: Open) -> None:
    node = op.node
    if node is None:
        return
    others = [o for o in node.opens if o is not op]
    lease_req = _lease_of(req, p)
    if lease_req is not None:
        key, want, _flags, parent, epoch, version = lease_req
        table = req.server.state.leases
        lkey = (req.conn.client_guid, key)
        lease = table.get(lkey)
        if lease is not None and lease.file_key != node.key:
            raise SmbError(Status.INVALID_PARAMETER, "lease key reused for another file")
        fresh = lease is None
        if lease is None:
            lease = Lease(
                client_guid=req.conn.client_guid,
                key=key,
                file_key=node.key,
                version=version,
                parent_key=parent
                if version == 2 and _flags & LEASE_FLAG_PARENT_LEASE_KEY_SET
                else b"",
                epoch=epoch,
            )
            table[lkey] = lease
        lease.opens.append(op)
        op.lease = lease
        op.oplock_level = OPLOCK_LEVEL_LEASE
        want = 0 if op.is_directory else _valid_state(want)
        # opens without data access ("stat opens") do not stand in the way of caching
        foreign = [o for o in others if o.lease is not lease and o.granted_access & DATA_ACCESS]
        allowed = LEASE_READ | LEASE_HANDLE | LEASE_WRITE
        if foreign:
            allowed &= ~LEASE_WRITE
            if any(o.oplock_level in (OPLOCK_LEVEL_EXCLUSIVE, OPLOCK_LEVEL_BATCH) for o in foreign):
                allowed = 0
        if not lease.breaking:
            if fresh:
                # a new lease gets the part of the request that can be shared
                new_state = want & allowed
                if new_state and not new_state & LEASE_READ:
                    new_state = 0
            elif (
                want & lease.state == lease.state and want != lease.state and not (want & ~allowed)
            ):
                # an existing lease changes only to a strict superset that fits entirely
                new_state = want
            else:
                new_state = lease.state
            if new_state != lease.state:
                lease.state = new_state
                lease.epoch += 1
        p.response_contexts.append((b"RqLs", lease_response(lease)))
        return
    level = p.oplock_level if p.oplock_level != OPLOCK_LEVEL_LEASE else OPLOCK_LEVEL_NONE
    if op.is_directory or level == OPLOCK_LEVEL_NONE:
        op.oplock_level = OPLOCK_LEVEL_NONE
        return
    strong = any(
        o.oplock_level in (OPLOCK_LEVEL_EXCLUSIVE, OPLOCK_LEVEL_BATCH)
        or (o.lease is not None and o.lease.state & LEASE_WRITE)
        for o in others
    )
    if strong:
        op.oplock_level = OPLOCK_LEVEL_NONE
    elif others:
        op.oplock_level = OPLOCK_LEVEL_II
    else:
        op.oplock_level = level


# ---------------------------------------------------------------- breaks
def _send(server: SmbServer, op: Open, body: bytes) -> None:
    session = op.session
    if session is None or session.expired:
        return
    h = Header(
        command=Command.OPLOCK_BREAK,
        message_id=UNSOLICITED_MID,
        flags=FLAGS_SERVER_TO_REDIR,
        session_id=0,
    )
    server.send_unsolicited(session.connection, session, bytearray(h.pack() + body))


def send_oplock_break(server: SmbServer, op: Open, level: int) -> None:
    _send(server, op, _OPLOCK_BREAK.pack(24, level, 0, 0, op.file_id))


def send_lease_break(server: SmbServer, lease: Lease, new_state: int, ack: bool) -> None:
    holder = next((o for o in lease.opens if o.session is not None and not o.closed), None)
    if holder is None:
        return
    body = _LEASE_BREAK.pack(
        44,
        lease.epoch if lease.version == 2 else 0,
        1 if ack else 0,
        lease.key,
        lease.state,
        new_state,
        0,
        0,
        0,
    )
    _send(server, holder, body)


def _event(op: Open) -> asyncio.Event:
    if op.break_event is None:
        op.break_event = asyncio.Event()
    return op.break_event


def start_lease_break(server: SmbServer, lease: Lease, new_state: int) -> bool:
    """Break `lease` to `new_state`; returns True when an acknowledgment is awaited."""
    if lease.breaking:
        lease.breaking_to &= new_state
        return True
    if new_state == lease.state:
        return False
    ack = bool(lease.state & (LEASE_WRITE | LEASE_HANDLE))
    if lease.version == 2:
        lease.epoch += 1
    send_lease_break(server, lease, new_state, ack)
    if ack:
        lease.breaking = True
        lease.breaking_to = new_state
        lease.break_notified = new_state
        lease.break_done = asyncio.Event()
    else:
        lease.state = new_state
    return ack


def _next_step(state: int, target: int) -> int:
    """Further breaks while one was pending go one level at a time: W, then H, then R."""
    for bit in (LEASE_WRITE, LEASE_HANDLE):
        if state & bit and not target & bit:
            return state & ~bit
    return state & target


async def break_for_open(req: Request, node: FileNode, access: int, p: Any) -> None:
    """Break what other opens hold before a new open of the same file proceeds."""
    from hasmb.smb.create import share_conflict

    if not node.opens:
        return
    server = req.server
    overwrite = p.disposition in (FILE_OVERWRITE, FILE_OVERWRITE_IF, FILE_SUPERSEDE)
    if not access & DATA_ACCESS and not overwrite:
        return  # attribute-only ("stat") opens break nothing (MS-FSA 2.1.5.1.2)
    lease_req = _lease_of(req, p)
    my_key = (req.conn.client_guid, lease_req[0]) if lease_req is not None else None
    waits: list[asyncio.Event] = []
    seen: set[int] = set()
    for other in list(node.opens):
        lease = other.lease
        if lease is not None:
            if id(lease) in seen or (lease.client_guid, lease.key) == my_key:
                continue
            seen.add(id(lease))
            target = lease.breaking_to if lease.breaking else lease.state
            target &= ~LEASE_WRITE
            conflict = any(share_conflict(o, access, p.share_access) for o in lease.opens)
            if overwrite:
                target = 0
            elif conflict:
                target &= ~LEASE_HANDLE
            current = lease.breaking_to if lease.breaking else lease.state
            if target != current and start_lease_break(server, lease, target):
                waits.append(lease.break_done)
            elif lease.breaking:
                waits.append(lease.break_done)
            continue
        if other.oplock_level in (OPLOCK_LEVEL_EXCLUSIVE, OPLOCK_LEVEL_BATCH):
            if other.oplock_level == OPLOCK_LEVEL_EXCLUSIVE and share_conflict(
                other, access, p.share_access
            ):
                continue  # the open fails on share modes first; only batch is broken for it
            if other.oplock_breaking:
                waits.append(_event(other))
                continue
            target = OPLOCK_LEVEL_NONE if overwrite else OPLOCK_LEVEL_II
            other.oplock_breaking = True
            other.oplock_break_to = target
            ev = _event(other)
            ev.clear()
            send_oplock_break(server, other, target)
            waits.append(ev)
        elif other.oplock_level == OPLOCK_LEVEL_II and overwrite:
            other.oplock_level = OPLOCK_LEVEL_NONE
            send_oplock_break(server, other, OPLOCK_LEVEL_NONE)
        elif other.oplock_breaking:
            waits.append(_event(other))
    if not waits:
        return
    await req.go_async()
    try:
        await req.wait_cancellable(
            asyncio.wait_for(asyncio.gather(*(w.wait() for w in waits)), BREAK_TIMEOUT)
        )
    except TimeoutError:
        _expire_breaks(node)


def _expire_breaks(node: FileNode) -> None:
    """No acknowledgment in time: the server completes the break itself (3.3.2.1)."""
    for o in node.opens:
        if o.oplock_breaking:
            o.oplock_breaking = False
            o.oplock_level = o.oplock_break_to
            _event(o).set()
        if o.lease is not None and o.lease.breaking:
            o.lease.state = o.lease.breaking_to
            o.lease.breaking = False
            o.lease.break_done.set()


def on_write(server: SmbServer, op: Open) -> None:
    """A write (or size change) invalidates the caches of other opens: level II and
    exclusive/batch oplocks go to none, leases lose R (MS-FSA 2.1.5.17)."""
    node = op.node
    if node is None or len(node.opens) < 2:
        return
    for other in node.opens:
        if other is op:
            continue
        if other.lease is None and other.oplock_level in (
            OPLOCK_LEVEL_EXCLUSIVE,
            OPLOCK_LEVEL_BATCH,
        ):
            if not other.oplock_breaking:
                other.oplock_breaking = True
                other.oplock_break_to = OPLOCK_LEVEL_NONE
                _event(other).clear()
                send_oplock_break(server, other, OPLOCK_LEVEL_NONE)
            continue
        if other.lease is not None:
            if other.lease is op.lease:
                continue
            lease = other.lease
            if lease.state & LEASE_READ and not lease.breaking:
                start_lease_break(server, lease, 0)
        elif other.oplock_level == OPLOCK_LEVEL_II:
            other.oplock_level = OPLOCK_LEVEL_NONE
            send_oplock_break(server, other, OPLOCK_LEVEL_NONE)


def on_lock(server: SmbServer, op: Open) -> None:
    """Byte-range locks invalidate level II caching of every open of the file, the
    locker's own included, once the file has several opens (MS-FSA 2.1.5.7)."""
    node = op.node
    if node is None or len(node.opens) < 2:
        return
    on_write(server, op)
    if op.lease is None and op.oplock_level == OPLOCK_LEVEL_II:
        op.oplock_level = OPLOCK_LEVEL_NONE
        send_oplock_break(server, op, OPLOCK_LEVEL_NONE)


async def release(server: SmbServer, op: Open) -> None:
    if op.oplock_breaking:
        op.oplock_breaking = False
        _event(op).set()
    lease = op.lease
    if lease is not None:
        if op in lease.opens:
            lease.opens.remove(op)
        if not lease.opens:
            lease.breaking = False
            lease.break_done.set()
            key = (lease.client_guid, lease.key)
            if server.state.leases.get(key) is lease:
                del server.state.leases[key]
    op.oplock_level = OPLOCK_LEVEL_NONE


# ---------------------------------------------------------------- acknowledgments
async def handle_oplock_break(req: Request) -> bytes:
    if len(req.msg) < 66:
        raise SmbError(Status.INVALID_PARAMETER)
    size = int.from_bytes(req.msg[64:66], "little")
    if size == 24:
        return await _oplock_ack(req)
    if size == 36:
        return await _lease_ack(req)
    raise SmbError(Status.INVALID_PARAMETER)


async def _oplock_ack(req: Request) -> bytes:
    (_, level, _r, _r2, file_id) = req.body(_OPLOCK_BREAK)
    op = req.lookup_open(file_id)
    if not op.oplock_breaking:
        raise SmbError(Status.INVALID_OPLOCK_PROTOCOL)
    target = op.oplock_break_to
    op.oplock_breaking = False
    _event(op).set()
    if level not in (OPLOCK_LEVEL_NONE, OPLOCK_LEVEL_II) or (
        level == OPLOCK_LEVEL_II and target == OPLOCK_LEVEL_NONE
    ):
        op.oplock_level = OPLOCK_LEVEL_NONE
        raise SmbError(Status.INVALID_OPLOCK_PROTOCOL)
    op.oplock_level = level
    return _OPLOCK_BREAK.pack(24, level, 0, 0, op.file_id)


async def _lease_ack(req: Request) -> bytes:
    (_, _r, _flags, key, state, _dur) = req.body(_LEASE_ACK)
    lease = req.server.state.leases.get((req.conn.client_guid, key))
    if lease is None:
        raise SmbError(Status.OBJECT_NAME_NOT_FOUND)
    if not lease.breaking:
        raise SmbError(Status.UNSUCCESSFUL)
    if state & ~lease.break_notified:
        raise SmbError(Status.REQUEST_NOT_ACCEPTED)  # the lease stays in its break
    lease.state = state
    target = lease.breaking_to
    if state & ~target:
        nxt = _next_step(state, target)
        ack_needed = bool(state & (LEASE_WRITE | LEASE_HANDLE))
        send_lease_break(req.server, lease, nxt, ack_needed)
        if ack_needed:
            lease.break_notified = nxt
            return _LEASE_ACK.pack(36, 0, 0, key, state, 0)
        lease.state = nxt
    lease.breaking = False
    lease.break_done.set()
    return _LEASE_ACK.pack(36, 0, 0, key, state, 0)
