"""How long a standby pod leaves a silent owner alone (hasmb.podrt.lease.LeaseWatch),
how an owner arms from its partner before it serves (hasmb.smb.pair.PairClient), and
what the pod's witness announces for a node it saw fail (hasmb.podrt.witness)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hasmb.podrt import lease as lease_mod
from hasmb.podrt.lease import (
    GRANT_MARGIN,
    LEASE_GRANT_FRACTION,
    TERM_GRACE,
    LeaseWatch,
)
from hasmb.podrt.witness import announced
from hasmb.smb import fence as fence_mod
from hasmb.smb.fence import Fence, now
from hasmb.smb.pair import CONFIRM_SECONDS, MARGIN, PairClient, PairServer
from hasmb.witness.config import WitnessInterfaceConfig

DURATION = 6.0
GRANT_WAIT = DURATION * LEASE_GRANT_FRACTION + GRANT_MARGIN


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(fence_mod, "now", c)
    assert lease_mod.fence_clock.now is c
    return c


def lease(holder: str, epoch: int, rv: int, renewed: str, fencing: str) -> dict[str, Any]:
    return {
        "metadata": {
            "resourceVersion": str(rv),
            "annotations": {"hasmb.io/epoch": str(epoch), "hasmb.io/fencing": fencing},
        },
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": int(DURATION),
            "renewTime": f"2026-01-01T00:00:{renewed}.000000Z",
        },
    }


def watching(clock: Clock) -> LeaseWatch:
    w = LeaseWatch(api=None, namespace="ns", name="l")  # type: ignore[arg-type]
    w.observe(lease("a", 1, 1, "00", "lease"))  # the first look counts as a grant
    clock.t += 100  # long ago
    return w


def test_a_lease_renewal_protects_its_holder_for_its_grant_and_the_margin(clock: Clock) -> None:
    w = watching(clock)
    w.observe(lease("a", 1, 2, "01", "lease"))
    clock.t += GRANT_WAIT - 0.01
    assert not w.grant_lapsed()
    clock.t += 0.02
    assert w.grant_lapsed()
    # 4 s of a 6 s Lease, plus the margin: no longer a whole duration
    assert GRANT_WAIT < DURATION


def test_partner_mode_renewals_grant_nothing(clock: Clock) -> None:
    w = watching(clock)
    w.observe(lease("a", 1, 2, "01", "partner"))
    assert w.grant_lapsed() and w.grant_left() == 0


def test_a_new_holder_is_given_time_to_arm_and_only_that(clock: Clock) -> None:
    w = watching(clock)
    # a giveback: the Lease names b at a new epoch; b has not renewed yet
    w.observe(lease("b", 2, 2, "05", "lease"))
    clock.t += TERM_GRACE - 0.01
    assert not w.grant_lapsed()  # arming, not silent
    clock.t += 0.02
    assert w.grant_lapsed()  # never renewed: it died before serving


def test_a_new_holder_that_armed_from_its_partner_is_protected_by_the_promise_alone(
    clock: Clock,
) -> None:
    w = watching(clock)
    w.observe(lease("b", 2, 2, "05", "lease"))
    clock.t += 0.3
    w.observe(lease("b", 2, 3, "06", "partner"))  # b armed from our confirmation
    assert w.grant_lapsed()  # the pair channel's promise is what still protects it


def test_a_new_holder_that_armed_from_the_lease_keeps_that_grant(clock: Clock) -> None:
    w = watching(clock)
    w.observe(lease("b", 2, 2, "05", "lease"))
    clock.t += 1.2
    w.observe(lease("b", 2, 3, "06", "lease"))
    clock.t += GRANT_WAIT - 0.01
    assert not w.grant_lapsed()
    clock.t += 0.02
    assert w.grant_lapsed()


def test_an_owner_arms_from_a_confirmation_that_came_before_it_held() -> None:
    async def main() -> None:
        server = PairServer(lambda node, epoch: None, lambda ip: True)
        port = await server.start("127.0.0.1", 0)
        fence = Fence()  # a standby about to arm: not holding
        client = PairClient(fence, "b", 2, lambda: ("127.0.0.1", port))
        sent = now()
        assert await client.ping_once()
        assert client.first_grant.is_set() and client.confirmed()
        assert not fence.holding and fence.grant(now() + 10, "x") is False
        assert sent + CONFIRM_SECONDS - MARGIN <= client.pending_until < server.promise_until
        fence.hold(client.pending_until, "partner confirms")
        before = fence.deadline
        assert await client.ping_once()
        assert fence.deadline >= before  # later confirmations extend the holding
        await client.stop()
        await server.stop()

    asyncio.run(main())


def test_a_denied_ping_before_holding_grants_nothing() -> None:
    async def main() -> None:
        server = PairServer(lambda node, epoch: "not a standby", lambda ip: True)
        port = await server.start("127.0.0.1", 0)
        client = PairClient(Fence(), "b", 2, lambda: ("127.0.0.1", port))
        assert not await client.ping_once()
        assert not client.first_grant.is_set() and client.pending_until < now()
        await client.stop()
        await server.stop()

    asyncio.run(main())


def iface(name: str, ip: str, node: str, state: str = "available") -> WitnessInterfaceConfig:
    return WitnessInterfaceConfig(name, ipv4=ip, node=node, state=state)


def test_a_failed_node_stays_unavailable_until_its_lifs_moved() -> None:
    down = {"n1"}
    # a rendering from before the LIF failed over: still on n1, said available
    stale = [iface("a", "10.0.0.1", "n1"), iface("b", "10.0.0.2", "n2")]
    got, down = announced(stale, down)
    assert [i.state for i in got] == ["unavailable", "available"] and down == {"n1"}
    # the operator moved it: available again, and n1 is no longer masked
    moved = [iface("a", "10.0.0.1", "n2"), iface("b", "10.0.0.2", "n2")]
    got, down = announced(moved, down)
    assert [i.state for i in got] == ["available", "available"] and down == set()
    # the LIF reverts home later: what the operator says counts
    back = [iface("a", "10.0.0.1", "n1"), iface("b", "10.0.0.2", "n2")]
    got, down = announced(back, down)
    assert [i.state for i in got] == ["available", "available"]
