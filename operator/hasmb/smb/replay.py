"""ChannelSequence and the replay flag (MS-SMB2 3.3.5.2.10), and CREATE replay by
CreateGuid (3.3.5.9.10).

A client that lost a connection may resend a request on another channel or
after a reconnect, with SMB2_FLAGS_REPLAY_OPERATION set and a ChannelSequence
it bumps on each failover. The server counts the requests outstanding under
the open's current sequence; a request from an older sequence, or a replay
while requests of an older one are still running, fails
STATUS_FILE_NOT_AVAILABLE for the state-changing commands, so a stale write
can never land after a newer one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hasmb.smb.constants import DIALECT_300, FLAGS_REPLAY_OPERATION, Command, Status
from hasmb.smb.errors import SmbError
from hasmb.smb.request import RELATED_FILE_ID, Registry, Request
from hasmb.smb.state import Open

if TYPE_CHECKING:
    from hasmb.smb.state import GlobalState

Handler = Callable[[Request], Awaitable[bytes]]

# where the FileId sits in the request body of the commands 3.3.5.2.10 guards
FILE_ID_OFFSET: dict[int, int] = {
    Command.WRITE: 16,
    Command.SET_INFO: 16,
    Command.IOCTL: 8,
    Command.LOCK: 8,
}


@dataclass
class SequenceState:
    """Per open: OutstandingPreRequestCount, which `Open` does not carry."""

    pre_requests: dict[int, int] = field(default_factory=dict)  # persistent id -> count


def newer(seq: int, current: int) -> bool:
    """16-bit serial comparison: `seq` is ahead of `current` (3.3.5.2.10)."""
    return seq != current and ((seq - current) & 0xFFFF) <= 0x7FFF


def _open_of(state: GlobalState, req: Request, command: int) -> Open | None:
    off = FILE_ID_OFFSET[command]
    fid = req.msg[64 + off : 64 + off + 16]
    if len(fid) != 16:
        return None
    if fid == RELATED_FILE_ID:
        fid = req.compound.file_id
        if len(fid) != 16:
            return None
    op = state.opens.get(int.from_bytes(fid[:8], "little"))
    if op is None or op.volatile_id != int.from_bytes(fid[8:], "little") or op.closed:
        return None
    return op


def begin(seqs: SequenceState, op: Open, req: Request) -> bool:
    """Account for one request on `op`; returns whether it counts as current.

    Raises STATUS_FILE_NOT_AVAILABLE for a stale or unsafe replay.
    """
    seq = req.header.channel_sequence & 0xFFFF
    pre = seqs.pre_requests.get(op.persistent_id, 0)
    if not req.header.flags & FLAGS_REPLAY_OPERATION:
        if seq == op.channel_sequence:
            op.outstanding_requests += 1
            return True
        if newer(seq, op.channel_sequence):
            seqs.pre_requests[op.persistent_id] = pre + op.outstanding_requests
            op.channel_sequence = seq
            op.outstanding_requests = 1
            return True
        raise SmbError(Status.FILE_NOT_AVAILABLE, "stale channel sequence")
    if seq == op.channel_sequence and pre == 0:
        op.outstanding_requests += 1
        return True
    if newer(seq, op.channel_sequence):
        # a replay after a failover that bumped the sequence (smb2.replay.channel-sequence)
        seqs.pre_requests[op.persistent_id] = pre + op.outstanding_requests
        op.channel_sequence = seq
        op.outstanding_requests = 1
        return True
    raise SmbError(Status.FILE_NOT_AVAILABLE, "replay while older requests are outstanding")


def end(seqs: SequenceState, op: Open, current: bool) -> None:
    if current:
        op.outstanding_requests = max(0, op.outstanding_requests - 1)
        return
    left = seqs.pre_requests.get(op.persistent_id, 0) - 1
    if left > 0:
        seqs.pre_requests[op.persistent_id] = left
    else:
        seqs.pre_requests.pop(op.persistent_id, None)


def guard(state: GlobalState, seqs: SequenceState, command: int, inner: Handler) -> Handler:
    """Wrap a command handler with the channel-sequence check."""

    async def handler(req: Request) -> bytes:
        if req.conn.dialect < DIALECT_300:
            return await inner(req)
        op = _open_of(state, req, command)
        if op is None:
            return await inner(req)
        current = begin(seqs, op, req)
        seq = op.channel_sequence
        try:
            return await inner(req)
        finally:
            # a newer sequence may have arrived meanwhile: then this one counts as "pre"
            end(seqs, op, current and op.channel_sequence == seq)

    return handler


def install(registry: Registry, state: GlobalState, seqs: SequenceState) -> None:
    for command in FILE_ID_OFFSET:
        spec = registry.commands.get(command)
        if spec is not None:
            spec.handler = guard(state, seqs, command, spec.handler)
