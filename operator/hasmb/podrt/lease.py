"""The SVM's ownership Lease as hasmb-smbd sees it: watch it, renew it, fence on it.

The operator writes holderIdentity (the owner node) and the annotation
hasmb.io/epoch with a resourceVersion CAS (docs/operator.md). The pod on the
holder node renews spec.renewTime -- a merge patch carrying the
resourceVersion it last saw, so the apiserver refuses it (409) when anyone
changed the Lease in between, and holder and epoch are never touched. Every
write is built by hasmb.contract (the format the operator reads).

Self-fencing (Patroni-style): the renewal deadline is judged on the local
monotonic clock from the moment the last successful renewal was *sent* (its
renewTime is no earlier than that). The operator waits for renewTime +
leaseDurationSeconds before it takes a possibly-alive holder's SVM away, so a
holder that has not renewed for `fence_fraction` of the duration stops serving
with (1 - fence_fraction) of it to spare for closing connections and clock skew.

With a fence (hasmb.smb.fence), every renewal says where the owner's authority
comes from, in the annotation hasmb.io/fencing: `lease` -- the renewal grants the
owner `fence_fraction` of the duration from its send time, and a partner waits
that long plus GRANT_MARGIN after it saw the renewal; or `partner` -- the owner
serves on its partner's confirmations (hasmb.smb.pair) and the renewal grants
nothing, so the partner may take over as soon as its own promise ran out and the
last `lease` renewal's grant ran out on its clock. A write that changes holder or
epoch grants nothing: the new holder's authority starts with its own first renewal
(or its partner's confirmation); until that renewal is seen, it is given TERM_GRACE
to arm. Seeing a renewal is enough to bound its grant
because the takeover is a CAS on the resourceVersion the partner saw: a renewal it
did not see makes the takeover fail with 409, and one it saw was sent before it saw
it. docs/continuous-availability.md "Fencing".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hasmb import contract
from hasmb.contract import Fencing, read_ownership
from hasmb.handles import StoreError
from hasmb.handles.kube_api import KubeApi, KubeApiError
from hasmb.smb import fence as fence_clock
from hasmb.smb.fence import Fence
from hasmb.tasks import cancel_and_wait

log = logging.getLogger("hasmb.podrt.lease")

# A `lease` renewal grants the owner this fraction of the duration from its send time.
LEASE_GRANT_FRACTION = 2 / 3
# A partner judges that grant from when it saw the renewal, plus this much for the
# rate difference of two nodes' clocks and the moments between a check and the clock.
GRANT_MARGIN = 0.25
# A holder that has not renewed yet since its term began is arming, not silent, for
# this long: it waits until its own promise to the previous owner ran out (up to the
# pair's 2 s), asks its partner for a confirmation (up to 1 s), then renews.
TERM_GRACE = 3.5

LEASES = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"


@dataclass(frozen=True, slots=True)
class LeaseView:
    holder: str | None
    epoch: int
    reason: str | None
    duration: float
    resource_version: str
    renewed: float | None = None  # spec.renewTime as written (the writer's clock)
    fencing: str = Fencing.LEASE.value  # hasmb.io/fencing of the last write (absent: lease)

    @classmethod
    def parse(cls, body: dict[str, Any]) -> LeaseView:
        own = read_ownership(body)
        mode = str(own.fencing or Fencing.LEASE)
        return cls(
            own.holder, own.epoch, own.reason, own.duration, own.resource_version, own.renewed, mode
        )


@dataclass(eq=False)
class LeaseWatch:
    """The latest Lease, kept current by a watch; `changed` fires when holder or epoch move."""

    api: KubeApi
    namespace: str
    name: str
    current: LeaseView | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    # local monotonic time at which holder, epoch or renewTime was last seen to change:
    # a standby judges the Lease's expiry on its own clock from there (no clock skew)
    progressed: float = field(default_factory=time.monotonic)
    # CLOCK_BOOTTIME at which a write granting the holder authority by itself (fencing
    # `lease`) was last seen, or this watch (re)listed and may have missed one
    grant_seen: float = field(default_factory=fence_clock.now)
    # CLOCK_BOOTTIME at which the current holder and epoch were first seen, and whether
    # a renewal of that term was seen since (the holder armed)
    term_seen: float = field(default_factory=fence_clock.now)
    term_renewed: bool = False
    _task: asyncio.Task[None] | None = None

    @property
    def path(self) -> str:
        return LEASES.format(ns=self.namespace) + f"/{self.name}"

    async def read(self) -> LeaseView:
        try:
            body = await self.api.request("GET", self.path)
        except KubeApiError as exc:
            if exc.status != 404:
                raise
            # A new SVM: the operator writes the first Lease once a pod is Ready, and
            # a pod is Ready once it listens -- so wait as a standby without an owner
            # (forwarding nowhere) instead of exiting; the watch sees the Lease appear.
            body = {}
        self.grant_seen = fence_clock.now()  # a lease-mode renewal may have gone unseen
        return self.observe(body)

    def observe(self, body: dict[str, Any]) -> LeaseView:
        view = LeaseView.parse(body)
        old = self.current
        if old is not None and view.resource_version and old.resource_version:
            # a late GET must not overwrite what a newer watch event told us
            with contextlib.suppress(ValueError):
                if int(view.resource_version) < int(old.resource_version):
                    return old
        self.current = view
        if old is None or (old.holder, old.epoch, old.renewed) != (
            view.holder,
            view.epoch,
            view.renewed,
        ):
            self.progressed = time.monotonic()
            same_term = old is not None and (old.holder, old.epoch) == (view.holder, view.epoch)
            if not same_term:
                self.term_seen, self.term_renewed = fence_clock.now(), False
            else:
                self.term_renewed = True
            if view.fencing != Fencing.PARTNER and (same_term or old is None):
                self.grant_seen = fence_clock.now()
        if old is None or (old.holder, old.epoch) != (view.holder, view.epoch):
            self.changed.set()
        return view

    def expired_locally(self) -> bool:
        """No renewal seen for the whole duration, on this process's monotonic clock.

        The holder fences itself 2/3 of the duration after its last renewal was sent,
        which is before this process saw that renewal: by now it has stopped serving.
        """
        view = self.current
        return view is not None and time.monotonic() - self.progressed > view.duration

    def grant_lapsed(self) -> bool:
        """The last write seen that granted the holder authority by itself (a `lease`
        renewal) has run out on this clock: seen more than its grant plus a margin ago."""
        return self.current is not None and self.grant_left() <= 0

    def grant_left(self) -> float:
        """Seconds until grant_lapsed() (for /status)."""
        view = self.current
        if view is None:
            return 0.0
        now = fence_clock.now()
        left = view.duration * LEASE_GRANT_FRACTION + GRANT_MARGIN - (now - self.grant_seen)
        if not self.term_renewed:
            # a new holder is arming (it waits out its own promises, then renews):
            # not silent yet, whatever it has been granted
            left = max(left, TERM_GRACE - (now - self.term_seen))
        return max(0.0, left)

    async def write(self, write: contract.LeaseWrite) -> LeaseView:
        """Send one write (a merge patch, CAS on its resourceVersion: 409 when anyone
        changed the Lease since) and observe the Lease it returns."""
        body = await self.api.request(
            "PATCH", self.path, body=write.patch(), content_type="application/merge-patch+json"
        )
        return self.observe(body)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _run(self) -> None:
        while True:
            try:
                view = await self.read()
                params = {
                    "fieldSelector": f"metadata.name={self.name}",
                    "allowWatchBookmarks": "false",
                }
                if view.resource_version:
                    params["resourceVersion"] = view.resource_version
                async for event in self.api.watch(LEASES.format(ns=self.namespace), params):
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind in ("ADDED", "MODIFIED") and isinstance(obj, dict):
                        self.observe(obj)
                    elif kind == "ERROR":
                        break  # e.g. 410 Gone: re-list
            except StoreError as exc:
                log.warning("lease watch: %s", exc)
                await asyncio.sleep(0.5)


class LeaseLost(Exception):
    """The Lease names another holder or epoch: this pod no longer owns the SVM."""


@dataclass(eq=False)
class LeaseRenewer:
    """Renews the Lease (every `renew_fraction` of its duration) while this pod owns it;
    `expired` fires at the fence deadline."""

    watch: LeaseWatch
    holder: str
    epoch: int
    fence_fraction: float = LEASE_GRANT_FRACTION
    renew_fraction: float = 1 / 4
    last_ok: float = field(default_factory=time.monotonic)  # send time of the last renewal
    renewals: int = 0
    expired: asyncio.Event = field(default_factory=asyncio.Event)
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    # Extra annotations written with every renewal (the owner's persistent-handle count).
    annotations: Callable[[], dict[str, str]] | None = None
    # With a fence: `lease` renewals grant it fence_fraction of the duration from their
    # send time, and a lapse of the fence (not `expired`) ends the holding.
    fence: Fence | None = None
    mode: Callable[[], str] = lambda: Fencing.LEASE
    wake: asyncio.Event | None = None  # renew at once (the partner stopped confirming)
    _task: asyncio.Task[None] | None = None

    def deadline(self, duration: float) -> float:
        return self.last_ok + duration * self.fence_fraction

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def renew_once(self, mode: str | None = None) -> float:
        """One CAS on renewTime; raises LeaseLost, KubeApiError or StoreError. Returns
        its send time on CLOCK_BOOTTIME (what a `lease` grant counts from)."""
        view = self.watch.current
        if view is None or view.holder != self.holder or view.epoch != self.epoch:
            raise LeaseLost(f"lease is {view}")
        sent = time.monotonic()
        sent_boot = fence_clock.now()
        mode = mode or (self.mode() if self.fence is not None else Fencing.LEASE)
        write = contract.renew(
            view.resource_version,
            time.time(),
            # without a fence the renewal says nothing about where authority comes from
            fencing=mode if self.fence is not None else None,
            annotations=self.annotations() if self.annotations is not None else None,
        )
        got = await self.watch.write(write)
        if got.holder != self.holder or got.epoch != self.epoch:
            raise LeaseLost(f"lease is {got}")
        self.last_ok = sent
        self.renewals += 1
        if self.fence is not None and mode == Fencing.LEASE:
            # the CAS succeeded: no partner took the Lease before it, and one that reads
            # it now waits a whole duration from then
            self.fence.grant(sent_boot + view.duration * self.fence_fraction, "lease renewal")
        return sent_boot

    async def _run(self) -> None:
        while True:
            view = self.watch.current
            duration = view.duration if view is not None else 15.0
            try:
                limit = max(0.1, self._left(duration)) if self.fence is None else duration / 2
                await asyncio.wait_for(self.renew_once(), limit)
            except LeaseLost as exc:
                log.warning("ownership moved: %s", exc)
                self.lost.set()
                return
            except KubeApiError as exc:
                if exc.status == 409:
                    # someone else wrote the Lease: re-read and decide again at once
                    with contextlib.suppress(StoreError):
                        await asyncio.wait_for(self.watch.read(), max(0.1, self._left(duration)))
                    if self._check(duration):
                        return
                    continue
                log.warning("lease renewal refused: %s", exc)
            except (StoreError, TimeoutError) as exc:
                log.warning("lease renewal failed: %s", exc)
            if self._check(duration):
                return
            ok_recently = self.last_ok >= time.monotonic() - 0.05
            # every quarter of the duration: a renewal may hang for (2/3 - 1/4) of it
            # (2.5 s of a 6 s lease) before the fence, and a standby's takeover after
            # a partition comes 3/4-1 of the duration after it (docs/operator.md)
            pause = duration * self.renew_fraction if ok_recently else min(0.5, duration / 10)
            if self.fence is None:
                pause = min(pause, max(0.0, self._left(duration)))
            if self.wake is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), pause)
                self.wake.clear()
            else:
                await asyncio.sleep(pause)
            if self._check(duration):
                return

    def _left(self, duration: float) -> float:
        return self.deadline(duration) - time.monotonic()

    def _check(self, duration: float) -> bool:
        if self.fence is not None:
            return False  # the fence's own deadline decides (its lapse ends the holding)
        if self._left(duration) <= 0:
            log.critical(
                "could not renew the lease for %.1f s (duration %.0f s): self-fencing",
                time.monotonic() - self.last_ok,
                duration,
            )
            self.expired.set()
            return True
        return False


async def bump_epoch(watch: LeaseWatch, holder: str, at_least: int) -> int:
    """A restarted owner whose store already stands at the Lease's epoch cannot take it
    again at that epoch; it raises the Lease's epoch (holder unchanged, CAS) first."""
    view = watch.current or await watch.read()
    if view.holder != holder:
        raise LeaseLost(f"lease is {view}")
    new = max(view.epoch, at_least) + 1
    return (await watch.write(contract.bump(view.resource_version, new, time.time()))).epoch


async def take_lease(watch: LeaseWatch, seen: LeaseView, holder: str, reason: str) -> LeaseView:
    """Move the Lease from a dead or expired holder to `holder` (epoch + 1), a CAS on the
    resourceVersion of `seen`: a Lease anyone changed since (a renewal, the operator's
    own failover) refuses it with 409, so two takeovers cannot both win."""
    write = contract.take(
        seen.resource_version,
        holder,
        seen.epoch + 1,
        reason,
        time.time(),
        # taking the Lease grants the taker like a `lease` renewal (the CAS won)
        fencing=Fencing.LEASE,
    )
    return await watch.write(write)
