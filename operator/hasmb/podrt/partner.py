"""The standby pod watches its owner pod directly and takes the Lease when the owner dies.

../shared/DESIGN.md: the partner pod watches its peer (heartbeat connection) and the
operator watches pod status; whichever sees the death first drives the takeover, and
the epoch (a CAS on the Lease) makes a double takeover harmless.

Every `interval` the standby opens a TCP connection to the owner pod's SMB port:

- accepted: the owner's process listens (alive);
- refused or reset: nothing listens on that address (kill -9, container exit,
  self-fenced, SIGTERM drain): the owner cannot be serving, so the standby takes the
  Lease at once (holder = its node, epoch + 1, reason PartnerFailover);
- no answer (timeout, unreachable): the owner may be alive behind a partition and
  still serving; the standby takes the Lease only once no renewal has been seen for
  the whole duration on its own monotonic clock (LeaseWatch.expired_locally), when the
  isolated owner has fenced itself (at 2/3 of the duration after its last renewal).

A holder never seen accepting at its current address is starting (its pod has an IP
before its process listens), not dead: a refusal from it counts as no answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from hasmb.contract import Reason
from hasmb.handles import StoreError
from hasmb.handles.kube_api import KubeApiError
from hasmb.podrt.lease import LeaseWatch, take_lease
from hasmb.podrt.peers import PeerWatch
from hasmb.smb.pair import PairServer, Probe, probe

log = logging.getLogger("hasmb.podrt.partner")


@dataclass(eq=False)
class PartnerWatch:
    lease: LeaseWatch
    peers: PeerWatch
    node: str  # this pod's node
    port: int  # the SMB port both pods listen on
    is_standby: Callable[[], bool]
    interval: float = 0.25
    timeout: float = 1.0
    # The pair channel's partner side (hasmb.smb.pair). With it, the owner's silence
    # counts once the promise this pod gave ran out and no Lease write that granted
    # the owner authority by itself was seen for a duration; without it (tests of the
    # old rule), once the Lease expired on this pod's clock.
    pair: PairServer | None = None
    takeovers: int = 0
    _seen_alive: tuple[str, str] | None = None  # (holder, IP) that once accepted

    async def run(self) -> None:
        while True:
            with contextlib.suppress(StoreError, TimeoutError):
                await self.check_once()
            await asyncio.sleep(self.interval)

    async def check_once(self) -> bool:
        """One heartbeat; True when this pod took the Lease."""
        seen = self.lease.current
        if seen is None or not seen.holder or seen.holder == self.node or not self.is_standby():
            return False
        ip = self.peers.addresses.get(seen.holder)
        if ip is None:
            return False  # the owner's pod is gone or has no IP: the operator decides
        result = await probe(ip, self.port, self.timeout)
        if result is Probe.ALIVE and self._seen_alive != (seen.holder, ip):
            log.info("heartbeat: owner %s at %s accepts connections", seen.holder, ip)
            self._seen_alive = (seen.holder, ip)
        if result is Probe.DEAD and self._seen_alive != (seen.holder, ip):
            result = Probe.SILENT
        pair = self.pair
        if result is Probe.DEAD:
            why = "refuses connections"
        elif pair is not None and pair.released_by(seen.holder, seen.epoch):
            why = "released ownership"
        elif pair is not None:
            # accepting proves nothing either: a frozen process's kernel accepts
            if not (pair.lapsed() and self.lease.grant_lapsed()):
                return False
            why = "stopped pinging, and its confirmation and lease grant ran out"
        elif result is Probe.ALIVE or not self.lease.expired_locally():
            return False
        else:
            why = f"unreachable and its lease expired ({seen.duration:g} s)"
        if self.lease.current != seen:
            return False  # the Lease moved or was renewed meanwhile: look again
        if pair is not None:
            pair.deny(f"taking the lease from {seen.holder}")
            if result is Probe.DEAD:
                pair.released = (seen.holder, seen.epoch)  # nothing left to protect
            elif pair.clear_of(seen.holder, seen.epoch) is None:
                pair.allow()  # a ping was confirmed meanwhile
                return False
        try:
            view = await take_lease(self.lease, seen, self.node, Reason.PARTNER_FAILOVER)
        except KubeApiError as exc:
            if pair is not None:
                pair.allow()
            if exc.status == 409:
                log.info("owner %s %s, but the lease changed meanwhile", seen.holder, why)
                return False
            raise
        except BaseException:
            if pair is not None:
                pair.allow()
            raise
        self.takeovers += 1
        log.warning(
            "owner %s at %s %s: took the lease at epoch %d", seen.holder, ip, why, view.epoch
        )
        return True
