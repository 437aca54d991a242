"""Pure logic of durable-handle contexts and ChannelSequence accounting."""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

import pytest

from hasmb.smb import durable, replay
from hasmb.smb.constants import (
    FLAGS_REPLAY_OPERATION,
    LEASE_HANDLE,
    LEASE_READ,
    OPLOCK_LEVEL_BATCH,
    OPLOCK_LEVEL_II,
    Status,
)
from hasmb.smb.errors import SmbError


@dataclass
class Ctx:
    data: bytes


GUID = uuid.uuid4().bytes
DH2Q = Ctx(struct.pack("<IIQ16s", 5000, durable.DHANDLE_FLAG_PERSISTENT, 0, GUID))
DH2C = Ctx(struct.pack("<16s16sI", b"\x01" * 16, GUID, 0))
DHNQ = Ctx(b"\x00" * 16)
DHNC = Ctx(b"\x02" * 16)


def test_v2_request_is_parsed() -> None:
    d = durable.parse_request({durable.DH2Q: DH2Q}, 0x311)
    assert d.kind == "v2" and d.persistent and d.timeout_ms == 5000 and d.create_guid == GUID


@pytest.mark.parametrize(
    "names",
    [
        (durable.DH2Q, durable.DHNQ),
        (durable.DH2Q, durable.DHNC),
        (durable.DH2C, durable.DHNQ),
        (durable.DH2C, durable.DHNC),
        (durable.DH2C, durable.DH2Q),
    ],
)
def test_forbidden_combinations(names: tuple[bytes, ...]) -> None:
    ctxs = {durable.DH2Q: DH2Q, durable.DH2C: DH2C, durable.DHNQ: DHNQ, durable.DHNC: DHNC}
    with pytest.raises(SmbError) as err:
        durable.parse_request({n: ctxs[n] for n in names}, 0x302)
    assert err.value.status == Status.INVALID_PARAMETER


def test_v1_reconnect_wins_over_v1_request_and_v2_is_ignored_below_smb3() -> None:
    assert durable.parse_request({durable.DHNQ: DHNQ, durable.DHNC: DHNC}, 0x210).kind == (
        "reconnect_v1"
    )
    assert durable.parse_request({durable.DH2Q: DH2Q}, 0x210).kind == "none"


def grant(d: durable.DurableRequest, **kw: object) -> durable.Grant:
    args: dict[str, object] = dict(
        is_directory=False,
        oplock_level=0,
        lease_state=None,
        share_ca=True,
        persistent_capable=True,
    )
    args.update(kw)
    return durable.decide(d, **args)  # type: ignore[arg-type]


def test_persistent_needs_ca_share_and_capability_but_no_oplock() -> None:
    d = durable.parse_request({durable.DH2Q: DH2Q}, 0x311)
    g = grant(d)
    assert g.durable and g.persistent and g.timeout_ms == 5000
    assert not grant(d, share_ca=False).durable  # no oplock: not even durable
    assert not grant(d, persistent_capable=False).persistent
    assert not grant(d, is_directory=True).durable


def test_durable_needs_batch_or_handle_lease() -> None:
    d = durable.DurableRequest("v2", timeout_ms=0, create_guid=GUID)
    assert grant(d, oplock_level=OPLOCK_LEVEL_BATCH).durable
    assert not grant(d, oplock_level=OPLOCK_LEVEL_II).durable
    assert grant(d, lease_state=LEASE_READ | LEASE_HANDLE).durable
    assert not grant(d, lease_state=LEASE_READ).durable
    assert grant(d, oplock_level=OPLOCK_LEVEL_BATCH).timeout_ms == durable.DEFAULT_TIMEOUT_MS


def test_timeout_is_capped() -> None:
    d = durable.DurableRequest("v2", timeout_ms=0xFFFFFFFF, persistent=True, create_guid=GUID)
    g = grant(d)
    assert g.timeout_ms == g.response_timeout_ms == durable.MAX_TIMEOUT_MS


@dataclass
class FakeHeader:
    channel_sequence: int
    flags: int = 0


@dataclass
class FakeReq:
    header: FakeHeader


@dataclass
class FakeOpen:
    persistent_id: int = 1
    channel_sequence: int = 0
    outstanding_requests: int = 0


def begin(seqs: replay.SequenceState, op: FakeOpen, seq: int, replayed: bool = False) -> bool:
    flags = FLAGS_REPLAY_OPERATION if replayed else 0
    return replay.begin(seqs, op, FakeReq(FakeHeader(seq, flags)))  # type: ignore[arg-type]


def test_channel_sequence_window() -> None:
    seqs, op = replay.SequenceState(), FakeOpen()
    assert begin(seqs, op, 0)
    assert begin(seqs, op, 0x7FFF)  # newer: moves the sequence
    assert op.channel_sequence == 0x7FFF and seqs.pre_requests[1] == 1
    for stale in (0x7FFE, 0, 0xFFFF):
        with pytest.raises(SmbError) as err:
            begin(seqs, op, stale)
        assert err.value.status == Status.FILE_NOT_AVAILABLE


def test_replay_waits_for_older_requests() -> None:
    seqs, op = replay.SequenceState(), FakeOpen()
    begin(seqs, op, 0)
    begin(seqs, op, 1)  # the request of sequence 0 is now "pre"
    with pytest.raises(SmbError):
        begin(seqs, op, 1, replayed=True)
    # the old request finished (FakeOpen has the fields of Open that end() uses, as in begin())
    replay.end(seqs, op, False)  # type: ignore[arg-type]
    assert begin(seqs, op, 1, replayed=True)
    assert replay.newer(0, 0xFFFF) and not replay.newer(0x8000, 0)
