"""Nondisruptive volume move of one share (hasmb-smbd side).

A share's directory is copied to a destination on another volume while
clients keep working; then a cutover pauses the share's requests (held, not
failed), waits for the in-flight ones, copies what changed since the last
pass, re-points every open file descriptor of the share at the copy and
resumes. Clients keep their FileIds, persistent handles, leases and
byte-range locks: all of those are keyed by server state this module
re-points, not by the path.

- Copy passes run in a worker thread: the first copies everything, later
  ones only what changed. Change detection combines a tree scan (new,
  removed, renamed entries; size, mtime, ctime or inode differing from the
  last copy) with hooks on WRITE (dirty byte ranges), SET_INFO, IOCTL and
  CREATE (whole file), so a write landing in the same timestamp tick as the
  copy is never missed.
- Cutover: `os.dup2` puts a descriptor of the copy on the very fd number
  each Open holds, so I/O that captured the number keeps working;
  FileNodes and leases are re-keyed to the copy's inode; `Share.root` and the
  share's config path point at the destination (the handle store's records
  name share + relative path, so they stay valid as they are).
- Destinations must lie under an allowed volume root (`$HASMB_VOLUMES`,
  colon-separated; the operator sets it to the volumes the pod mounts).

The source is left in place; the caller (the operator) re-points the share
in the ConfigMap to the destination once the move is Completed, so a
standby that takes over later opens the same files.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import os
import stat
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hasmb.smb.constants import Command

if TYPE_CHECKING:
    from hasmb.smb.fence import Fence
    from hasmb.smb.request import Request
    from hasmb.smb.server import SmbServer
    from hasmb.smb.state import Open, Share

log = logging.getLogger("hasmb.smb.volume_move")

VOLUMES_ENV = "HASMB_VOLUMES"
QUIESCE_TIMEOUT = 0.5  # in-flight requests get this long before the cutover is retried
MAX_PASSES = 8
CONVERGED_BYTES = 4 * 1024 * 1024  # a pass copying less than this is followed by the cutover
MAX_CUTOVER_ATTEMPTS = 5

# IOCTLs that change file data (MS-FSCC 2.3): SET_ZERO_DATA, SET_SPARSE,
# SRV_COPYCHUNK(_WRITE), DUPLICATE_EXTENTS_TO_FILE
_WRITING_FSCTLS = frozenset({0x000980C8, 0x000900C4, 0x001440F2, 0x001480F2, 0x00098344})
_FILE_END_OF_FILE_INFORMATION = 20
_FILE_ALLOCATION_INFORMATION = 19
_OVERWRITING_DISPOSITIONS = frozenset({0, 4, 5})  # SUPERSEDE, OVERWRITE, OVERWRITE_IF
# the file handle-state store's default home (its writer keeps using the source)
_NOT_COPIED = frozenset({".hasmb-state"})
_WRITE_REQ = struct.Struct("<HHIQ")  # StructureSize, DataOffset, Length, Offset (2.2.21)


class VolumeMoveError(Exception):
    """A move that cannot start; `code` is the HTTP status the admin endpoint answers."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class _Dirty:
    whole: bool = False
    ranges: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class MoveProgress:
    share: str
    source: str
    destination: str
    phase: str = "Copying"  # Copying, CuttingOver, Completed, Failed
    bytes_copied: int = 0
    files_copied: int = 0
    passes: int = 0
    pause_seconds: float | None = None
    cutover_attempts: int = 0
    opens_remapped: int = 0
    copy_seconds: float = 0.0
    error: str = ""
    started: float = field(default_factory=time.time)
    finished: float | None = None

    def as_dict(self) -> dict[str, object]:
        out = dataclasses.asdict(self)
        out["copyRateMBps"] = (
            round(self.bytes_copied / self.copy_seconds / 1e6, 1) if self.copy_seconds else None
        )
        return {_camel(k): v for k, v in out.items()}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


_Sig = tuple[int, int, int, int]  # size, mtime_ns, ctime_ns, inode
# Fence.mutation or _unfenced: wraps each write to the destination (hasmb.smb.fence)
_Guard = Callable[[str], contextlib.AbstractContextManager[None]]


def _unfenced(what: str) -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


def _makedirs(m: _Guard, path: str) -> None:
    with m("volume move: create the destination"):
        os.makedirs(path, 0o755, exist_ok=True)


@dataclass(eq=False)
class ShareMove:
    share: Share
    progress: MoveProgress
    source: str
    destination: str
    dirty: dict[str, _Dirty] = field(default_factory=dict)  # by path relative to the source
    copied: dict[str, _Sig] = field(default_factory=dict)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    active: set[Request] = field(default_factory=set)
    task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.gate.set()

    @property
    def running(self) -> bool:
        return self.progress.phase in ("Copying", "CuttingOver")

    def mark(self, host_path: str, offset: int = 0, length: int = -1) -> None:
        rel = os.path.relpath(host_path, self.source)
        if rel.startswith(".."):
            return
        d = self.dirty.setdefault(rel, _Dirty())
        if length < 0:
            d.whole = True
        elif not d.whole and length > 0:
            d.ranges.append((offset, length))


def allowed_roots() -> list[str]:
    raw = os.environ.get(VOLUMES_ENV, "")
    return [os.path.realpath(p) for p in raw.split(os.pathsep) if p.strip()]


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


class VolumeMoves:
    """The moves of one SmbServer (`server.volume_moves`)."""

    def __init__(self, server: SmbServer) -> None:
        self.server = server
        self.moves: dict[str, ShareMove] = {}
        self._wrapped = False
        # from the start, so that no WRITE is in flight unwrapped when a move begins
        self._install()

    # ------------------------------------------------------------ API
    def start(self, share_name: str, destination: str, *, restart: bool = False) -> ShareMove:
        """`restart`: the destination may hold a partial copy of an earlier attempt
        (a move interrupted by a takeover); it is synced, not refused."""
        share = self.server.shares.get(share_name.lower())
        if share is None or share.is_ipc:
            raise VolumeMoveError(404, f"no share {share_name!r}")
        current = self.moves.get(share.name.lower())
        if current is not None and current.running:
            if os.path.realpath(destination) == current.destination:
                return current  # the same request again (the operator retries)
            raise VolumeMoveError(409, f"share {share.name} is already moving")
        if not os.path.isabs(destination):
            raise VolumeMoveError(400, "destination must be an absolute path")
        dest = os.path.realpath(destination)
        roots = allowed_roots()
        if not any(_inside(dest, r) and dest != r for r in roots):
            raise VolumeMoveError(
                403,
                f"destination {destination} is not inside an allowed volume "
                f"({', '.join(roots) or f'none: ${VOLUMES_ENV} is unset'})",
            )
        src = share.root
        if dest == src:
            raise VolumeMoveError(409, f"share {share.name} is already at {dest}")
        if _inside(dest, src) or _inside(src, dest):
            raise VolumeMoveError(400, "destination and source may not contain each other")
        if os.path.lexists(dest) and (
            not os.path.isdir(dest) or (os.listdir(dest) and not restart)
        ):
            raise VolumeMoveError(409, f"destination {dest} exists and is not an empty directory")
        self._install()
        mv = ShareMove(
            share=share,
            progress=MoveProgress(share=share.name, source=src, destination=dest),
            source=src,
            destination=dest,
        )
        self.moves[share.name.lower()] = mv
        mv.task = asyncio.get_running_loop().create_task(self._run(mv))
        log.info("volume move of %s: %s -> %s started", share.name, src, dest)
        return mv

    def progress(self, share_name: str) -> MoveProgress | None:
        mv = self.moves.get(share_name.lower())
        return mv.progress if mv is not None else None

    async def wait(self, share_name: str) -> MoveProgress:
        mv = self.moves[share_name.lower()]
        if mv.task is not None:
            await asyncio.shield(mv.task)
        return mv.progress

    # ------------------------------------------------------------ request hooks
    def _install(self) -> None:
        """Wrap every tree command once: hold it while its share cuts over, note
        what it changes while the share is copied."""
        if self._wrapped:
            return
        self._wrapped = True
        for code, spec in self.server.registry.commands.items():
            if spec.needs_tree:
                spec.handler = self._wrap(code, spec.handler)

    def _move_of(self, req: Request) -> ShareMove | None:
        tree = req.tree
        if tree is None or not self.moves:
            return None
        mv = self.moves.get(tree.share.name.lower())
        if mv is None or mv.share is not tree.share or not mv.running:
            return None
        return mv

    def _wrap(
        self, code: int, inner: Callable[[Request], Awaitable[bytes]]
    ) -> Callable[[Request], Awaitable[bytes]]:
        async def handler(req: Request) -> bytes:
            mv = self._move_of(req)
            if mv is None or code == Command.OPLOCK_BREAK:
                # a break acknowledgment changes no data, and a CREATE the cutover
                # waits for may be waiting for it
                return await inner(req)
            if not mv.gate.is_set():
                await mv.gate.wait()  # held, not failed: the cutover resumes it
                mv = self._move_of(req)
                if mv is None:
                    return await inner(req)
            mv.active.add(req)
            try:
                return await inner(req)
            finally:
                mv.active.discard(req)
                with contextlib.suppress(Exception):
                    self._note(mv, code, req)

        return handler

    def _open_of(self, req: Request) -> Open | None:
        fid = req.compound.file_id
        if len(fid) != 16 or req.session is None:
            return None
        op = req.session.opens.get(int.from_bytes(fid[8:], "little"))
        if op is None or op.persistent_id != int.from_bytes(fid[:8], "little") or op.closed:
            return None
        return op

    def _note(self, mv: ShareMove, code: int, req: Request) -> None:
        if req.status & 0xC0000000 == 0xC0000000:
            return  # failed: changed nothing
        op = self._open_of(req)
        if op is None or op.is_directory or op.pipe is not None:
            return
        msg = req.msg
        if code == Command.WRITE:
            _, _, length, offset = _WRITE_REQ.unpack_from(msg, 64)
            mv.mark(op.host_path, offset, length)
        elif code == Command.SET_INFO:
            cls = msg[67]
            whole = cls in (_FILE_END_OF_FILE_INFORMATION, _FILE_ALLOCATION_INFORMATION)
            mv.mark(op.host_path, 0, -1 if whole else 0)
        elif code == Command.IOCTL:
            if int.from_bytes(msg[68:72], "little") in _WRITING_FSCTLS:
                mv.mark(op.host_path)
        elif code == Command.CREATE:
            disposition = int.from_bytes(msg[100:104], "little")
            if disposition in _OVERWRITING_DISPOSITIONS:
                mv.mark(op.host_path)

    # ------------------------------------------------------------ the move
    async def _run(self, mv: ShareMove) -> None:
        p = mv.progress
        try:
            await asyncio.to_thread(_makedirs, self.server.fence.mutation, mv.destination)
            for _ in range(MAX_PASSES):
                copied = await self._pass(mv)
                if copied < CONVERGED_BYTES:
                    break
            while True:
                p.cutover_attempts += 1
                if await self._cutover(mv):
                    break
                if p.cutover_attempts >= MAX_CUTOVER_ATTEMPTS:
                    raise RuntimeError(
                        f"requests on the share stayed in flight longer than "
                        f"{QUIESCE_TIMEOUT} s in {p.cutover_attempts} attempts"
                    )
                await self._pass(mv)
            p.phase = "Completed"
            log.info(
                "volume move of %s completed: %d bytes in %d passes, pause %.3f s",
                p.share,
                p.bytes_copied,
                p.passes,
                p.pause_seconds or 0.0,
            )
        except Exception as exc:
            p.phase, p.error = "Failed", f"{type(exc).__name__}: {exc}"
            log.error("volume move of %s failed: %s", p.share, p.error)
        finally:
            mv.gate.set()
            p.finished = time.time()

    async def _pass(self, mv: ShareMove) -> int:
        dirty, mv.dirty = mv.dirty, {}
        t0 = time.monotonic()
        nbytes, nfiles = await asyncio.to_thread(
            sync_tree, mv.source, mv.destination, mv.copied, dirty, self.server.fence
        )
        p = mv.progress
        p.copy_seconds += time.monotonic() - t0
        p.passes += 1
        p.bytes_copied += nbytes
        p.files_copied += nfiles
        return nbytes

    async def _cutover(self, mv: ShareMove) -> bool:
        p = mv.progress
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()
        p.phase = "CuttingOver"
        mv.gate.clear()
        deadline = loop.time() + QUIESCE_TIMEOUT
        # a blocked LOCK or a CHANGE_NOTIFY may wait forever and touches no data;
        # everything else must finish (a CREATE waiting for an oplock break too:
        # it would open the source afterwards)
        while any(not _parked(r) for r in mv.active) or self._fd_busy(mv):
            if loop.time() > deadline:
                mv.gate.set()
                p.phase = "Copying"
                log.info("volume move of %s: cutover postponed, I/O still in flight", p.share)
                return False
            await asyncio.sleep(0.002)
        await self._pass(mv)
        try:
            p.opens_remapped = self._remap(mv)
        except OSError as exc:
            mv.gate.set()
            raise RuntimeError(f"reopening at the destination failed: {exc}") from exc
        mv.gate.set()
        p.pause_seconds = round(time.monotonic() - t0, 4)
        return True

    def _share_opens(self, mv: ShareMove) -> list[Open]:
        seen: dict[int, Open] = {}
        for op in self.server.state.opens.values():
            if op.tree.share is mv.share and not op.closed:
                seen[id(op)] = op
        for session in self.server.state.sessions.values():
            for op in session.opens.values():
                if op.tree.share is mv.share and not op.closed:
                    seen[id(op)] = op
        return list(seen.values())

    def _fd_busy(self, mv: ShareMove) -> bool:
        return any(op.inflight for op in self._share_opens(mv))

    def _remap(self, mv: ShareMove) -> int:
        """Point the share and all its opens at the destination (all or nothing)."""
        src, dst = mv.source, mv.destination
        opens = [op for op in self._share_opens(mv) if _inside(op.host_path, src)]
        fresh: list[tuple[Open, str, int]] = []
        try:
            for op in opens:
                new_path = dst + op.host_path[len(src) :]
                fd = -1
                if op.fd >= 0:
                    import fcntl

                    flags = fcntl.fcntl(op.fd, fcntl.F_GETFL)
                    keep = flags & (os.O_ACCMODE | os.O_APPEND | os.O_DIRECTORY)
                    fd = os.open(new_path, keep | os.O_NOFOLLOW)
                elif not os.path.lexists(new_path):
                    raise FileNotFoundError(errno.ENOENT, "missing at the destination", new_path)
                fresh.append((op, new_path, fd))
        except OSError:
            for _, _, fd in fresh:
                if fd >= 0:
                    os.close(fd)
            raise
        state = self.server.state
        rekeyed: dict[tuple[int, int], tuple[int, int]] = {}
        nodes_done: set[int] = set()
        for op, new_path, fd in fresh:
            if fd >= 0:
                os.dup2(fd, op.fd)  # same fd number: I/O that captured it stays valid
                os.close(fd)
            op.host_path = new_path
            node = op.node
            if node is not None and id(node) not in nodes_done:
                nodes_done.add(id(node))
                st = os.stat(new_path, follow_symlinks=False)
                new_key = (st.st_dev, st.st_ino)
                if state.files.get(node.key) is node:
                    del state.files[node.key]
                rekeyed[node.key] = new_key
                node.key = new_key
                node.path = new_path
                state.files[new_key] = node
        for lease in state.leases.values():
            if lease.file_key in rekeyed:
                lease.file_key = rekeyed[lease.file_key]
        share = mv.share
        share.root = dst
        share.config = dataclasses.replace(share.config, path=dst)
        self.server.config.shares = [
            share.config if s.name.lower() == share.name.lower() else s
            for s in self.server.config.shares
        ]
        return len(fresh)


def _parked(req: Request) -> bool:
    return bool(req.async_id) and req.header.command in (Command.LOCK, Command.CHANGE_NOTIFY)


# ---------------------------------------------------------------- copying (worker thread)


def _sig(st: os.stat_result) -> _Sig:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _copy_meta(m: _Guard, src: str, dst: str, st: os.stat_result) -> None:
    for name in _listxattr(src):
        with contextlib.suppress(OSError):
            value = os.getxattr(src, name, follow_symlinks=False)
            with m("volume move: copy attributes"):
                os.setxattr(dst, name, value)
    with m("volume move: copy mode"):
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    with m("volume move: copy times"):
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


def _listxattr(path: str) -> list[str]:
    try:
        return [n for n in os.listxattr(path, follow_symlinks=False) if n.startswith("user.")]
    except OSError:
        return []


def _copy_whole(m: _Guard, src: str, dst: str, size: int) -> None:
    sfd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        with m("volume move: create copy"):
            dfd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            done = 0
            while True:
                try:
                    with m("volume move: copy"):
                        n = os.copy_file_range(sfd, dfd, 1 << 26, done, done)
                except OSError as exc:
                    if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                        raise
                    n = _copy_plain(m, sfd, dfd, done)
                if n == 0:
                    break
                done += n
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)


def _copy_plain(m: _Guard, sfd: int, dfd: int, offset: int) -> int:
    data = os.pread(sfd, 1 << 20, offset)
    if data:
        with m("volume move: copy"):
            os.pwrite(dfd, data, offset)
    return len(data)


def _copy_ranges(m: _Guard, src: str, dst: str, ranges: list[tuple[int, int]]) -> int:
    sfd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        dfd = os.open(dst, os.O_WRONLY | os.O_NOFOLLOW)
        try:
            total = 0
            for off, length in _merge(ranges):
                pos, end = off, off + length
                while pos < end:
                    data = os.pread(sfd, min(end - pos, 1 << 20), pos)
                    if not data:
                        break  # the file shrank; the truncate below settles it
                    with m("volume move: copy"):
                        os.pwrite(dfd, data, pos)
                    pos += len(data)
                    total += len(data)
            size = os.fstat(sfd).st_size
            with m("volume move: truncate copy"):
                os.ftruncate(dfd, size)
            return total
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for off, length in sorted(ranges):
        if out and off <= out[-1][0] + out[-1][1]:
            last_off, last_len = out[-1]
            out[-1] = (last_off, max(last_len, off + length - last_off))
        else:
            out.append((off, length))
    return out


def _remove(m: _Guard, path: str) -> None:
    st = os.lstat(path)
    if stat.S_ISDIR(st.st_mode):
        for name in os.listdir(path):
            _remove(m, os.path.join(path, name))
        with m("volume move: remove"):
            os.rmdir(path)
    else:
        with m("volume move: remove"):
            os.unlink(path)


def sync_tree(
    source: str,
    destination: str,
    copied: dict[str, _Sig],
    dirty: dict[str, _Dirty],
    fence: Fence | None = None,
) -> tuple[int, int]:
    """One copy pass: make `destination` equal `source`. `copied` holds each file's
    signature as of its last copy (taken before copying, so a change during the
    copy shows up next pass); `dirty` names files the hooks saw change. Every
    write to `destination` is fenced (the server passes its fence; None is for
    tests of the copy alone). Returns (bytes copied, files copied)."""
    m: _Guard = fence.mutation if fence is not None else _unfenced
    nbytes = nfiles = 0
    seen: set[str] = set()
    dirs: list[tuple[str, str, os.stat_result]] = []
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        sdir = os.path.join(source, rel_dir) if rel_dir else source
        ddir = os.path.join(destination, rel_dir) if rel_dir else destination
        try:
            entries = {e.name: e for e in os.scandir(sdir) if rel_dir or e.name not in _NOT_COPIED}
            dir_st = os.stat(sdir)
        except FileNotFoundError:
            continue  # removed while we walked; the next pass sees the parent
        if not os.path.isdir(ddir):
            with contextlib.suppress(FileNotFoundError):
                _remove(m, ddir)
            with m("volume move: mkdir"):
                os.mkdir(ddir)
        dirs.append((sdir, ddir, dir_st))
        for name in os.listdir(ddir):
            if name not in entries and (rel_dir or name not in _NOT_COPIED):
                _remove(m, os.path.join(ddir, name))
                copied.pop(os.path.join(rel_dir, name), None)
        for name, entry in entries.items():
            rel = os.path.join(rel_dir, name)
            spath, dpath = entry.path, os.path.join(ddir, name)
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            seen.add(rel)
            if stat.S_ISDIR(st.st_mode):
                if os.path.lexists(dpath) and not os.path.isdir(dpath):
                    _remove(m, dpath)
                stack.append(rel)
                continue
            d = dirty.get(rel)
            sig = _sig(st)
            if os.path.lexists(dpath) and os.path.isdir(dpath) and not os.path.islink(dpath):
                _remove(m, dpath)
            if stat.S_ISLNK(st.st_mode):
                if copied.get(rel) != sig:
                    with contextlib.suppress(FileNotFoundError), m("volume move: remove"):
                        os.unlink(dpath)
                    target = os.readlink(spath)
                    with m("volume move: symlink"):
                        os.symlink(target, dpath)
                    copied[rel] = sig
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            try:
                if copied.get(rel) is None or not os.path.exists(dpath) or (d and d.whole):
                    _copy_whole(m, spath, dpath, st.st_size)
                    nbytes += st.st_size
                elif copied[rel] != sig or d is not None:
                    same_file = copied[rel][3] == sig[3]
                    if d is not None and same_file:
                        # every data change since the last copy went through a hook
                        nbytes += _copy_ranges(m, spath, dpath, d.ranges)
                    elif d is None and same_file and copied[rel][:2] == sig[:2]:
                        pass  # only ctime moved (metadata): copied below
                    else:
                        _copy_whole(m, spath, dpath, st.st_size)
                        nbytes += st.st_size
                else:
                    continue
                _copy_meta(m, spath, dpath, st)
            except FileNotFoundError:
                continue  # removed meanwhile; the next pass removes the copy
            copied[rel] = sig
            nfiles += 1
    for rel in [r for r in copied if r not in seen]:
        del copied[rel]
    for sdir, ddir, st in reversed(dirs):  # after their content, which changes mtime
        with contextlib.suppress(FileNotFoundError):
            _copy_meta(m, sdir, ddir, st)
    return nbytes, nfiles


def status(server: SmbServer) -> dict[str, Any]:
    return {mv.share.name: mv.progress.as_dict() for mv in server.volume_moves.moves.values()}


def admin_request(server: SmbServer, method: str, params: dict[str, str]) -> tuple[int, bytes]:
    """`/volume-move` of the admin endpoint: (HTTP status, JSON body)."""
    import json

    moves = server.volume_moves
    name = params.get("share", "")
    if method == "GET":
        if not name:
            return 200, json.dumps(status(server)).encode()
        progress = moves.progress(name)
        if progress is None:
            return 404, json.dumps({"error": f"no volume move of share {name!r}"}).encode()
        return 200, json.dumps(progress.as_dict()).encode()
    if method != "POST":
        return 405, b'{"error": "use GET or POST"}'
    destination = params.get("destination", "")
    if not name or not destination:
        return 400, b'{"error": "share and destination are required query parameters"}'
    try:
        mv = moves.start(name, destination, restart=params.get("restart") == "true")
    except VolumeMoveError as exc:
        return exc.code, json.dumps({"error": str(exc)}).encode()
    return 202, json.dumps(mv.progress.as_dict()).encode()
