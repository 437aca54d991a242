"""hasmb-smbd in an operator pod: ownership follows the SVM's Lease.

    hasmb-smbd --config /etc/hasmb/config/hasmb-smbd.yaml [--kube]   # automatic with HASMB_LEASE

- Holder (Lease holderIdentity == HASMB_NODE): wait until the promise this pod
  gave the previous owner over the pair channel cannot matter any more (it
  released, or the promise ran out: hasmb.smb.pair), renew the Lease once with
  fencing `lease` (the grant that arms the data-path fence, hasmb.smb.fence),
  take the handle store at the Lease's epoch (warm, through
  hasmb.smb.forward.Standby.take_over: the follower's mirror is adopted) and
  serve. While serving, ping the partner every 0.25 s (each confirmation extends
  the fence by 1.95 s from the ping's send time) and renew spec.renewTime every
  leaseDurationSeconds/4, with fencing `partner` while the partner confirms and
  `lease` (a grant of 2/3 of the duration) when it does not. When the fence lapses
  (no confirmation and no lease renewal in time: API server and partner both out
  of reach, or a freeze), self-fence: abort every client connection, stop
  accepting, exit 3.
- Not the holder: a forwarding standby. Follow the store, relay SMB
  connections to the holder's pod IP (peers.PeerWatch) at this server's own
  SMB port (both pods of an SVM share one rendered config). Heartbeat the
  holder's pod (partner.PartnerWatch): a refused connection (nothing listens:
  kill -9, container exit) takes the Lease at once, an unanswered one only
  after the Lease expired on this pod's clock (the isolated owner fenced).
- Holder moves here (planned or unplanned): take over at the new epoch.
  Holder moves away (planned giveback, ARL): hand over in-process -- stop
  accepting, let in-flight requests finish (`handover_drain`), close the
  connections, and start again as a standby on the same address, forwarding to
  the new owner. That is shorter for clients than exiting and waiting for the
  kubelet to restart the container.
- The store says a newer epoch (someone fenced us): re-read the Lease; if it
  still names this node the store was taken behind the operator's back, exit 3.
- Witness: RESOURCE_CHANGE (unplanned, reason Failover) or CLIENT_MOVE to the
  new owner's interfaces (planned) on every ownership move; the ConfigMap's
  witness interfaces feed update_interfaces().
- The ConfigMap is watched through the API: share additions, removals and
  property changes apply without a restart (shares.apply_shares).
- The owner's Lease renewals carry the count of persistent opens in the
  annotation hasmb.io/persistent-handles (so the pod needs no write access to
  pods; the operator copies it into SVM status.persistentHandles).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import yaml

from hasmb.contract import ANN_HANDLES, CONFIG_KEY, PAIR_PORT, UNPLANNED, Fencing
from hasmb.handles import HandleStore, StoreError, open_store
from hasmb.handles.kube_api import KubeApi, KubeApiError
from hasmb.podrt.env import PodEnv
from hasmb.podrt.lease import (
    LeaseLost,
    LeaseRenewer,
    LeaseView,
    LeaseWatch,
    bump_epoch,
)
from hasmb.podrt.partner import PartnerWatch
from hasmb.podrt.peers import PeerWatch
from hasmb.podrt.shares import apply_shares
from hasmb.podrt.witness import announced, witness_interfaces
from hasmb.smb.config import ConfigError, SmbdConfig, from_mapping
from hasmb.smb.fence import KillSwitch
from hasmb.smb.fence import now as fence_now
from hasmb.smb.forward import Standby
from hasmb.smb.ownership import FENCED_EXIT, _host_port, watch_epoch
from hasmb.smb.pair import PairClient, PairServer
from hasmb.smb.server import SmbServer
from hasmb.witness.service import WitnessService

log = logging.getLogger("hasmb.podrt")

# After a planned hand-over a new holder arms from its partner's confirmation when
# one comes this soon (the old owner is a standby again within milliseconds), and when
# at least ARM_MIN_LEFT of it is left after the renewal; else from a `lease` renewal.
ARM_WAIT = 1.0
# A pod that self-fenced in place reports NotReady this long (the kubelet probes every
# 1 s and needs 3 failures), so that its Ready transition follows the takeover.
SELF_FENCED_UNREADY = 5.0
ARM_MIN_LEFT = 0.5


async def _armed() -> None:
    """PodRuntime arms the fence itself (a lease renewal) before it takes over."""


@dataclass(eq=False)
class LeaseStandby(Standby):
    """A Standby that takes over only when the Lease says so (no heartbeat, no
    SIGUSR1, POST /takeover is refused): the operator decides ownership."""

    def request_takeover(self, reason: str, epoch: int | None = None) -> None:
        log.warning("takeover request (%s) ignored: ownership follows the Lease", reason)


@dataclass(eq=False)
class PodRuntime:
    cfg: SmbdConfig
    env: PodEnv
    api: KubeApi
    config_map: str = ""
    witness: WitnessService | None = None
    admin_listen: str = ""
    drain_timeout: float = 10.0
    handover_drain: float = 1.0
    epoch_check: float = 1.0
    heartbeat_interval: float = 0.25
    # A standby told to stop keeps forwarding at least linger_min seconds, until no new
    # connection came for linger_quiet seconds, at most linger_max (see _linger).
    linger_min: float = 2.0
    linger_quiet: float = 1.0
    linger_max: float = 5.0
    release_wait: float = 5.0  # an owner stopping waits this long for the partner's takeover
    kill_switch: KillSwitch | None = None  # hasmb.smb.fence: the kernel's end of the window
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    server: SmbServer = field(init=False)
    store: HandleStore = field(init=False)
    standby: LeaseStandby = field(init=False)
    lease: LeaseWatch = field(init=False)
    peers: PeerWatch = field(init=False)
    renewer: LeaseRenewer | None = None
    partner: PartnerWatch | None = None
    pair: PairServer | None = None  # this pod's promises to the owner (as standby)
    pair_client: PairClient | None = None  # this pod's pings to the partner (as owner)
    handovers: list[float] = field(default_factory=list)
    # Nodes whose LIFs this pod's witness announced unavailable by itself (it saw the
    # node stop serving): they stay unavailable in what it announces until the
    # operator's rendering moves them off the node or the node owns again.
    reported_down: set[str] = field(default_factory=set)
    _admin: asyncio.AbstractServer | None = None
    _owner_tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _host: str = ""
    _port: int = 0

    # ------------------------------------------------------------ main loop
    async def run(self) -> int:
        self._host, self._port = self.cfg.listen_host_port()
        self.config_map = self.config_map or f"{self.env.svm}-config"
        self.lease = LeaseWatch(self.api, self.env.namespace, self.env.lease)
        view = await self.lease.read()
        log.info("lease %s: holder %s, epoch %d", self.env.lease, view.holder, view.epoch)
        self.lease.start()
        self.peers = PeerWatch(self.api, self.env.namespace, self.env.svm)
        self.peers.start()
        loop = asyncio.get_running_loop()
        self.pair = PairServer(self._may_confirm, self._owner_address)
        await self.pair.start(*self._pair_address())
        self.partner = PartnerWatch(
            self.lease,
            self.peers,
            self.env.node,
            self._port,
            lambda: (
                getattr(self, "standby", None) is not None
                and self.standby.role == "standby"
                and not self.stop.is_set()  # a pod on its way out takes nothing over
            ),
            interval=self.heartbeat_interval,
            pair=self.pair,
        )
        self._tasks += [
            loop.create_task(self._watch_config()),
            loop.create_task(self.partner.run()),
        ]
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        loop.add_signal_handler(signal.SIGUSR1, log.info, "SIGUSR1 ignored: the Lease decides")
        await self._start_standby()
        try:
            return await self._loop()
        finally:
            for t in self._tasks:
                t.cancel()
            await self.pair.stop()
            await self.lease.stop()
            await self.peers.stop()

    async def _loop(self) -> int:
        seen: LeaseView | None = None
        while True:
            view = self.lease.current
            assert view is not None
            self.lease.changed.clear()
            self.peers.changed.clear()
            if seen is not None and (seen.holder, seen.epoch) != (view.holder, view.epoch):
                self._notify_move(seen.holder, view)
            seen = view
            mine = view.holder == self.env.node
            if mine and self.standby.role == "standby":
                # no relay to the previous owner while this pod arms: that owner, a
                # standby by now, would relay the client straight back here
                self._point_forwarding(view)
                await self._become_owner(view)
            elif not mine and self.standby.role == "owner":
                await self._hand_over(view)
            self._point_forwarding(view)
            waits: list[asyncio.Event] = [
                self.stop,
                self.lease.changed,
                self.peers.changed,
                self.server.ca.fenced,
                self.server.fence.lapsed,
            ]
            if self.renewer is not None:
                waits += [self.renewer.expired, self.renewer.lost]
            retry = 1.0 if mine and self.standby.role != "owner" else None
            futures = [asyncio.ensure_future(e.wait()) for e in waits]
            await asyncio.wait(futures, timeout=retry, return_when=asyncio.FIRST_COMPLETED)
            for f in futures:
                f.cancel()
            if self.stop.is_set():
                return await self._shutdown()
            if self.renewer is not None and self.renewer.expired.is_set():
                return await self._self_fence("lease renewal failed")
            if self.server.fence.lapsed.is_set() and self.standby.role == "owner":
                code = await self._self_fence(self.server.fence.lapse_reason)
                if not await self._ownership_moved():
                    return code
                # a thawed owner whose partner took over: nothing of the old holding
                # is kept (a new server, store and listener), and it stays a standby
                # in place rather than exit into the kubelet's crash-loop back-off,
                # which would leave the pair without a standby for minutes
                await self._start_standby()
                # NotReady for a while, as a restarted container would be: the
                # operator gives back only to a pod that became Ready after the
                # takeover, and a node frozen whole never reported it NotReady
                self.standby.unready_until = time.monotonic() + SELF_FENCED_UNREADY
                if self.pair is not None:
                    self.pair.allow()
                continue
            if self.server.ca.fenced.is_set() and self.standby.role == "owner":
                with contextlib.suppress(StoreError, TimeoutError):
                    await asyncio.wait_for(self.lease.read(), 5)
                now = self.lease.current
                if now is not None and now.holder == self.env.node:
                    return await self._self_fence("store taken at a newer epoch")
                # the Lease moved: the next round hands over

    # ------------------------------------------------------------ roles
    async def _start_standby(self) -> None:
        self.server = SmbServer(self.cfg, kill_switch=self.kill_switch, owner=False)
        self.store = open_store(self.cfg.state)
        self.standby = LeaseStandby(
            self.server,
            self.store,
            self.env.owner_name,
            auto_takeover=False,
            arm=_armed,
            pair=self.pair,  # for /status; PartnerWatch and _become_owner decide with it
            extra_status=self._takeover_status,
        )
        await self.standby.start(self._host, self._port)
        await self._serve_admin()

    async def _serve_admin(self) -> None:
        from hasmb.smb.admin import serve_admin

        if self._admin is not None:
            self._admin.close()
        listen = self.admin_listen or self.cfg.admin_listen or self.cfg.metrics_listen
        if listen:
            self._admin = await serve_admin(
                *_host_port(listen), self.server, self.store, self.standby
            )

    async def _become_owner(self, view: LeaseView) -> None:
        epoch = view.epoch
        try:
            current = await self.store.read_epoch()
            if current.epoch >= epoch:
                # this pod restarted (or someone took the store outside the Lease):
                # the store cannot be taken again at the Lease's epoch
                log.warning(
                    "store at epoch %d (%s), lease at %d: raising the lease's epoch",
                    current.epoch,
                    current.owner,
                    epoch,
                )
                epoch = await bump_epoch(self.lease, self.env.node, current.epoch)
        except StoreError as exc:
            log.error("cannot take ownership yet: %s", exc)
            return
        assert self.pair is not None
        # Without a promise on record this process may still inherit one: its
        # predecessor in this pod may have confirmed the owner just before it died,
        # so wait_clear waits until 2 s after this process bound the pair port.
        old = self.pair.promised_to or (None, 0)
        how = await self.pair.wait_clear(*old)
        log.info("the previous owner %s cannot write any more: %s", old[0], how)
        client = PairClient(
            self.server.fence,
            self.env.node,
            epoch,
            self._partner_pair,
            local_host=self._host if self._host not in ("", "0.0.0.0", "::") else None,
        )
        renewer = LeaseRenewer(
            self.lease,
            self.env.node,
            epoch,
            annotations=self._lease_annotations,
            fence=self.server.fence,
            mode=lambda: Fencing.PARTNER if client.confirmed() else Fencing.LEASE,
            wake=client.unconfirmed,
        )
        client.start()
        try:
            # after a planned hand-over the previous owner is a standby by now and
            # confirms at once; after a failure, waiting for one would only add a stall
            planned = old[0] is not None and self.pair.release_received == old
            await self._arm(client, renewer, view.duration, ARM_WAIT if planned else 0.0)
        except (StoreError, TimeoutError, LeaseLost, KubeApiError) as exc:
            log.error("cannot renew the lease before serving: %s", exc)
            await client.stop()
            self.pair.allow()
            return
        self.standby.epoch = epoch
        await self.standby.take_over(f"lease names {self.env.node} at epoch {epoch}")
        if self.standby.role != "owner":
            self.server.fence.revoke("takeover failed")
            await client.stop()
            self.pair.allow()
            return
        self.renewer, self.pair_client = renewer, client
        renewer.start()
        loop = asyncio.get_running_loop()
        self._owner_tasks = [
            loop.create_task(watch_epoch(self.server, self.store, self.epoch_check)),
            loop.create_task(self.server.fence.watch()),
        ]
        log.warning(
            "owner of %s at epoch %d (takeover %.3f s)",
            self.env.svm,
            epoch,
            self.standby.takeover_seconds,
        )

    async def _arm(
        self, client: PairClient, renewer: LeaseRenewer, duration: float, wait: float
    ) -> None:
        """Start the holding: from the partner's confirmation when it comes within
        `wait` (its promise covers the grant, and the renewal that proves this pod
        still holds the Lease grants nothing: a freeze right after a giveback is taken
        over within the pair's 2 s), else from a `lease` renewal (4 s of a 6 s Lease:
        the partner is gone, as after an unplanned takeover). Both renewals are a CAS:
        nobody moved the Lease since."""
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(client.first_grant.wait(), wait)
        if client.first_grant.is_set():
            await asyncio.wait_for(renewer.renew_once(Fencing.PARTNER), 5)
            if client.pending_until - fence_now() > ARM_MIN_LEFT:
                self.server.fence.hold(client.pending_until, "partner confirms")
                return
            log.warning("the partner's confirmation ran out while renewing: arming from the lease")
        sent = await asyncio.wait_for(renewer.renew_once(Fencing.LEASE), 5)
        self.server.fence.hold(sent + duration * renewer.fence_fraction, "lease renewal")

    async def _stop_owner_tasks(self) -> None:
        if self.pair_client is not None:
            await self.pair_client.stop()
            self.pair_client = None
        if self.renewer is not None:
            await self.renewer.stop()
            self.renewer = None
        for t in self._owner_tasks:
            t.cancel()
        self._owner_tasks = []

    async def _hand_over(self, view: LeaseView) -> None:
        """Planned move away: stop accepting, finish in-flight requests, close, become standby."""
        started = time.monotonic()
        log.warning("lease moved to %s at epoch %d: handing over", view.holder, view.epoch)
        await self._stop_serving()
        await self._start_standby()
        if self.pair is not None:
            # it denied every ping since it took over (wait_clear): a standby again,
            # it confirms the new owner, which then arms from it (see _arm)
            self.pair.allow()
        self._point_forwarding(view)
        self.handovers.append(time.monotonic() - started)
        log.warning("standby again in %.3f s", self.handovers[-1])

    async def _stop_serving(self) -> None:
        """Stop mutating and tell the partner, stop accepting, let in-flight requests
        finish, close clients and the store."""
        await self._revoke_and_release("handing over")
        await self._stop_owner_tasks()
        server, standby, store = self.server, self.standby, self.store
        await standby.stop()  # the listener closes: nothing new is accepted
        await server.stop(self.handover_drain)
        await server.ca.shutdown()
        with contextlib.suppress(StoreError, TimeoutError):
            await asyncio.wait_for(store.close(), 5)

    async def _revoke_and_release(self, why: str) -> None:
        """No mutation from here on; once the last one ended, the partner may take over
        at once (it need not wait for its promise to run out)."""
        fence = self.server.fence
        was = fence.holding or bool(fence.lapse_reason)
        fence.revoke(why)
        if await fence.quiesce() and was and self.pair_client is not None:
            if await self.pair_client.release():
                log.info("told the partner: no mutation from here on")

    def _takeover_status(self) -> dict[str, object]:
        """How long a silent owner is still protected, as this pod sees it."""
        view = self.lease.current
        if self.pair is None or view is None:
            return {}
        grant = self.lease.grant_left()
        return {
            "leaseGrantSeconds": round(max(0.0, grant), 3),
            "silentOwnerProtectedSeconds": round(
                max(0.0, grant, self.pair.promise_until - fence_now()), 3
            ),
        }

    # ------------------------------------------------------------ pair channel
    def _pair_address(self) -> tuple[str, int]:
        if self.cfg.pair_listen:
            return _host_port(self.cfg.pair_listen)
        return self._host, PAIR_PORT

    def _partner_pair(self) -> tuple[str, int] | None:
        ip = self._partner_address()
        if ip is None:
            return None
        return ip, self._pair_address()[1]

    def _owner_address(self, ip: str) -> bool:
        view = self.lease.current
        holder = view.holder if view is not None else None
        return (
            holder is not None
            and holder != self.env.node
            and self.peers.addresses.get(holder) == ip
        )

    def _may_confirm(self, node: str, epoch: int) -> str | None:
        view = self.lease.current
        if view is None:
            return "no lease seen"
        if view.holder != node or view.epoch != epoch:
            return f"the lease names {view.holder} at epoch {view.epoch}"
        standby = getattr(self, "standby", None)
        if standby is None or standby.role != "standby":
            return "not a standby"
        return None

    def _point_forwarding(self, view: LeaseView) -> None:
        if self.standby.role != "standby":
            return
        ip = self.peers.addresses.get(view.holder or "") if view.holder != self.env.node else None
        target = (ip, self._port) if ip else None
        if target != self.standby.forward_to:
            log.info("forwarding to %s", f"{ip}:{self._port}" if target else "nobody")
            self.standby.forward_to = target

    async def _self_fence(self, why: str) -> int:
        """Stop serving now: no reply leaves this process after this point."""
        log.critical(
            "self-fencing (%s): closing every client connection, exit %d", why, FENCED_EXIT
        )
        self.server.fence.revoke(f"self-fencing: {why}")
        if self.standby._listener is not None:
            self.standby._listener.close()
        for c in list(self.server.connections):
            c.writer.transport.abort()
        for r in list(self.standby.relays):
            r.close()
        await self._revoke_and_release(f"self-fencing: {why}")
        await self._stop_owner_tasks()
        # the store may be as unreachable as the apiserver: do not wait long for it
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._close_all(0), 1)
        return FENCED_EXIT

    async def _ownership_moved(self) -> bool:
        """After self-fencing: does the Lease, read afresh, name another holder? (An
        unreachable API server, or the Lease still naming this pod: exit instead.)"""
        try:
            view = await asyncio.wait_for(self.lease.read(), 1)
        except (StoreError, TimeoutError):
            return False
        if not view.holder or view.holder == self.env.node:
            return False
        log.warning(
            "self-fenced; the lease names %s at epoch %d: a standby again, no exit",
            view.holder,
            view.epoch,
        )
        return True

    async def _shutdown(self) -> int:
        if self.standby.role == "owner" and self._partner_address() is not None:
            if not await self._release():
                if self._admin is not None:
                    self._admin.close()
                return 0  # everything is closed already
        if self.standby.role == "standby" and self.standby.forward_to is not None:
            await self._linger()
        log.info("stopping (draining up to %.0f s)", self.drain_timeout)
        await self._stop_owner_tasks()
        await self._close_all(self.drain_timeout)
        return 0

    def _partner_address(self) -> str | None:
        return next(
            (ip for node, ip in self.peers.addresses.items() if node != self.env.node), None
        )

    async def _release(self) -> bool:
        """SIGTERM of the owner while its partner runs (pod deleted, node drained).

        Stop serving as in a handover: the partner's heartbeat finds the listener gone
        and takes the Lease (PartnerFailover), and clients reclaim there. Then forward
        to the new owner while routing moves away (_linger), instead of draining for
        drain_timeout and leaving a vanished IP behind the LIF. False: the partner
        did not take over in time (everything is closed; the process just exits).
        """
        log.warning("stopping as owner: handing %s over to the partner", self.env.svm)
        # The listener stays closed until the Lease moved: that refusal is what the
        # partner's heartbeat takes as the signal.
        await self._stop_serving()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.release_wait
        while (now := self.lease.current) is not None and now.holder == self.env.node:
            left = deadline - loop.time()
            if left <= 0:
                log.warning("the partner did not take the lease within %.0f s", self.release_wait)
                return False
            self.lease.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.lease.changed.wait(), left)
        if now is None:
            return False
        log.info("the partner %s owns %s at epoch %d", now.holder, self.env.svm, now.epoch)
        await self._start_standby()
        self._point_forwarding(now)
        return True

    async def _linger(self) -> None:
        """Keep forwarding for a moment after SIGTERM (a standby being replaced).

        The Services' endpoints and each node's kube-proxy drop this pod's IP
        asynchronously (kube-proxy programs at most about once a second), and until
        they have, new connections still come here. Closing at once turns them into
        refusals; exiting makes the IP vanish and their SYNs go unanswered until an
        ARP timeout (EHOSTUNREACH after ~3 s), which a rolling upgrade measured as a
        4 s stall. Forwarding them to the owner costs nothing.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        log.info("stopping as standby: forwarding new connections while routing moves away")
        while True:
            now = loop.time()
            quiet = now - max(self.standby.last_accept, started)
            if now - started >= self.linger_max or (
                now - started >= self.linger_min and quiet >= self.linger_quiet
            ):
                break
            await asyncio.sleep(0.1)
        log.info("lingered %.1f s", loop.time() - started)

    async def _close_all(self, drain: float) -> None:
        if self._admin is not None:
            self._admin.close()
        await self.standby.stop()
        await self.server.stop(drain)
        await self.server.ca.shutdown()
        with contextlib.suppress(StoreError, TimeoutError):
            await asyncio.wait_for(self.store.close(), 5)

    # ------------------------------------------------------------ witness
    def _notify_move(self, old: str | None, view: LeaseView) -> None:
        if self.witness is None or old is None or old == view.holder:
            return
        self.reported_down.discard(view.holder or "")
        if view.reason in UNPLANNED:
            self.reported_down.add(old)
            sent = self.witness.notify_node_state(old, available=False)
            log.info("witness: RESOURCE_CHANGE for %s's interfaces to %d client(s)", old, sent)
            return
        dest = self.witness.node_addresses(view.holder or "")
        if dest:
            sent = self.witness.notify_client_move(dest)
            log.info("witness: CLIENT_MOVE to %s for %d client(s)", dest, sent)

    # ------------------------------------------------------------ config
    async def _watch_config(self) -> None:
        path = f"/api/v1/namespaces/{self.env.namespace}/configmaps"
        while True:
            try:
                body = await self.api.request("GET", f"{path}/{self.config_map}")
                self.apply_config(body)
                rv = str((body.get("metadata") or {}).get("resourceVersion") or "")
                params = {
                    "fieldSelector": f"metadata.name={self.config_map}",
                    "resourceVersion": rv,
                }
                async for event in self.api.watch(path, params):
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        break
                    if kind in ("ADDED", "MODIFIED") and isinstance(obj, dict):
                        self.apply_config(obj)
            except StoreError as exc:
                log.warning("config watch: %s", exc)
                await asyncio.sleep(1.0)

    def apply_config(self, body: dict[str, Any]) -> None:
        text = (body.get("data") or {}).get(CONFIG_KEY)
        if not text:
            return
        try:
            data = yaml.safe_load(text) or {}
            new = from_mapping(data if isinstance(data, dict) else {})
        except (yaml.YAMLError, ConfigError, ValueError, KeyError, TypeError) as exc:
            log.error("config map %s: %s; keeping the running config", self.config_map, exc)
            return
        changes = apply_shares(self.server, new.shares)
        if changes:
            log.info(
                "shares: added %s, removed %s, changed %s, failed %s",
                changes.added,
                changes.removed,
                changes.changed,
                changes.failed,
            )
        changed = new.witness.interfaces != self.cfg.witness.interfaces
        self.cfg.witness.interfaces = new.witness.interfaces
        wanted, self.reported_down = announced(witness_interfaces(self.cfg), self.reported_down)
        # Compared with what the witness announces, not only with the last config: a
        # failure it reported by itself (notify_node_state) is undone by the next config
        # even when the operator's rendering came back to the same text.
        if self.witness is not None and (
            changed or (wanted and wanted != self.witness.interfaces())
        ):
            sent = self.witness.update_interfaces(wanted)
            log.info("witness interfaces updated (%d notification(s))", sent)

    # ------------------------------------------------------------ lease annotation
    def _lease_annotations(self) -> dict[str, str]:
        count = sum(1 for o in self.server.state.opens.values() if o.is_persistent and not o.closed)
        return {ANN_HANDLES: str(count)}
