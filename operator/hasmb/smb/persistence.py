"""Continuous availability in the server: durable and persistent opens across
disconnects, restarts and takeovers (MS-SMB2 3.3.5.9.6-3.3.5.9.13, 3.3.7.1).

`ContinuousAvailability` (one per `SmbServer`, as `server.ca`) hooks into the
SMB core through its extension points:

- CREATE is wrapped: durable reconnects (DHnC/DH2C) are answered here; a
  CREATE carrying a CreateGuid that is already in use is a replay
  (3.3.5.9.10); an AppInstanceId closes the stale open of another instance
  (3.3.5.9.13); a disconnected persistent open blocks every other 3.x opener
  of its file with STATUS_FILE_NOT_AVAILABLE until it is reclaimed or
  expires, and a disconnected durable (non-persistent) open is purged
  when someone else opens its file, because it can no longer answer a break.
- `after_create` (a `server.create_hooks` entry) grants durability once the
  oplock or lease is known and writes persistent opens to the store before
  the CREATE is answered.
- `preserve` (from the server's disconnect path) keeps qualifying opens with
  their share modes, lease and byte-range locks for the durable timeout
  (3.3.7.1); `on_closed` (from close_open) deletes them from the store.
- LOCK and OPLOCK_BREAK are wrapped so that lock and lease changes of
  persistent opens are durable before the reply.
- WRITE, SET_INFO, IOCTL and LOCK are wrapped with the ChannelSequence check
  (`hasmb.smb.replay`).

With a store attached (`attach`), persistent opens survive the process: a
new server (restart or partner takeover) loads every record as a
disconnected open with its remaining reclaim window.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hasmb.handles import (
    ByteRangeLock as LockRecord,
)
from hasmb.handles import (
    HandleStore,
    LeaseInfo,
    PersistentOpenRecord,
    StaleEpochError,
    StoreError,
)
from hasmb.smb import durable, paths, replay
from hasmb.smb.constants import (
    CAP_PERSISTENT_HANDLES,
    DIALECT_300,
    FILE_APPEND_DATA,
    FILE_DELETE_ON_CLOSE,
    FILE_OPENED,
    FILE_WRITE_DATA,
    FLAGS_REPLAY_OPERATION,
    LEASE_HANDLE,
    OPLOCK_LEVEL_BATCH,
    OPLOCK_LEVEL_LEASE,
    Command,
    Status,
)
from hasmb.smb.errors import SmbError
from hasmb.smb.request import Request
from hasmb.smb.state import ByteRangeLock, Connection, Lease, Open, Session, TreeConnect

if TYPE_CHECKING:
    from hasmb.smb.create import CreateContext, CreateParams
    from hasmb.smb.server import SmbServer

log = logging.getLogger("hasmb.smb.ca")

Handler = Callable[[Request], Awaitable[bytes]]
_CREATE = struct.Struct("<HBBIQQIIIIIHHII")
_USES_A_HANDLE = (
    Command.READ,
    Command.WRITE,
    Command.QUERY_INFO,
    Command.SET_INFO,
    Command.FLUSH,
    Command.LOCK,
    Command.IOCTL,
    Command.QUERY_DIRECTORY,
    Command.CHANGE_NOTIFY,
)


@dataclass
class CaStats:
    reclaims: int = 0
    expired: int = 0
    replays: int = 0
    persisted: int = 0


@dataclass(eq=False)
class ContinuousAvailability:
    server: SmbServer
    store: HandleStore | None = None
    stats: CaStats = field(default_factory=CaStats)
    fenced: asyncio.Event = field(default_factory=asyncio.Event)
    seqs: replay.SequenceState = field(default_factory=replay.SequenceState)
    # persistent id -> user that opened it (Open keeps no user; a reclaim must match it)
    users: dict[int, str] = field(default_factory=dict)
    # persistent ids that have a record in the store
    stored: set[int] = field(default_factory=set)
    pending_creates: set[bytes] = field(default_factory=set)
    # persistent id -> CreateAction of the original CREATE (a replay answers with it)
    actions: dict[int, int] = field(default_factory=dict)
    # opens whose CREATE may still be replayed: no other request has used them yet
    replay_eligible: set[int] = field(default_factory=set)
    # persistent id -> LockSequenceIndex -> LockSequenceNumber of the last applied LOCK
    lock_sequences: dict[int, dict[int, int]] = field(default_factory=dict)
    _timers: dict[int, asyncio.TimerHandle] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        reg = self.server.registry
        create = reg.commands.get(Command.CREATE)
        if create is not None:
            create.handler = self._wrap_create(create.handler)
        lock = reg.commands.get(Command.LOCK)
        if lock is not None:
            lock.handler = self._wrap_persisting(lock.handler)
        brk = reg.commands.get(Command.OPLOCK_BREAK)
        if brk is not None:
            brk.handler = self._wrap_break(brk.handler)
        for command in _USES_A_HANDLE:
            spec = reg.commands.get(command)
            if spec is not None:
                spec.handler = self._wrap_use(spec.handler)
        replay.install(reg, self.server.state, self.seqs)
        self.server.create_hooks.append(self.after_create)

    # ------------------------------------------------------------ store
    async def attach(self, store: HandleStore, records: list[PersistentOpenRecord]) -> None:
        """Use `store` (already owned) and adopt `records` as disconnected opens."""
        self.store = store
        now = time.time()
        puts: list[Awaitable[None]] = []
        top = 0
        for rec in records:
            top = max(top, rec.persistent_id >> 16)
            try:
                op = self._restore(rec, now)
            except (OSError, SmbError) as exc:
                log.warning("dropping persistent open %s: %s", rec.path, exc)
                puts.append(store.delete(rec.persistent_id))
                continue
            self.stored.add(op.persistent_id)
            if rec.disconnected_at is None:
                # the previous owner died with it connected: its window starts now, once
                puts.append(self._put(op))
        if top:
            # persistent ids of new opens must not collide with the restored ones
            self.server.state._ids = itertools.count(top + 1)
        # one group commit for all of them
        await asyncio.gather(*puts, return_exceptions=True)
        if records:
            log.info("loaded %d persistent open(s) from the handle store", len(self.stored))

    def _restore(self, rec: PersistentOpenRecord, now: float) -> Open:
        state = self.server.state
        share = self.server.shares.get(rec.share.lower())
        if share is None or share.is_ipc:
            raise SmbError(Status.BAD_NETWORK_NAME, f"no share {rec.share}")
        parts = paths.split_smb_path(rec.path)
        host = paths.resolve(share.root, parts)
        write = rec.desired_access & (FILE_WRITE_DATA | FILE_APPEND_DATA)
        fd = os.open(host, (os.O_RDWR if write else os.O_RDONLY) | os.O_NOFOLLOW)
        st = os.fstat(fd)
        node = state.node_for((st.st_dev, st.st_ino), host)
        placeholder = Session(session_id=0, connection=Connection(peer="(disconnected)"))
        tree = TreeConnect(tree_id=0, share=share, session=placeholder)
        disconnected = rec.disconnected_at if rec.disconnected_at is not None else now
        op = Open(
            persistent_id=rec.persistent_id,
            volatile_id=rec.volatile_id,
            session=None,
            tree=tree,
            smb_path=rec.path,
            host_path=host,
            is_directory=False,
            granted_access=rec.desired_access,
            share_access=rec.share_access,
            create_options=rec.create_options,
            delete_on_close=bool(rec.create_options & FILE_DELETE_ON_CLOSE),
            fd=fd,
            node=node,
            oplock_level=rec.oplock_level,
            create_guid=rec.create_guid,
            app_instance_id=rec.app_instance_id or b"",
            is_durable=True,
            is_persistent=rec.is_persistent,
            durable_timeout_ms=rec.durable_timeout_ms,
            disconnected_at=disconnected,
            client_guid=rec.client_guid,
        )
        if rec.lease is not None:
            key = (rec.client_guid, rec.lease.key)
            lease = state.leases.get(key)
            if lease is None:
                lease = Lease(
                    client_guid=rec.client_guid,
                    key=rec.lease.key,
                    file_key=node.key,
                    state=rec.lease.state,
                    epoch=rec.lease.epoch,
                    version=rec.lease.version,
                    parent_key=rec.lease.parent_key or b"",
                )
                state.leases[key] = lease
            lease.opens.append(op)
            op.lease = lease
        for lk in rec.locks:
            node.locks.append(ByteRangeLock(op, lk.offset, lk.length, lk.exclusive))
        state.add_open(op)
        self.users[op.persistent_id] = rec.user
        seqs = rec.extra.get("lock_sequences")
        if isinstance(seqs, dict):
            self.lock_sequences[op.persistent_id] = {int(k): int(v) for k, v in seqs.items()}
        remaining = rec.durable_timeout_ms / 1000 - (now - disconnected)
        self._arm(op, max(0.0, remaining))
        return op

    def record_of(self, op: Open) -> PersistentOpenRecord:
        lease = None
        if op.lease is not None:
            lease = LeaseInfo(
                key=op.lease.key,
                state=op.lease.state,
                epoch=op.lease.epoch,
                version=op.lease.version,
                parent_key=op.lease.parent_key or None,
            )
        locks = []
        if op.node is not None:
            locks = [
                LockRecord(lk.offset, lk.length, lk.exclusive)
                for lk in op.node.locks
                if lk.open is op
            ]
        buckets = self.lock_sequences.get(op.persistent_id, {})
        return PersistentOpenRecord(
            persistent_id=op.persistent_id,
            volatile_id=op.volatile_id,
            create_guid=op.create_guid,
            client_guid=op.client_guid,
            share=op.tree.share.name,
            path=op.smb_path,
            desired_access=op.granted_access,
            share_access=op.share_access,
            create_options=op.create_options,
            file_attributes=0,
            oplock_level=op.oplock_level,
            durable_timeout_ms=op.durable_timeout_ms,
            user=self.users.get(op.persistent_id, ""),
            app_instance_id=op.app_instance_id or None,
            lease=lease,
            locks=locks,
            is_persistent=op.is_persistent,
            disconnected_at=op.disconnected_at,
            # LockSequence buckets go along, so a LOCK replayed after a takeover is
            # recognised as already applied
            extra={"lock_sequences": {str(k): v for k, v in buckets.items()}} if buckets else {},
        )

    async def _put(self, op: Open) -> None:
        if self.store is None or not op.is_persistent or op.closed:
            return
        try:
            await self.store.put(self.record_of(op))
        except StaleEpochError:
            self._fence()
            raise
        self.stored.add(op.persistent_id)
        self.stats.persisted += 1

    async def persist(self, op: Open) -> None:
        """Make `op`'s current state durable; a failure fails the request."""
        try:
            await self._put(op)
        except StoreError as exc:
            log.error("handle store write for %s failed: %s", op.smb_path, exc)
            raise SmbError(Status.INSUFFICIENT_RESOURCES, "handle store unavailable") from exc

    def _fence(self) -> None:
        if not self.fenced.is_set():
            log.critical("another server owns the handle store now (stale epoch): stop serving")
            self.fenced.set()

    # ------------------------------------------------------------ CREATE
    def _wrap_create(self, inner: Handler) -> Handler:
        async def handler(req: Request) -> bytes:
            tree = req.tree
            if tree is None or tree.share.is_ipc or len(req.msg) < 64 + _CREATE.size:
                return await inner(req)
            from hasmb.smb.create import parse_contexts

            fields = _CREATE.unpack_from(req.msg, 64)
            name_off, name_len, ctx_off, ctx_len = fields[11:15]
            contexts = parse_contexts(req, ctx_off, ctx_len)
            d = durable.parse_request(contexts, req.conn.dialect)
            raw_name = req.buffer(name_off, name_len) if name_len and not name_len % 2 else b""
            name = raw_name.decode("utf-16-le", "surrogatepass")
            if d.reconnect:
                return await self.reconnect(req, d, name, contexts)
            req.extra["ca_durable"] = d
            if d.kind == "v2":
                found = await self._replayed_create(req, d, name, contexts)
                if found is not None:
                    return found
            await self._clear_the_way(req, d, name)
            guid = d.create_guid if d.kind == "v2" else b""
            if guid:
                self.pending_creates.add(guid)
            try:
                return await inner(req)
            finally:
                self.pending_creates.discard(guid)

        return handler

    async def _replayed_create(
        self,
        req: Request,
        d: durable.DurableRequest,
        name: str,
        contexts: dict[bytes, CreateContext],
    ) -> bytes | None:
        """3.3.5.9.10: a CREATE whose CreateGuid names an existing open of this client."""
        guid = d.create_guid
        if guid in self.pending_creates:
            raise SmbError(Status.FILE_NOT_AVAILABLE, "original create still running")
        op = self.server.state.by_create_guid.get(guid)
        if op is None or op.closed or op.client_guid != req.conn.client_guid:
            return None
        if not req.header.flags & FLAGS_REPLAY_OPERATION:
            raise SmbError(Status.DUPLICATE_OBJECTID, "CreateGuid in use")
        if op.persistent_id not in self.replay_eligible:
            return None  # the client used the handle already: this is a new open
        lease_ctx = contexts.get(durable.LEASE)
        wants_lease = lease_ctx is not None and req.msg[64 + 3] == OPLOCK_LEVEL_LEASE
        if wants_lease != (op.lease is not None):
            raise SmbError(Status.ACCESS_DENIED, "replay asks for another kind of caching")
        if op.lease is not None and lease_ctx is not None and lease_ctx.data[:16] != op.lease.key:
            raise SmbError(Status.ACCESS_DENIED, "replay with another lease key")
        self.stats.replays += 1
        if op.session is not req.session:
            if op.session is not None:
                # still attached to the old (dead or dying) channel: move it here
                op.session.opens.pop(op.volatile_id, None)
                op.session = None
            await self._reattach(req, op)
        # the reply echoes what this request asked for, capped by what the open holds;
        # the open itself keeps its oplock and share mode
        level = op.oplock_level if op.lease is not None else min(req.msg[64 + 3], op.oplock_level)
        return self._response(req, op, name, with_durable=d, oplock_level=level)

    async def _clear_the_way(self, req: Request, d: durable.DurableRequest, name: str) -> None:
        """What other opens of the same file must give way (or block) before this one."""
        if not self._timers and not (d.kind == "v2" and d.app_instance_id):
            return  # no disconnected open anywhere (each has an armed timer), no AppInstanceId
        tree = req.require_tree()
        try:
            host = paths.resolve(tree.share.root, paths.split_smb_path(name))
            st = os.stat(host)
        except (OSError, SmbError):
            return  # the real open reports what is wrong with the name
        node = self.server.state.files.get((st.st_dev, st.st_ino))
        if node is None:
            return
        for other in list(node.opens):
            if other.closed:
                continue
            if d.kind == "v2" and d.app_instance_id and other.app_instance_id == d.app_instance_id:
                if other.create_guid != d.create_guid:
                    # 3.3.5.9.13: the application moved; its old open goes away
                    log.info("AppInstanceId reuse closes %s", other.smb_path)
                    await self.close(other)
                continue
            if other.session is not None:
                continue
            if other.is_persistent:
                if req.conn.dialect >= DIALECT_300:
                    # 3.3.5.9: reserved for its owner during the reclaim window
                    raise SmbError(Status.FILE_NOT_AVAILABLE, "persistent open awaits reclaim")
                continue
            if other.is_durable:
                log.info("purging disconnected durable open of %s", other.smb_path)
                await self.close(other)

    async def after_create(self, req: Request, p: CreateParams, op: Open) -> None:
        """Grant durability (3.3.5.9.6, 3.3.5.9.10) and store persistent opens."""
        d = req.extra.get("ca_durable")
        if not isinstance(d, durable.DurableRequest) or op.pipe is not None:
            return
        if d.kind not in ("v1", "v2"):
            return
        grant = durable.decide(
            d,
            is_directory=op.is_directory,
            oplock_level=op.oplock_level,
            lease_state=op.lease.state if op.lease is not None else None,
            share_ca=op.tree.share.config.continuously_available,
            persistent_capable=bool(req.conn.server_capabilities & CAP_PERSISTENT_HANDLES),
        )
        if d.kind == "v2":
            # replayable by CreateGuid whether or not durability is granted (as Samba)
            self.actions[op.persistent_id] = int(req.extra.get("create_action", FILE_OPENED))
            self.replay_eligible.add(op.persistent_id)
            op.create_guid = d.create_guid
            op.app_instance_id = d.app_instance_id
            self.server.state.by_create_guid[d.create_guid] = op
        ctx = durable.response_context(d, grant)
        if ctx is None:
            return
        op.is_durable = True
        op.is_persistent = grant.persistent
        op.durable_timeout_ms = grant.timeout_ms
        op.client_guid = req.conn.client_guid
        self.users[op.persistent_id] = req.require_session().user
        if op.is_persistent:
            try:
                await self.persist(op)
            except SmbError:
                await self.close(op)
                raise
        p.response_contexts.append(ctx)

    # ------------------------------------------------------------ reconnect
    async def reconnect(
        self,
        req: Request,
        d: durable.DurableRequest,
        name: str,
        contexts: dict[bytes, CreateContext],
    ) -> bytes:
        """DHnC (3.3.5.9.7) and DH2C (3.3.5.9.12)."""
        state = self.server.state
        tree = req.require_tree()
        session = req.require_session()
        op = state.opens.get(d.persistent_id)
        if (
            op is None
            and d.kind == "reconnect_v2"
            and d.persistent
            and tree.share.config.continuously_available
            and req.conn.server_capabilities & CAP_PERSISTENT_HANDLES
        ):
            op = state.by_create_guid.get(d.create_guid)
        if op is None or op.closed or not op.is_durable or op.pipe is not None:
            raise SmbError(Status.OBJECT_NAME_NOT_FOUND, "no such durable open")
        # a v1 open has no CreateGuid: DH2C names it with a zero one (smb2.durable-open)
        if d.kind == "reconnect_v2" and (op.create_guid or bytes(16)) != d.create_guid:
            raise SmbError(Status.OBJECT_NAME_NOT_FOUND, "CreateGuid differs")
        lease_ctx = contexts.get(durable.LEASE)
        if op.lease is not None:
            if lease_ctx is None or len(lease_ctx.data) < 32:
                raise SmbError(Status.OBJECT_NAME_NOT_FOUND, "lease missing")
            if lease_ctx.data[:16] != op.lease.key or op.lease.client_guid != req.conn.client_guid:
                raise SmbError(Status.OBJECT_NAME_NOT_FOUND, "lease differs")
        elif lease_ctx is not None:
            raise SmbError(Status.OBJECT_NAME_NOT_FOUND, "lease on a reconnect of an oplock open")
        if op.session is not None:
            stale = (
                op.is_persistent
                and op.session.connection is not req.conn
                and op.client_guid == req.conn.client_guid
            )
            if not stale:
                raise SmbError(Status.OBJECT_NAME_NOT_FOUND, "open still connected")
            # the same client on a new connection: the old one is dead but its TCP
            # connection has not timed out yet (a network cut): the handle moves here
            log.info("reclaim of %s moves it off a stale connection", op.smb_path)
            op.session.opens.pop(op.volatile_id, None)
            op.session = None
        if op.tree.share is not tree.share:
            raise SmbError(Status.OBJECT_NAME_NOT_FOUND, "open is on another share")
        if op.lease is not None and name.lower() != op.smb_path.lower():
            raise SmbError(Status.INVALID_PARAMETER, "lease reconnect names another file")
        user = self.users.get(op.persistent_id, "")
        if user and user.lower() != session.user.lower():
            raise SmbError(Status.ACCESS_DENIED, "reconnect by another user")
        await self._reattach(req, op)
        self.stats.reclaims += 1
        log.info("reclaimed %s (%s)", op.smb_path, "persistent" if op.is_persistent else "durable")
        return self._response(req, op, name, with_durable=None)

    async def _reattach(self, req: Request, op: Open) -> None:
        session = req.require_session()
        self._disarm(op)
        _, volatile = self.server.state.new_file_ids()
        op.volatile_id = volatile
        op.session = session
        op.tree = req.require_tree()
        op.disconnected_at = None
        op.client_guid = req.conn.client_guid
        session.opens[volatile] = op
        req.compound.file_id = op.file_id
        try:
            await self.persist(op)
        except SmbError:
            op.session = None
            session.opens.pop(volatile, None)
            op.disconnected_at = time.time()
            self._arm(op, op.durable_timeout_ms / 1000)
            raise

    def _response(
        self,
        req: Request,
        op: Open,
        name: str,
        with_durable: durable.DurableRequest | None,
        oplock_level: int | None = None,
    ) -> bytes:
        from hasmb.smb import create, oplock

        p = create.CreateParams(
            name=name,
            desired_access=0,
            file_attributes=0,
            share_access=0,
            disposition=0,
            options=0,
            oplock_level=0,
        )
        level = op.oplock_level if oplock_level is None else oplock_level
        if with_durable is not None:
            grant = durable.decide(
                with_durable,
                is_directory=op.is_directory,
                oplock_level=level,
                lease_state=op.lease.state if op.lease is not None else None,
                share_ca=op.is_persistent,
                persistent_capable=op.is_persistent,
            )
            ctx = durable.response_context(with_durable, grant)
            if ctx is not None:
                p.response_contexts.append(ctx)
        if op.lease is not None:
            p.response_contexts.append((durable.LEASE, oplock.lease_response(op.lease)))
        action = self.actions.get(op.persistent_id, FILE_OPENED) if with_durable else FILE_OPENED
        saved, op.oplock_level = op.oplock_level, level
        try:
            return create._create_response(op, p, action)
        finally:
            op.oplock_level = saved

    # ------------------------------------------------------------ disconnect, expiry, close
    def qualifies(self, op: Open) -> bool:
        """3.3.7.1: which opens outlive their connection."""
        if op.closed or op.pipe is not None or op.is_directory:
            return False
        if op.is_persistent or (op.is_durable and op.resilient_timeout_ms):
            return True
        if not op.is_durable:
            return False
        if op.lease is not None:
            return bool(op.lease.state & LEASE_HANDLE) and not op.lease.breaking
        return op.oplock_level == OPLOCK_LEVEL_BATCH and not op.oplock_breaking

    async def preserve(self, op: Open) -> bool:
        """Called for every open of a session lost with its connection; True = kept."""
        if not self.qualifies(op):
            return False
        if op.session is not None:
            op.session.opens.pop(op.volatile_id, None)
        op.session = None
        op.disconnected_at = time.time()
        timeout = op.durable_timeout_ms or op.resilient_timeout_ms or durable.DEFAULT_TIMEOUT_MS
        self._arm(op, timeout / 1000)
        if op.is_persistent:
            with contextlib.suppress(StoreError):
                await self._put(op)
        log.info("keeping disconnected open %s for %.0f s", op.smb_path, timeout / 1000)
        return True

    def _arm(self, op: Open, delay: float) -> None:
        self._disarm(op)
        loop = asyncio.get_running_loop()
        self._timers[op.persistent_id] = loop.call_later(delay, self._expire_soon, op)

    def _disarm(self, op: Open) -> None:
        timer = self._timers.pop(op.persistent_id, None)
        if timer is not None:
            timer.cancel()

    def _expire_soon(self, op: Open) -> None:
        self._timers.pop(op.persistent_id, None)
        task = asyncio.get_running_loop().create_task(self._expire(op))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _expire(self, op: Open) -> None:
        if op.closed or op.session is not None:
            return
        log.info("reclaim window of %s expired; closing it", op.smb_path)
        self.stats.expired += 1
        try:
            await self.close(op)
        except StoreError as exc:
            log.error("expiry of %s not stored: %s", op.smb_path, exc)

    async def close(self, op: Open) -> None:
        from hasmb.smb.create import close_open

        await close_open(self.server, op)

    async def on_closed(self, op: Open) -> None:
        """From close_open: the open is gone; forget it and delete its record."""
        self._disarm(op)
        self.users.pop(op.persistent_id, None)
        self.actions.pop(op.persistent_id, None)
        self.replay_eligible.discard(op.persistent_id)
        self.lock_sequences.pop(op.persistent_id, None)
        self.seqs.pre_requests.pop(op.persistent_id, None)
        if op.create_guid and self.server.state.by_create_guid.get(op.create_guid) is op:
            del self.server.state.by_create_guid[op.create_guid]
        if op.persistent_id in self.stored and self.store is not None:
            self.stored.discard(op.persistent_id)
            # never raise: close_open still has locks to release and files to delete
            try:
                await self.store.delete(op.persistent_id)
            except StaleEpochError:
                self._fence()
            except StoreError as exc:
                # the record outlives the open: a later owner holds the file for one
                # window, then expires it
                log.error("handle store: deleting %s failed: %s", op.smb_path, exc)

    async def shutdown(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()

    # ------------------------------------------------------------ locks and leases
    def _wrap_persisting(self, inner: Handler) -> Handler:
        """LOCK: LockSequence replay detection (3.3.5.14) for durable, resilient and
        persistent opens; the new lock set of a persistent open is stored before the reply."""

        async def handler(req: Request) -> bytes:
            bucket = self._lock_bucket(req)
            if bucket is not None:
                op, index, number = bucket
                buckets = self.lock_sequences.setdefault(op.persistent_id, {})
                if buckets.get(index) == number:
                    return struct.pack("<HH", 4, 0)  # a replay of a lock already applied
                buckets.pop(index, None)
            body = await inner(req)
            if bucket is not None:
                self.lock_sequences.setdefault(bucket[0].persistent_id, {})[bucket[1]] = bucket[2]
            done = self._open_of_compound(req)
            if done is not None and done.is_persistent and not done.closed:
                await self.persist(done)
            return body

        return handler

    def _lock_bucket(self, req: Request) -> tuple[Open, int, int] | None:
        if req.conn.dialect < 0x0210 or len(req.msg) < 64 + 24:
            return None
        seq, fid = struct.unpack_from("<I16s", req.msg, 64 + 4)
        # LockSequenceNumber is the low 4 bits, LockSequenceIndex the 28 above (as
        # Windows and Samba read 2.2.26)
        index, number = seq >> 4, seq & 0xF
        if not 1 <= index <= 64:
            return None
        if fid == b"\xff" * 16:
            fid = req.compound.file_id
        op = self.server.state.opens.get(int.from_bytes(fid[:8], "little")) if fid else None
        if op is None or op.closed or op.volatile_id != int.from_bytes(fid[8:16], "little"):
            return None
        eligible = op.resilient_timeout_ms > 0 or (
            req.conn.dialect >= DIALECT_300 and (op.is_durable or op.is_persistent)
        )
        return (op, index, number) if eligible else None

    def _wrap_break(self, inner: Handler) -> Handler:
        """OPLOCK_BREAK acknowledgments change what persistent opens hold."""

        async def handler(req: Request) -> bytes:
            body = await inner(req)
            ops: list[Open] = []
            size = int.from_bytes(req.msg[64:66], "little")
            if size == 36 and len(req.msg) >= 64 + 24:
                key = req.msg[64 + 8 : 64 + 24]
                lease = self.server.state.leases.get((req.conn.client_guid, key))
                if lease is not None:
                    ops = list(lease.opens)
            else:
                op = self._open_of_compound(req)
                if op is not None:
                    ops = [op]
            for op in ops:
                if op.is_persistent and not op.closed:
                    await self.persist(op)
            return body

        return handler

    def _wrap_use(self, inner: Handler) -> Handler:
        """Any request on an open ends the replay eligibility of its CREATE."""

        async def handler(req: Request) -> bytes:
            try:
                return await inner(req)
            finally:
                if self.replay_eligible and len(req.compound.file_id) == 16:
                    pid = int.from_bytes(req.compound.file_id[:8], "little")
                    self.replay_eligible.discard(pid)

        return handler

    def _open_of_compound(self, req: Request) -> Open | None:
        fid = req.compound.file_id
        if len(fid) != 16:
            return None
        op = self.server.state.opens.get(int.from_bytes(fid[:8], "little"))
        if op is None or op.volatile_id != int.from_bytes(fid[8:], "little"):
            return None
        return op


async def own_store(
    server: SmbServer, spec: str, *, owner: str, epoch: int | None = None
) -> HandleStore:
    """Open the store `spec` names, take ownership (raising the epoch) and adopt its
    persistent opens; the server must not answer clients before this returns."""
    from hasmb.handles import open_store

    store = open_store(spec)
    try:
        got = await store.take_ownership(owner, epoch)
        records = await store.load_all()
        await server.ca.attach(store, records)
    except BaseException:
        await store.close()
        raise
    log.info("handle store %s owned at epoch %d (%d persistent opens)", spec, got, len(records))
    return store
