"""The pair channel: the partner confirms, directly and without the API server, that
it will not take over -- the grant the owner's fence (hasmb.smb.fence) lives on.

Newline-delimited JSON over one TCP connection that the owner opens to its
partner's pair port:

    owner   -> {"ping": SEQ, "node": NODE, "epoch": E, "solo": false}
    partner -> {"seq": SEQ, "ok": true, "valid": C}   or   {"seq": SEQ, "ok": false, "why": ...}
    owner   -> {"release": E, "node": NODE}            (fence revoked, mutations drained)
    partner -> {"released": E}

The promise (MS-SWN knows nothing of this; it is Patroni's failsafe idea with
leases judged on local clocks): a partner that confirmed a ping it received at
local time r takes no ownership before r + C on its own clock. The owner counts
the grant from the moment it *sent* the ping (c <= r), less a margin, so its
authority always ends first, whatever the delays, and a grant that arrives after
a freeze is already expired. A process binds the pair port only at start and
treats itself as having promised C from then (a predecessor in the same pod may
have promised before it died).

`solo` tells the partner whether the owner's authority comes from the partner
alone (false) or from something else as well (true: a standalone owner before its
first confirmation). A partner takes over on a lapsed promise only from an owner
that said solo=false; in pods the Lease carries the other source of authority
(`hasmb.io/fencing`, hasmb.podrt.lease).

Who may talk: the partner accepts pings and releases only from the address it
expects the owner at (the holder's pod IP); a forged release would let it take
over early, so until the pair channel is authenticated (issue 13) this rests on
the pod network not letting one pod spoof another's source address.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hasmb.smb.fence import Fence, now
from hasmb.tasks import cancel_and_wait

log = logging.getLogger("hasmb.smb.pair")

CONFIRM_SECONDS = 2.0  # C: how long one confirmation keeps the owner serving
PING_INTERVAL = 0.25
ARM_PING_INTERVAL = 0.05  # before the first confirmation (an owner about to arm on it)
SOLO_AFTER = 0.75  # no confirmation for this long: the owner turns to its other source
MARGIN = 0.05  # the owner's grant ends this much before the partner's promise
MAX_LINE = 4096
CONFIRMED = "partner confirms"


class Probe(StrEnum):
    ALIVE = "alive"  # accepted: a process listens (it may still be frozen)
    DEAD = "dead"  # refused or reset: provably no process listening
    SILENT = "silent"  # no answer: dead or cut off, cannot tell


async def probe(host: str, port: int, limit: float) -> Probe:
    """Is anything listening at host:port? Only a refusal proves anything."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), limit)
    except (ConnectionRefusedError, ConnectionResetError):
        return Probe.DEAD
    except (OSError, TimeoutError):
        return Probe.SILENT
    writer.transport.abort()
    return Probe.ALIVE


@dataclass(eq=False)
class PairServer:
    """The partner's side: confirm the owner, and remember the promise."""

    may_confirm: Callable[[str, int], str | None]  # (node, epoch) -> None, or why not
    peer_allowed: Callable[[str], bool]  # source address -> may it ping / release?
    confirm_seconds: float = CONFIRM_SECONDS
    promise_until: float = 0.0
    promised_to: tuple[str, int] | None = None  # (node, epoch) of the last confirmed ping
    owner_solo: bool = True  # the last ping's solo flag
    released: tuple[str, int] | None = None
    denying: str = ""  # set while deciding or after taking over: confirm nothing
    # the last release the owner itself sent (`released` is also set by a standby that
    # saw the owner's port refuse): proof that the previous owner is alive, a standby
    # by now, and will confirm its successor
    release_received: tuple[str, int] | None = None
    confirms: int = 0
    denials: int = 0
    last_ping: float = 0.0
    _release_seen: asyncio.Event = field(default_factory=asyncio.Event)
    _listener: asyncio.AbstractServer | None = None
    _conns: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self, host: str, port: int) -> int:
        self._listener = await asyncio.start_server(
            self._serve, host, port, reuse_address=True, limit=MAX_LINE
        )
        # a predecessor (this pod's container before a restart) may have promised
        self.promise_until = now() + self.confirm_seconds
        bound: int = self._listener.sockets[0].getsockname()[1]
        log.info("pair channel on %s:%d", host, bound)
        return bound

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
        for w in list(self._conns):
            w.transport.abort()

    # ------------------------------------------------------------ decisions
    def lapsed(self) -> bool:
        return now() >= self.promise_until

    def deny(self, why: str) -> None:
        self.denying = why

    def allow(self) -> None:
        self.denying = ""

    def released_by(self, node: str | None, epoch: int) -> bool:
        return self.released is not None and self.released == (node, epoch)

    def clear_of(self, node: str | None, epoch: int) -> str | None:
        """Why taking over from (node, epoch) cannot hurt it, or None while it may write."""
        if self.released_by(node, epoch):
            return "it released ownership"
        if self.lapsed():
            return "its confirmation expired"
        return None

    async def wait_clear(self, node: str | None, epoch: int, limit: float | None = None) -> str:
        """Deny from now on and wait until the promise to (node, epoch) cannot matter."""
        self.deny(f"taking over from {node}")
        # denying, the promise can only run out: wait for its end or for a release
        if self.clear_of(node, epoch) is None:
            self._release_seen.clear()
            left = self.promise_until - now()
            if limit is not None:
                left = min(left, limit)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release_seen.wait(), max(0.0, left) + 0.001)
        return self.clear_of(node, epoch) or "its confirmation expired"

    # ------------------------------------------------------------ wire
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        ip = str(peer[0]) if peer else ""
        if not self.peer_allowed(ip):
            log.warning("pair channel: refusing %s (not the owner's address)", ip)
            writer.transport.abort()
            return
        self._conns.add(writer)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                try:
                    msg = json.loads(line)
                except ValueError:
                    log.warning("pair channel: malformed message from %s", ip)
                    return
                if not isinstance(msg, dict):
                    return
                reply = self._answer(msg, ip)
                if reply is None:
                    return
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (OSError, asyncio.LimitOverrunError, ValueError):
            return
        finally:
            self._conns.discard(writer)
            writer.transport.abort()

    def _answer(self, msg: dict[str, Any], ip: str) -> dict[str, Any] | None:
        received = now()
        node, epoch = msg.get("node"), msg.get("epoch", msg.get("release"))
        if not isinstance(node, str) or not isinstance(epoch, int):
            return None
        if "release" in msg:
            self.released = self.release_received = (node, epoch)
            self._release_seen.set()
            log.info("pair channel: %s released ownership at epoch %d", node, epoch)
            return {"released": epoch}
        seq = msg.get("ping")
        if not isinstance(seq, int):
            return None
        if not self.peer_allowed(ip):  # the owner moved since this connection opened
            return {"seq": seq, "ok": False, "why": f"{ip} is not the owner's address"}
        why = self.denying or self.may_confirm(node, epoch)
        if why:
            self.denials += 1
            return {"seq": seq, "ok": False, "why": why}
        self.promise_until = max(self.promise_until, received + self.confirm_seconds)
        self.promised_to = (node, epoch)
        self.owner_solo = bool(msg.get("solo", False))
        self.last_ping = received
        self.confirms += 1
        return {"seq": seq, "ok": True, "valid": self.confirm_seconds}

    def status(self) -> dict[str, object]:
        return {
            "promisedTo": list(self.promised_to) if self.promised_to else None,
            "promiseSeconds": round(max(0.0, self.promise_until - now()), 3),
            "denying": self.denying,
            "confirms": self.confirms,
            "denials": self.denials,
        }


@dataclass(eq=False)
class PairClient:
    """The owner's side: ping the partner and turn its confirmations into fence grants."""

    fence: Fence
    node: str
    epoch: int
    address: Callable[[], tuple[str, int] | None]
    # Standalone only: a refused connection proves no partner process listens (one
    # that binds later promises from then), so it grants as a confirmation would. In
    # pods the partner's address changes with its pod, and the Lease is the fallback.
    refusal_grants: bool = False
    solo: Callable[[], bool] = lambda: False
    # the address to connect from: the partner checks the source (the pod IP)
    local_host: str | None = None
    interval: float = PING_INTERVAL
    solo_after: float = SOLO_AFTER
    confirmed_at: float = 0.0  # send time of the last confirmed (or refused) ping
    last_why: str = ""
    grants: int = 0
    first_grant: asyncio.Event = field(default_factory=asyncio.Event)
    unconfirmed: asyncio.Event = field(default_factory=asyncio.Event)
    on_grant: Callable[[float], None] | None = None  # called with the grant's deadline
    # Confirmations that came before the fence held (an owner about to arm from its
    # partner, hasmb.podrt.runtime): the deadline the first hold may use.
    pending_until: float = -math.inf
    _seq: int = 0
    _stopping: bool = False
    _conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    _conn_to: tuple[str, int] | None = None
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self._stopping = True
        await cancel_and_wait(self._task)
        self._close()

    def confirmed(self) -> bool:
        """A confirmation came for a ping sent within `solo_after`."""
        return now() - self.confirmed_at < self.solo_after

    async def release(self, limit: float = 1.0) -> bool:
        """Tell the partner this owner stopped mutating (call after revoke + quiesce)."""
        self._stopping = True
        await cancel_and_wait(self._task)
        try:
            async with asyncio.timeout(limit):
                r, w = await self._connect()
                w.write(json.dumps({"release": self.epoch, "node": self.node}).encode() + b"\n")
                await w.drain()
                while True:
                    line = await r.readline()
                    if not line:
                        return False
                    if json.loads(line).get("released") == self.epoch:
                        return True
        except (OSError, TimeoutError, ValueError, AttributeError):
            return False
        finally:
            self._close()

    async def _run(self) -> None:
        while not self._stopping:
            started = now()
            try:
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow the
                # cancellation of stop() when the ping completes at the same moment
                async with asyncio.timeout(max(self.interval * 2, 0.5)):
                    await self.ping_once()
            except (OSError, TimeoutError, ValueError) as exc:
                self.last_why = f"{type(exc).__name__}: {exc}"
                self._close()
            if not self.confirmed():
                self.unconfirmed.set()
            # until the first confirmation the owner is waiting to arm on it
            pause = self.interval if self.first_grant.is_set() else ARM_PING_INTERVAL
            await asyncio.sleep(max(0.0, pause - (now() - started)))

    async def ping_once(self) -> bool:
        sent = now()
        try:
            r, w = await self._connect()
        except ConnectionRefusedError:
            if self.refusal_grants:
                self._grant(sent, "partner refuses: no partner process")
                return True
            raise
        self._seq += 1
        seq = self._seq
        msg = {"ping": seq, "node": self.node, "epoch": self.epoch, "solo": self.solo()}
        w.write(json.dumps(msg).encode() + b"\n")
        await w.drain()
        while True:
            line = await r.readline()
            if not line:
                raise ConnectionResetError("partner closed the pair channel")
            reply = json.loads(line)
            if reply.get("seq") != seq:
                continue  # an answer to a ping that timed out
            if reply.get("ok"):
                self._grant(sent, CONFIRMED, float(reply.get("valid", 0.0)))
                return True
            self.last_why = str(reply.get("why", "denied"))
            return False

    def _grant(self, sent: float, source: str, valid: float = CONFIRM_SECONDS) -> None:
        until = sent + min(valid, CONFIRM_SECONDS) - MARGIN
        if not self.fence.holding:
            if source == CONFIRMED and not self._stopping:
                self.pending_until = max(self.pending_until, until)
                self.confirmed_at = max(self.confirmed_at, sent)
                self.unconfirmed.clear()
                self.first_grant.set()
            return
        if math.isinf(self.fence.deadline):
            if source != CONFIRMED:
                return  # a lone owner stays one until its partner first confirms it
            self.fence.narrow(until, source)
        if self.fence.grant(until, source):
            self.confirmed_at = max(self.confirmed_at, sent)
            self.unconfirmed.clear()
            self.grants += 1
            self.first_grant.set()
            if self.on_grant is not None:
                self.on_grant(until)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        target = self.address()
        if target is None:
            raise ConnectionError("no partner address")
        if self._conn is not None and self._conn_to == target and not self._conn[1].is_closing():
            return self._conn
        self._close()
        async with asyncio.timeout(self.interval * 2):
            local = (self.local_host, 0) if self.local_host else None
            r, w = await asyncio.open_connection(*target, limit=MAX_LINE, local_addr=local)
        self._conn, self._conn_to = (r, w), target
        return r, w

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn[1].transport.abort()
        self._conn = None

    def status(self) -> dict[str, object]:
        return {
            "confirmed": self.confirmed(),
            "sinceConfirmation": round(now() - self.confirmed_at, 3) if self.confirmed_at else None,
            "grants": self.grants,
            "lastProblem": self.last_why,
        }
