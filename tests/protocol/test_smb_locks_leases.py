"""Byte-range locks and lease breaks between two smbprotocol clients."""

from __future__ import annotations

import os
import struct
import threading
import time

import pytest
from smbprotocol.connection import Request as SmbRequest
from smbprotocol.create_contexts import (
    CreateContextName,
    SMB2CreateContextRequest,
    SMB2CreateRequestLeaseV2,
)
from smbprotocol.exceptions import SMBResponseException
from smbprotocol.header import Commands, SMB2HeaderRequest
from smbprotocol.open import (
    CreateDisposition,
    FileAttributes,
    ImpersonationLevel,
    LockFlags,
    Open,
    RequestedOplockLevel,
    ShareAccess,
    SMB2LockElement,
)

from tests.support.smbd import SmbdProcess
from tests.support.smbproto import Client, connect

LOCK_NOT_GRANTED = 0xC0000055
FILE_LOCK_CONFLICT = 0xC0000054
UNSOLICITED = 0xFFFFFFFFFFFFFFFF


def _lock(op: Open, offset: int, length: int, flags: int) -> None:
    el = SMB2LockElement()
    el["offset"] = offset
    el["length"] = length
    el["flags"] = flags
    op.lock([el])


def test_byte_range_lock_conflicts(smbd: SmbdProcess) -> None:
    share = ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE
    with connect(smbd) as a, connect(smbd) as b:
        fa = a.open("brl.bin", share=share, disposition=CreateDisposition.FILE_OVERWRITE_IF)
        fb = b.open("brl.bin", share=share)
        try:
            fa.write(b"x" * 100, 0)
            excl = LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK | LockFlags.SMB2_LOCKFLAG_FAIL_IMMEDIATELY
            shared = LockFlags.SMB2_LOCKFLAG_SHARED_LOCK | LockFlags.SMB2_LOCKFLAG_FAIL_IMMEDIATELY
            _lock(fa, 10, 10, excl)
            with pytest.raises(SMBResponseException) as exc:
                _lock(fb, 15, 1, shared)
            assert exc.value.status == LOCK_NOT_GRANTED
            with pytest.raises(SMBResponseException) as exc:
                fb.write(b"y", 12)
            assert exc.value.status == FILE_LOCK_CONFLICT
            with pytest.raises(SMBResponseException) as exc:
                fb.read(12, 2)
            assert exc.value.status == FILE_LOCK_CONFLICT
            assert fb.read(0, 10) == b"x" * 10  # outside the range
            fa.write(b"z", 12)  # the holder may write
            _lock(fa, 10, 10, LockFlags.SMB2_LOCKFLAG_UNLOCK)
            _lock(fb, 15, 1, shared)
            _lock(fa, 15, 1, shared)  # shared locks coexist
            with pytest.raises(SMBResponseException) as exc:
                _lock(fa, 0, 50, excl)
            assert exc.value.status == LOCK_NOT_GRANTED
        finally:
            fb.close()
            fa.close()


def test_blocking_lock_waits_for_release(smbd: SmbdProcess) -> None:
    share = ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE
    with connect(smbd) as a, connect(smbd) as b:
        fa = a.open("brl2.bin", share=share, disposition=CreateDisposition.FILE_OVERWRITE_IF)
        fb = b.open("brl2.bin", share=share)
        _lock(fa, 0, 10, LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK)
        released = threading.Event()

        def release() -> None:
            time.sleep(0.5)
            released.set()
            _lock(fa, 0, 10, LockFlags.SMB2_LOCKFLAG_UNLOCK)

        t = threading.Thread(target=release)
        t.start()
        _lock(fb, 0, 10, LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK)  # pends (STATUS_PENDING) first
        assert released.is_set()
        t.join()
        fb.close()
        fa.close()


def _lease_ctx(key: bytes, state: int) -> SMB2CreateContextRequest:
    lease = SMB2CreateRequestLeaseV2()
    lease["lease_key"] = key
    lease["lease_state"] = state
    lease["parent_lease_key"] = b"\x00" * 16
    lease["epoch"] = b"\x00\x00"
    ctx = SMB2CreateContextRequest()
    ctx["buffer_name"] = CreateContextName.SMB2_CREATE_REQUEST_LEASE
    ctx["buffer_data"] = lease
    return ctx


def _expect_break(client: Client) -> SmbRequest:
    """smbprotocol has no break handler; park a pseudo request under the unsolicited id."""
    hdr = SMB2HeaderRequest()
    hdr["command"] = Commands.SMB2_OPLOCK_BREAK
    hdr["message_id"] = UNSOLICITED
    req = SmbRequest(hdr, type(None), client.connection, client.session.session_id)
    client.connection.outstanding_requests[UNSOLICITED] = req
    return req


def test_lease_break_on_second_open(smbd: SmbdProcess) -> None:
    rwh = 0x07
    with connect(smbd) as a, connect(smbd) as b:
        fa = Open(a.tree, "leased.bin")
        resp = fa.create(
            ImpersonationLevel.Impersonation,
            0x0012019F,
            FileAttributes.FILE_ATTRIBUTE_NORMAL,
            ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE,
            CreateDisposition.FILE_OVERWRITE_IF,
            0,
            oplock_level=RequestedOplockLevel.SMB2_OPLOCK_LEVEL_LEASE,
            create_contexts=[_lease_ctx(os.urandom(16), rwh)],
        )
        lease = next(c for c in resp if c["lease_key"].get_value() is not None)
        assert lease["lease_state"].get_value() == rwh
        fa.write(b"cached", 0)
        brk = _expect_break(a)
        opened = threading.Event()
        result: dict[str, object] = {}

        def second_open() -> None:
            try:
                result["open"] = b.open(
                    "leased.bin",
                    access=0x00120089,
                    share=ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE,
                    disposition=CreateDisposition.FILE_OPEN,
                )
            except Exception as exc:  # surfaced below
                result["error"] = exc
            opened.set()

        t = threading.Thread(target=second_open)
        t.start()
        assert brk.response_event.wait(10), "no lease break reached the first client"
        body = brk.response["data"].get_value()
        size, _epoch, flags, _key, current, new = struct.unpack_from("<HHI16sII", body)
        assert size == 44
        assert current == rwh
        assert new & 0x4 == 0  # write caching is revoked
        assert flags & 1  # an acknowledgment is required
        assert not opened.is_set()  # the second open waits for the holder
        fa.close()  # flushing and closing is an acceptable answer to a break
        assert opened.wait(10)
        t.join()
        assert "error" not in result, result
        op = result["open"]
        assert isinstance(op, Open)
        assert op.read(0, 6) == b"cached"
        op.close()
