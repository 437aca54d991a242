"""Indirect access and standby takeover: a hasmb-smbd that does not own the SVM.

While another server owns the handle-state store, this one
- keeps a warm copy of the store (`StoreFollower`), so a takeover needs no cold load;
- relays every SMB connection arriving on its listen address to the owner
  (`--forward-to HOST:PORT`), byte for byte, as ONTAP forwards over its cluster
  interconnect (indirect access);
- watches the owner: a heartbeat TCP connect every `heartbeat_interval`, and,
  with a pair channel (`pair`, hasmb.smb.pair), the owner's pings.

It takes over when told (SIGUSR1, or POST /takeover on the admin endpoint), when
the owner refuses `heartbeat_misses` heartbeats in a row (no process listens:
it cannot write either), when the owner released ownership over the pair
channel, or when an owner whose authority comes from this standby alone
(pings with solo=false) stopped being confirmed and the promise ran out. Silence
alone proves nothing (a frozen owner's kernel still accepts connections; a cut
off one may still be serving) and never triggers a takeover. A takeover that is
not proven safe (a request, an owner that stopped pinging) first waits until the
promise to the owner ran out (hasmb.smb.fence: the owner stopped mutating by
then). Then it raises the
store's epoch (fencing the old owner's writes), waits until its follower has
everything written under the older epochs, adopts those persistent opens as
disconnected (each with its remaining reclaim window), breaks the forwarded
connections and serves locally from then on. Clients reconnect to the same
address and reclaim their handles with DH2C.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from hasmb.handles import HandleStore, StoreError, StoreFollower
from hasmb.smb.pair import PairServer, Probe, probe

if TYPE_CHECKING:
    from hasmb.smb.server import SmbServer

log = logging.getLogger("hasmb.smb.forward")

Role = Literal["standby", "taking-over", "owner"]


@dataclass(eq=False)
class Relay:
    """One forwarded client connection."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    task: asyncio.Task[None] | None = None

    def close(self) -> None:
        for w in (self.client, self.upstream):
            if w is not None:
                with contextlib.suppress(Exception):
                    w.transport.abort()


@dataclass(eq=False)
class Standby:
    server: SmbServer
    store: HandleStore
    owner_name: str
    forward_to: tuple[str, int] | None = None
    epoch: int | None = None  # ownerEpoch from the cluster; None = current + 1
    heartbeat_interval: float = 0.5
    heartbeat_misses: int = 3
    auto_takeover: bool = True
    # the partner side of the pair channel (promises to the owner), when configured
    pair: PairServer | None = None
    # arms the fence once the store is taken (before anything is served); None: a
    # lone owner with nothing to fence it (standalone without a partner)
    arm: Callable[[], Awaitable[None]] | None = None
    extra_status: Callable[[], dict[str, object]] | None = None  # merged into /status
    role: Role = "standby"
    relays: set[Relay] = field(default_factory=set)
    taken_over: asyncio.Event = field(default_factory=asyncio.Event)
    takeover_seconds: float = 0.0
    last_accept: float = 0.0  # loop time of the last connection accepted
    # /healthz says not ready until then (a pod that self-fenced in place)
    unready_until: float = 0.0
    _follower: StoreFollower | None = None
    _listener: asyncio.AbstractServer | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    # ------------------------------------------------------------ lifecycle
    async def start(self, host: str, port: int) -> int:
        from hasmb.smb.fileinfo import filetime_now
        from hasmb.smb.server import MAX_PDU

        self.server.fence.revoke("standby: another server owns the volume")
        self._follower = StoreFollower(self.store, retry_delay=0.2)
        self._follower.start()
        self.server.start_time = filetime_now()
        # one listener for both roles: relay while standby, serve once owner
        self._listener = await asyncio.start_server(
            self._accept, host, port, reuse_address=True, limit=MAX_PDU
        )
        bound: int = self._listener.sockets[0].getsockname()[1]
        log.info(
            "hasmb-smbd listening on %s:%d (standby%s)",
            host,
            bound,
            f", forwarding to {self.forward_to[0]}:{self.forward_to[1]}" if self.forward_to else "",
        )
        if self.forward_to is not None and self.auto_takeover:
            self._spawn(self._watch_owner())
        return bound

    def listening(self) -> bool:
        return self._listener is not None and self._listener.is_serving()

    def recovering(self) -> bool:
        """Still inside unready_until (time.monotonic()): see hasmb.podrt.runtime."""
        return time.monotonic() < self.unready_until

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for r in list(self.relays):
            r.close()
        if self._listener is not None:
            self._listener.close()
        if self._follower is not None:
            await self._follower.stop()

    def _spawn(self, coro: object) -> None:
        assert asyncio.iscoroutine(coro)
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def request_takeover(self, reason: str, epoch: int | None = None) -> None:
        """Take over in the background (once the owner cannot be writing any more);
        `epoch` (from the cluster's ownership record) replaces the configured one."""
        if self.role == "standby":
            if epoch is not None:
                self.epoch = epoch
            self._spawn(self.take_over(reason, proven=False))

    # ------------------------------------------------------------ connections
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.last_accept = asyncio.get_running_loop().time()
        if self.role == "owner":
            await self.server._accept(reader, writer)  # the server's own entry point
            return
        if self.forward_to is None or self.role == "taking-over":
            writer.transport.abort()  # nothing to serve yet: the client retries
            return
        await self._relay(reader, writer)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self.forward_to is not None
        relay = Relay(writer)
        self.relays.add(relay)
        try:
            try:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection(*self.forward_to), timeout=2.0
                )
            except (OSError, TimeoutError):
                log.warning("owner %s:%d unreachable; dropping a client", *self.forward_to)
                if self.auto_takeover:
                    self._spawn(self._check_owner_now())
                return
            relay.upstream = up_writer
            for w in (writer, up_writer):
                _nodelay(w)
            await asyncio.gather(
                _pump(reader, up_writer), _pump(up_reader, writer), return_exceptions=True
            )
        finally:
            self.relays.discard(relay)
            relay.close()

    # ------------------------------------------------------------ failure detection
    async def _probe_owner(self) -> Probe:
        assert self.forward_to is not None
        return await probe(*self.forward_to, 1.0)

    def _pair_says(self) -> str | None:
        """Why the pair channel lets this standby take over, or None."""
        pair = self.pair
        if pair is None or pair.promised_to is None:
            return None
        node, epoch = pair.promised_to
        if pair.released_by(node, epoch):
            return "the owner released ownership"
        if not pair.owner_solo and pair.lapsed():
            return "the owner stopped pinging and its confirmation expired"
        return None

    async def _watch_owner(self) -> None:
        refused = 0
        seen_alive = False
        while self.role == "standby":
            why = self._pair_says()
            if why is not None:
                # not `proven`: a ping may be confirmed before the takeover starts
                await self.take_over(why)
                return
            result = await self._probe_owner()
            if result is Probe.ALIVE:
                seen_alive, refused = True, 0
            elif result is Probe.DEAD and seen_alive:
                refused += 1
                log.warning("owner refused heartbeat %d/%d", refused, self.heartbeat_misses)
                if refused >= self.heartbeat_misses:
                    await self.take_over("owner refuses connections", proven=True)
                    return
            await asyncio.sleep(self.heartbeat_interval)

    async def _check_owner_now(self) -> None:
        for _ in range(self.heartbeat_misses):
            if await self._probe_owner() is not Probe.DEAD:
                return
            await asyncio.sleep(self.heartbeat_interval / 2)
        await self.take_over("owner refuses connections from a forwarded client", proven=True)

    # ------------------------------------------------------------ takeover
    async def take_over(self, reason: str, proven: bool = False) -> None:
        """`proven`: no process listens where the owner was (it cannot write); otherwise
        stop confirming and wait until the promise given to the owner ran out, or it
        released ownership."""
        async with self._lock:
            if self.role != "standby":
                return
            started = time.monotonic()
            self.role = "taking-over"
            log.warning("taking over (%s)", reason)
            if self.pair is not None:
                node, epoch = self.pair.promised_to or (None, 0)
                if proven:
                    self.pair.deny("taking over")
                else:
                    how = await self.pair.wait_clear(node, epoch)
                    log.info("the old owner cannot write any more: %s", how)
            # stop forwarding at once: clients reconnect here and find us serving
            for r in list(self.relays):
                r.close()
            try:
                epoch = await self.store.take_ownership(self.owner_name, self.epoch)
            except StoreError as exc:
                # e.g. the store is already at or past the epoch we were given: someone
                # else owns it; stay a standby (clients retry through us)
                log.error("takeover failed, staying standby: %s", exc)
                self.role = "standby"
                if self.pair is not None:
                    self.pair.allow()
                if self.forward_to is not None and self.auto_takeover:
                    self._spawn(self._watch_owner())
                return
            assert self._follower is not None
            try:
                async with asyncio.timeout(10):
                    await self._follower.wait_epoch(epoch)
                records = list(self._follower.mirror.records.values())
            except TimeoutError:
                log.warning("follower did not reach epoch %d; loading the store cold", epoch)
                records = await self.store.load_all()
            await self._follower.stop()
            await self.server.ca.attach(self.store, records)
            if self.arm is not None:
                await self.arm()
            else:
                self.server.fence.unconditional("took over; no partner configured")
            self.role = "owner"
            self.takeover_seconds = time.monotonic() - started
            self.taken_over.set()
            log.warning(
                "took over at epoch %d in %.3f s: %d persistent open(s) awaiting reclaim",
                epoch,
                self.takeover_seconds,
                len(records),
            )

    def status(self) -> dict[str, object]:
        return {
            "role": self.role,
            "forwardTo": f"{self.forward_to[0]}:{self.forward_to[1]}" if self.forward_to else "",
            "forwarded": len(self.relays),
            "followerSynced": bool(self._follower and self._follower.mirror.synced),
            "mirroredOpens": len(self._follower.mirror.records) if self._follower else 0,
            "takeoverSeconds": self.takeover_seconds,
            **({"pair": self.pair.status()} if self.pair is not None else {}),
            **(self.extra_status() if self.extra_status is not None else {}),
        }


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await src.read(256 * 1024)
            if not data:
                break
            dst.write(data)
            await dst.drain()
    finally:
        with contextlib.suppress(Exception):
            dst.transport.abort()
