"""Volume move of a CA share while clients write (hasmb-smbd's POST /volume-move).

A CaFile (persistent handle) and a plain smbprotocol open holding a byte-range
lock write continuously while the share moves from one volume directory to
another. Afterwards every acknowledged write is in the destination, both
handles keep working with the same FileId and no reclaim, the lock still
excludes a third client, the server reports a pause of at most 1 s, and new
files land on the destination volume. Hostile admin requests get clear errors.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from smbprotocol.exceptions import SMBResponseException
from smbprotocol.open import CreateDisposition, LockFlags, SMB2LockElement

from hasmb.probe.ca_client import CaFile, CaTarget
from tests.support.net import free_port
from tests.support.smbd import SmbdProcess, start_smbd
from tests.support.smbproto import connect

FILE_LOCK_CONFLICT = 0xC0000054
BLOCK = 64 * 1024


def admin(port: int, method: str, **params: str) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/volume-move?{urllib.parse.urlencode(params)}"
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture
def volumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    vol_a, vol_b = tmp_path / "vol-a", tmp_path / "vol-b"
    vol_a.mkdir()
    vol_b.mkdir()
    monkeypatch.setenv("HASMB_VOLUMES", f"{vol_a}{os.pathsep}{vol_b}")
    return vol_a, vol_b


@pytest.fixture
def smbd(tmp_path: Path, volumes: tuple[Path, Path]) -> Iterator[tuple[SmbdProcess, int]]:
    vol_a, _ = volumes
    data = vol_a / "data"
    data.mkdir()
    # payload to copy: 16 files of 4 MiB and one of 64 MiB in a subdirectory
    (data / "sub").mkdir()
    for i in range(16):
        (data / f"f{i:02d}.bin").write_bytes(os.urandom(4 << 20))
    (data / "sub" / "big.bin").write_bytes(os.urandom(64 << 20))
    port = free_port()
    proc = start_smbd(
        vol_a,
        {"data": ":ca"},
        extra=["--state", f"file:{tmp_path / 'state'}", "--admin-listen", f"127.0.0.1:{port}"],
    )
    try:
        yield proc, port
    finally:
        proc.stop()


def wait_phase(port: int, share: str, deadline_s: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        code, st = admin(port, "GET", share=share)
        assert code == 200, st
        if st["phase"] in ("Completed", "Failed"):
            return st
        time.sleep(0.05)
    raise AssertionError(f"move of {share} not done: {st}")


def test_move_keeps_handles_locks_and_writes(
    smbd: tuple[SmbdProcess, int], volumes: tuple[Path, Path]
) -> None:
    proc, port = smbd
    _, vol_b = volumes
    dest = vol_b / "data"
    target = CaTarget("127.0.0.1", proc.port, "data", proc.user, proc.password)
    ca = CaFile(target, "ca.bin")
    info = ca.open()
    assert info.persistent
    acked: dict[int, bytes] = {}
    gaps: list[float] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        i, last = 0, time.monotonic()
        try:
            while not stop.is_set():
                block = os.urandom(BLOCK)
                assert ca.write((i % 256) * BLOCK, block) == BLOCK
                acked[(i % 256) * BLOCK] = block
                now = time.monotonic()
                gaps.append(now - last)
                last, i = now, i + 1
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    with connect(proc) as plain, connect(proc) as third:
        locked = plain.open("locked.bin", disposition=CreateDisposition.FILE_OVERWRITE_IF)
        locked.write(b"L" * 8192, 0)
        lock = SMB2LockElement()
        lock["offset"], lock["length"] = 0, 4096
        lock["flags"] = (
            LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK | LockFlags.SMB2_LOCKFLAG_FAIL_IMMEDIATELY
        )
        locked.lock([lock])
        plain_id = locked.file_id

        t = threading.Thread(target=writer)
        t.start()
        try:
            while len(gaps) < 20 and not errors:
                time.sleep(0.01)
            code, st = admin(port, "POST", share="data", destination=str(dest))
            assert code == 202, st
            assert st["phase"] == "Copying"
            # the plain handle keeps writing through the move too
            n = 0
            while admin(port, "GET", share="data")[1]["phase"] in ("Copying", "CuttingOver"):
                locked.write(n.to_bytes(4, "little") * 1024, 4096)
                n += 1
            st = wait_phase(port, "data")
            assert n > 0  # the plain handle wrote while the share was copied
            writes_at_end = len(gaps)
            while len(gaps) < writes_at_end + 20 and not errors:
                time.sleep(0.01)
        finally:
            stop.set()
            t.join(30)
        assert not errors, errors
        assert st["phase"] == "Completed", st
        assert st["pauseSeconds"] is not None and st["pauseSeconds"] <= 1.0, st
        assert st["opensRemapped"] >= 2
        print(
            f"\nvolume move: {st['bytesCopied'] / 1e6:.0f} MB in {st['copySeconds']:.2f} s "
            f"({st['copyRateMBps']} MB/s), {st['passes']} passes, pause {st['pauseSeconds']} s, "
            f"longest client write gap {max(gaps):.3f} s"
        )
        assert max(gaps) <= 1.5

        # same FileIds, no reclaim needed: the handles were never lost
        assert ca.handle is not None and ca.handle.file_id == info.file_id
        assert not ca.stalls
        assert locked.file_id == plain_id
        locked.write(b"after", 8192)
        # the lock survived the cutover
        victim = third.open("locked.bin", disposition=CreateDisposition.FILE_OPEN)
        with pytest.raises(SMBResponseException) as exc:
            victim.write(b"x", 0)
        assert exc.value.status == FILE_LOCK_CONFLICT
        victim.write(b"ok", 4096 * 2 + 5)  # outside the lock

        # every acknowledged write is on the destination volume and read back over SMB
        on_disk = (dest / "ca.bin").read_bytes()
        for offset, block in acked.items():
            assert on_disk[offset : offset + BLOCK] == block, offset
            assert ca.read(offset, BLOCK) == block
        assert (dest / "locked.bin").read_bytes()[8192:8197] == b"after"
        assert (dest / "sub" / "big.bin").stat().st_size == 64 << 20
        # new files are created on the destination
        fresh = third.open("new.txt", disposition=CreateDisposition.FILE_CREATE)
        fresh.write(b"new", 0)
        fresh.close()
        victim.close()
        assert (dest / "new.txt").read_bytes() == b"new"
        locked.close()
    ca.close()
    assert proc.alive()


def test_admin_refuses_bad_requests(
    smbd: tuple[SmbdProcess, int], volumes: tuple[Path, Path], tmp_path: Path
) -> None:
    proc, port = smbd
    vol_a, vol_b = volumes
    cases = [
        ({"share": "nope", "destination": str(vol_b / "x")}, 404, "no share"),
        ({"share": "data", "destination": str(tmp_path / "elsewhere")}, 403, "allowed volume"),
        ({"share": "data", "destination": "/etc/x"}, 403, "allowed volume"),
        ({"share": "data", "destination": str(vol_b / ".." / "x")}, 403, "allowed volume"),
        ({"share": "data", "destination": "relative/x"}, 400, "absolute"),
        ({"share": "data", "destination": str(vol_b)}, 403, "allowed volume"),
        ({"share": "data", "destination": str(vol_a / "data" / "in")}, 400, "contain"),
        ({"share": "data"}, 400, "required"),
        ({"share": "IPC$", "destination": str(vol_b / "x")}, 404, "no share"),
    ]
    (vol_b / "full").mkdir()
    (vol_b / "full" / "f").write_text("x")
    cases.append(({"share": "data", "destination": str(vol_b / "full")}, 409, "not an empty"))
    for params, code, words in cases:
        got, body = admin(port, "POST", **params)
        assert got == code, (params, body)
        assert words in body["error"], (params, body)
    assert admin(port, "GET", share="data")[0] == 404
    assert admin(port, "DELETE", share="data")[0] == 405
    assert not (vol_b / "x").exists()
    assert proc.alive()


def test_move_remaps_disconnected_and_blocked_then_survives_restart(
    smbd: tuple[SmbdProcess, int], volumes: tuple[Path, Path], tmp_path: Path
) -> None:
    """A persistent handle disconnected during the move is reclaimed afterwards at the
    destination; a LOCK blocked across the cutover is granted after it; after kill -9,
    a server started on the destination (what the re-rendered ConfigMap says) honours
    the reclaim of a handle that was connected during the move."""
    proc, port = smbd
    _, vol_b = volumes
    dest = vol_b / "data"
    target = CaTarget("127.0.0.1", proc.port, "data", proc.user, proc.password)
    away, stay = CaFile(target, "away.bin"), CaFile(target, "stay.bin")
    away_info, stay_info = away.open(), stay.open()
    assert away.write(0, b"A" * BLOCK) == BLOCK
    assert stay.write(0, b"S" * BLOCK) == BLOCK
    away.abandon()  # the server keeps it for the reclaim window

    with connect(proc) as holder, connect(proc) as waiter:
        held = holder.open("lk.bin", disposition=CreateDisposition.FILE_OVERWRITE_IF)
        held.write(b"x" * 100, 0)
        lock = SMB2LockElement()
        lock["offset"], lock["length"] = 0, 10
        lock["flags"] = (
            LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK | LockFlags.SMB2_LOCKFLAG_FAIL_IMMEDIATELY
        )
        held.lock([lock])
        wanted = waiter.open("lk.bin", disposition=CreateDisposition.FILE_OPEN)
        blocked = SMB2LockElement()
        blocked["offset"], blocked["length"] = 0, 10
        blocked["flags"] = LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK
        granted = threading.Event()
        failures: list[BaseException] = []

        def wait_lock() -> None:
            try:
                wanted.lock([blocked])
                granted.set()
            except BaseException as exc:
                failures.append(exc)

        t = threading.Thread(target=wait_lock)
        t.start()
        # whether the LOCK reaches the server before the cutover (blocked, parked) or
        # during it (held at the gate), it must stay ungranted until the holder unlocks
        code, st = admin(port, "POST", share="data", destination=str(dest))
        assert code == 202, st
        st = wait_phase(port, "data")
        assert st["phase"] == "Completed", st
        assert st["pauseSeconds"] <= 1.0
        assert not granted.is_set() and not failures
        unlock = SMB2LockElement()
        unlock["offset"], unlock["length"] = 0, 10
        unlock["flags"] = LockFlags.SMB2_LOCKFLAG_UNLOCK
        held.lock([unlock])
        t.join(10)
        assert granted.is_set() and not failures, failures
        wanted.write(b"mine", 0)
        assert (dest / "lk.bin").read_bytes()[:4] == b"mine"
        wanted.close()
        held.close()

    # the abandoned persistent handle is reclaimed with its FileId, on the destination
    assert away.write(BLOCK, b"B" * BLOCK) == BLOCK
    assert away.handle is not None and away.handle.file_id == away_info.file_id
    assert away.read(0, 2 * BLOCK) == b"A" * BLOCK + b"B" * BLOCK
    assert (dest / "away.bin").read_bytes() == b"A" * BLOCK + b"B" * BLOCK
    assert stay.write(BLOCK, b"T" * BLOCK) == BLOCK

    # kill -9 and start where the moved share now lives: the store's records (share +
    # relative path) resolve against the new path
    proc.proc.kill()
    proc.proc.wait(10)
    again = start_smbd(vol_b, {"data": ":ca"}, extra=["--state", f"file:{tmp_path / 'state'}"])
    try:
        stay.target = CaTarget("127.0.0.1", again.port, "data", again.user, again.password)
        assert stay.read(0, 2 * BLOCK) == b"S" * BLOCK + b"T" * BLOCK
        assert stay.handle is not None and stay.handle.file_id == stay_info.file_id
        assert stay.stalls  # it did reconnect and reclaim
        stay.close()
        away.target = stay.target
        away.abandon()
        assert away.read(0, BLOCK) == b"A" * BLOCK
        away.close()
    finally:
        again.stop()
