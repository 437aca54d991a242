"""file:DIR -- the handle-state store on a (shared) filesystem.

Layout of DIR:
- `epoch`: {"epoch": N, "owner": ...}; replaced atomically (temp file, fsync,
  rename, fsync of DIR).
- `lock`: every writer holds an exclusive flock on it while it checks the
  epoch and appends, and while it raises the epoch, so a write under a stale
  epoch can never land after a takeover returned.
- `snapshot`: the full state at the last compaction (atomic replace).
- `log`: batches since the snapshot, one line per op:
  `<crc32 hex> <json>\\n`, followed by zero bytes up to the file's size. A
  batch is one write() and one fdatasync: that is the group commit. The
  writer keeps the file zero-filled ahead of its data (in chunks), so a
  commit overwrites blocks that already exist and fdatasync flushes only the
  data, not the file's size through the journal (about a third cheaper on
  ext4). A torn tail (crash mid-write) fails its CRC or lacks its newline
  and is ignored, as is the zero fill (no newline); taking ownership
  compacts, which also cuts them off.

Replaying the log over a snapshot that already contains it is harmless (each
op sets the final state of one id), so compaction can write the snapshot first
and truncate the log afterwards without a crash window that loses data.
Readers that do not lock (load_all, follow) detect a compaction between their
reads by the snapshot's inode changing and retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hasmb.handles.errors import StaleEpochError, StoreClosedError, StoreError
from hasmb.handles.group_commit import WriteOp
from hasmb.handles.record import PersistentOpenRecord, RecordFormatError
from hasmb.handles.store import EpochInfo, HandleStore, StoreChange

EPOCH_FILE = "epoch"
LOCK_FILE = "lock"
SNAPSHOT_FILE = "snapshot"
LOG_FILE = "log"
_T = TypeVar("_T")
# Zero fill of the log ahead of its data, at most (see the module docstring).
_FILL_CHUNK = 1 << 20
_POLL_CHUNK = 64 << 10


def encode_log_line(entry: dict[str, Any]) -> bytes:
    body = json.dumps(entry, separators=(",", ":")).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


def parse_log(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """Decode complete, intact lines; return the entries and the bytes consumed.

    Parsing stops at the first damaged line: nothing after a torn write can be
    trusted to be an acknowledged batch.
    """
    entries: list[dict[str, Any]] = []
    pos = 0
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            break
        line = data[pos:nl]
        if len(line) < 10 or line[8:9] != b" ":
            break
        body = line[9:]
        try:
            crc = int(line[:8], 16)
        except ValueError:
            break
        if zlib.crc32(body) != crc:
            break
        try:
            entry = json.loads(body)
        except ValueError:
            break
        if not isinstance(entry, dict):
            break
        entries.append(entry)
        pos = nl + 1
    return entries, pos


def apply_entry(state: dict[int, PersistentOpenRecord], entry: dict[str, Any]) -> StoreChange:
    if "p" in entry:
        rec = PersistentOpenRecord.from_dict(entry["p"])
        state[rec.persistent_id] = rec
        return StoreChange("put", record=rec, persistent_id=rec.persistent_id)
    pid = int(entry["d"])
    state.pop(pid, None)
    return StoreChange("delete", persistent_id=pid)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}.{threading.get_ident()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def _read_epoch(dir_: Path | str) -> EpochInfo:
    # Read with plain os calls: this runs under the lock before every commit,
    # and pathlib + a file object cost several times the syscalls themselves.
    path = os.path.join(dir_, EPOCH_FILE)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return EpochInfo(0, "")
    try:
        data = b""
        while chunk := os.read(fd, 4096):
            data += chunk
    finally:
        os.close(fd)
    try:
        d = json.loads(data)
        return EpochInfo(int(d["epoch"]), str(d.get("owner", "")))
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"{path}: corrupt epoch file: {exc!r}") from exc


def _ino(path: Path) -> int:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return 0


@dataclass
class _Snapshot:
    """What a reader saw: state plus where to resume reading the log."""

    records: dict[int, PersistentOpenRecord]
    snapshot_ino: int
    log_offset: int


def _read_consistent(dir_: Path) -> _Snapshot:
    """Read snapshot + log without locking; retry if a compaction interleaved."""
    for _ in range(100):
        snap_path = dir_ / SNAPSHOT_FILE
        records: dict[int, PersistentOpenRecord] = {}
        try:
            with open(snap_path, "rb") as f:
                ino = os.fstat(f.fileno()).st_ino
                snap = json.loads(f.read())
            for d in snap["records"]:
                rec = PersistentOpenRecord.from_dict(d)
                records[rec.persistent_id] = rec
        except FileNotFoundError:
            ino = 0
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"{snap_path}: corrupt snapshot: {exc}") from exc
        try:
            data = (dir_ / LOG_FILE).read_bytes()
        except FileNotFoundError:
            data = b""
        if _ino(snap_path) != ino:
            continue
        entries, consumed = parse_log(data)
        try:
            for entry in entries:
                apply_entry(records, entry)
        except (RecordFormatError, KeyError, ValueError) as exc:
            raise StoreError(f"{dir_ / LOG_FILE}: corrupt entry: {exc}") from exc
        return _Snapshot(records, ino, consumed)
    raise StoreError(f"{dir_}: could not read a consistent state (compacting continuously?)")


class FileHandleStore(HandleStore):
    """Handle state in a directory; see the module docstring for the format."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        compact_bytes: int = 4 << 20,
        poll_interval: float = 0.05,
        max_batch: int = 512,
        lock_timeout: float = 30.0,
    ) -> None:
        super().__init__(max_batch=max_batch)
        self.directory = Path(directory)
        self.compact_bytes = compact_bytes
        self.poll_interval = poll_interval
        self.lock_timeout = lock_timeout
        self._mutex = threading.Lock()
        self._closed = False
        self._lock_fd: int | None = None
        self._log_fd: int | None = None
        # end of the log's data (where the next batch goes) and of its zero fill
        self._log_end = 0
        self._log_filled = 0
        # a batch failed after (part of) it was written: clean up before the next
        self._torn = False
        self._fill_chunk = max(4096, min(_FILL_CHUNK, compact_bytes // 4) // 4096 * 4096)
        self._snapshot_size = 0
        # One thread of our own for commits: they never queue behind the
        # server's file I/O in the default executor, and the thread stays warm.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="hasmb-file-store")

    # -- locking -----------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._mutex:
            if self._closed:
                raise StoreClosedError(f"{self.directory}: store is closed")
            if self._lock_fd is None:
                self.directory.mkdir(parents=True, exist_ok=True)
                self._lock_fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
            self._acquire(self._lock_fd)
            try:
                yield
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _acquire(self, fd: int) -> None:
        # Polled rather than blocking, so that a holder that hangs (a frozen
        # old owner) makes us fail after lock_timeout instead of forever.
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.0005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StoreError(
                        f"{self.directory / LOCK_FILE}: held by another writer for "
                        f"{self.lock_timeout:.0f} s"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.01)

    def _open_log(self) -> int:
        if self._log_fd is None:
            path = self.directory / LOG_FILE
            existed = path.exists()
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            if not existed:
                _fsync_dir(self.directory)
            # Writes go after the last intact line (a torn tail or the zero fill
            # is overwritten); taking ownership has compacted, so this is 0 then.
            size = os.fstat(fd).st_size
            _, self._log_end = parse_log(os.pread(fd, size, 0) if size else b"")
            self._log_filled = size
            self._log_fd = fd
        return self._log_fd

    def _append(self, fd: int, data: bytes) -> None:
        """Write `data` after the log's data (not yet durable; the caller syncs and
        then moves the end past it)."""
        end = self._log_end + len(data)
        if end > self._log_filled:
            # Zero-fill ahead; this commit's fdatasync makes the new size durable.
            new = (end + self._fill_chunk - 1) // self._fill_chunk * self._fill_chunk
            _pwrite_all(fd, bytes(new - self._log_filled), self._log_filled)
            self._log_filled = new
        _pwrite_all(fd, data, self._log_end)

    # -- epoch ---------------------------------------------------------------

    async def _in_thread(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._closed:
            raise StoreClosedError(f"{self.directory}: store is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _raise_epoch(self, owner: str, requested: int | None) -> int:
        return await self._in_thread(self._raise_epoch_sync, owner, requested)

    def _raise_epoch_sync(self, owner: str, requested: int | None) -> int:
        with self._locked():
            cur = _read_epoch(self.directory)
            if requested is not None and requested <= cur.epoch:
                raise StaleEpochError(requested, cur.epoch)
            new = requested if requested is not None else cur.epoch + 1
            body = json.dumps({"epoch": new, "owner": owner}).encode()
            _write_atomic(self.directory / EPOCH_FILE, body)
            # A fresh owner starts from a compacted state: loads are fast and a
            # torn tail left by the previous owner is cut off before we append.
            self._compact_locked(new)
            return new

    async def read_epoch(self) -> EpochInfo:
        return await asyncio.to_thread(_read_epoch, self.directory)

    # -- writes --------------------------------------------------------------

    async def _commit(self, ops: list[WriteOp], epoch: int) -> None:
        await self._in_thread(self._commit_sync, ops, epoch)

    def _commit_sync(self, ops: list[WriteOp], epoch: int) -> None:
        lines = []
        for op in ops:
            if op.kind == "put":
                assert op.record is not None
                lines.append(encode_log_line({"e": epoch, "p": op.record.to_dict()}))
            else:
                lines.append(encode_log_line({"e": epoch, "d": op.persistent_id}))
        data = b"".join(lines)
        with self._locked():
            cur = _read_epoch(self.directory)
            if cur.epoch != epoch:
                raise StaleEpochError(epoch, cur.epoch)
            fd = self._open_log()
            if self._torn:
                # A failed batch may have left whole lines that nobody was told
                # are stored: wipe everything after the data, then compact so a
                # follower that read them reloads.
                _pwrite_all(fd, bytes(self._log_filled - self._log_end), self._log_end)
                os.fdatasync(fd)
                self._torn = False
                self._compact_locked(epoch)
            try:
                self._append(fd, data)
                os.fdatasync(fd)
            except OSError as exc:
                self._torn = True
                raise StoreError(f"{self.directory / LOG_FILE}: {exc}") from exc
            self._log_end += len(data)
            self.stats.round_trips += 1
            if self._log_end > max(self.compact_bytes, 2 * self._snapshot_size):
                self._compact_locked(epoch)

    def _compact_locked(self, epoch: int) -> None:
        state = _read_consistent(self.directory)
        body = json.dumps(
            {"v": 1, "epoch": epoch, "records": [r.to_dict() for r in state.records.values()]},
            separators=(",", ":"),
        ).encode()
        _write_atomic(self.directory / SNAPSHOT_FILE, body)
        self._snapshot_size = len(body)
        fd = self._open_log()
        os.ftruncate(fd, 0)
        os.fsync(fd)
        self._log_end = self._log_filled = 0

    # -- reads ---------------------------------------------------------------

    async def load_all(self) -> list[PersistentOpenRecord]:
        snap = await asyncio.to_thread(_read_consistent, self.directory)
        return list(snap.records.values())

    async def follow(self) -> AsyncIterator[StoreChange]:
        # Polling: portable to any shared filesystem (inotify does not see
        # writes made on another NFS client). The epoch is read before the
        # data it covers: every write under an older epoch was appended before
        # the epoch file was replaced, so data read afterwards includes it.
        dir_ = self.directory
        epoch_ino = await asyncio.to_thread(_ino, dir_ / EPOCH_FILE)
        ep = await self.read_epoch()
        snap = await asyncio.to_thread(_read_consistent, dir_)
        yield StoreChange(
            "reset", records=tuple(snap.records.values()), epoch=ep.epoch, owner=ep.owner
        )
        while True:
            await asyncio.sleep(self.poll_interval)
            if self._closed:
                raise StoreClosedError(f"{dir_}: store is closed")
            new_epoch_ino = await asyncio.to_thread(_ino, dir_ / EPOCH_FILE)
            new_ep = ep
            if new_epoch_ino != epoch_ino:
                epoch_ino = new_epoch_ino
                new_ep = await self.read_epoch()
            result = await asyncio.to_thread(self._poll_log, snap)
            if result is None:
                snap = await asyncio.to_thread(_read_consistent, dir_)
                ep = new_ep
                yield StoreChange(
                    "reset", records=tuple(snap.records.values()), epoch=ep.epoch, owner=ep.owner
                )
                continue
            for change in result:
                yield change
            if new_ep != ep:
                ep = new_ep
                yield StoreChange("epoch", epoch=ep.epoch, owner=ep.owner)

    def _poll_log(self, snap: _Snapshot) -> list[StoreChange] | None:
        """New changes since `snap` (advancing it), or None if a reload is needed."""
        dir_ = self.directory
        if _ino(dir_ / SNAPSHOT_FILE) != snap.snapshot_ino:
            return None
        entries: list[dict[str, Any]] = []
        offset = snap.log_offset
        try:
            with open(dir_ / LOG_FILE, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < offset:
                    return None
                # Only the new lines, not the zero fill after them: read a chunk,
                # take its complete lines, go on while chunks come back full of them.
                chunk = _POLL_CHUNK
                while offset < size:
                    data = os.pread(f.fileno(), chunk, offset)
                    got, consumed = parse_log(data)
                    entries += got
                    offset += consumed
                    if consumed == 0:
                        if len(data) < chunk or b"\n" in data or not data.strip(b"\0"):
                            break
                        chunk *= 2  # one line longer than the chunk
                    elif len(data) < chunk:
                        break
        except FileNotFoundError:
            return [] if snap.log_offset == 0 else None
        if _ino(dir_ / SNAPSHOT_FILE) != snap.snapshot_ino:
            return None
        changes = [apply_entry(snap.records, e) for e in entries]
        snap.log_offset = offset
        return changes

    async def _close(self) -> None:
        self._closed = True
        with self._mutex:
            for fd in (self._log_fd, self._lock_fd):
                if fd is not None:
                    os.close(fd)
            self._log_fd = self._lock_fd = None
        self._executor.shutdown(wait=False)
