"""The ownership / LIF / pod state machine: takeover, giveback, ARL, LIF moves, upgrade."""

from __future__ import annotations

from dataclasses import replace

from hasmb.controller.placement import (
    HANDOVER_GRACE,
    NodeFacts,
    PairView,
    PodFacts,
    Reason,
    decide_lif,
    decide_owner,
    pod_actions,
)

A, B = "node-a", "node-b"
UP = NodeFacts(exists=True, ready=True)
DOWN = NodeFacts(exists=True, ready=False)
SERVING = PodFacts(exists=True, ready=True, ready_since=0.0)


def view(**kw: object) -> PairView:
    base = PairView(
        nodes=(A, B),
        node_facts={A: UP, B: UP},
        pod_facts={A: SERVING, B: SERVING},
        giveback_delay=5.0,
        now=100.0,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_first_owner_is_home_once_its_pod_serves() -> None:
    d = decide_owner(view(), A, None, None, None)
    assert (d.owner, d.move, d.reason) == (A, True, Reason.HOME)
    starting = view(pod_facts={A: PodFacts(exists=True), B: SERVING})
    d = decide_owner(starting, A, None, None, None)
    assert d.owner is None and not d.move  # no churn onto the standby during startup


def test_first_owner_is_partner_when_home_node_is_down() -> None:
    d = decide_owner(view(node_facts={A: DOWN, B: UP}), A, None, None, None)
    assert (d.owner, d.reason, d.planned) == (B, Reason.FAILOVER, False)


def test_steady_state_does_nothing() -> None:
    d = decide_owner(view(), A, None, A, Reason.HOME)
    assert (d.owner, d.move) == (A, False)


def test_unplanned_takeover_when_serving_pod_is_deleted_or_node_not_ready() -> None:
    for v in (
        view(pod_facts={A: replace(SERVING, terminating=True), B: SERVING}),
        view(pod_facts={A: PodFacts(exists=False), B: SERVING}),
        view(node_facts={A: DOWN, B: UP}),
    ):
        d = decide_owner(v, A, None, A, Reason.HOME)
        assert (d.owner, d.move, d.reason, d.planned) == (B, True, Reason.FAILOVER, False)


def test_no_takeover_when_partner_cannot_serve_either() -> None:
    v = view(node_facts={A: DOWN, B: DOWN})
    d = decide_owner(v, A, None, A, Reason.HOME)
    assert (d.owner, d.move) == (A, False)


def test_auto_giveback_waits_for_stability() -> None:
    fresh = view(pod_facts={A: replace(SERVING, ready_since=98.0), B: SERVING})
    d = decide_owner(fresh, A, None, B, Reason.FAILOVER)
    assert (d.owner, d.move) == (B, False)
    assert d.requeue_after is not None and 2.9 < d.requeue_after <= 3.0
    stable = view(pod_facts={A: replace(SERVING, ready_since=90.0), B: SERVING})
    d = decide_owner(stable, A, None, B, Reason.FAILOVER)
    assert (d.owner, d.move, d.reason, d.planned) == (A, True, Reason.GIVEBACK, False)


def test_no_auto_giveback_when_disabled() -> None:
    d = decide_owner(view(auto_giveback=False), A, None, B, Reason.FAILOVER)
    assert (d.owner, d.move) == (B, False)


def test_planned_takeover_and_giveback() -> None:
    d = decide_owner(view(takeover=A), A, None, A, Reason.HOME)
    assert (d.owner, d.move, d.reason, d.planned) == (B, True, Reason.PLANNED_TAKEOVER, True)
    # Cleared: immediate giveback, no stability wait (the move was planned).
    fresh = view(pod_facts={A: replace(SERVING, ready_since=99.0), B: SERVING})
    d = decide_owner(fresh, A, None, B, Reason.PLANNED_TAKEOVER)
    assert (d.owner, d.move, d.reason, d.planned) == (A, True, Reason.GIVEBACK, True)


def test_held_takeover_turns_into_planned_state() -> None:
    """autoGiveback off: the operator sets spec.takeover; the reason becomes planned."""
    d = decide_owner(view(takeover=A), A, None, B, Reason.FAILOVER)
    assert (d.owner, d.move, d.reason) == (B, False, Reason.PLANNED_TAKEOVER)


def test_planned_takeover_waits_for_a_serving_partner() -> None:
    v = view(takeover=A, pod_facts={A: SERVING, B: PodFacts(exists=True)})
    d = decide_owner(v, A, None, A, Reason.HOME)
    assert (d.owner, d.move) == (A, False)


def test_arl_relocates_and_back() -> None:
    d = decide_owner(view(), A, B, A, Reason.HOME)
    assert (d.owner, d.move, d.reason, d.planned) == (B, True, Reason.RELOCATED, True)
    d = decide_owner(view(), A, None, B, Reason.RELOCATED)
    assert (d.owner, d.move, d.reason) == (A, True, Reason.GIVEBACK)


def test_lif_follows_migrate_revert_and_failover() -> None:
    v = view()
    assert decide_lif(v, A, None, A, A).node == A
    migrated = decide_lif(v, A, B, A, A)
    assert (migrated.node, migrated.state) == (B, "Migrated")
    assert decide_lif(v, A, None, B, A).node == A  # revert (B was migrated, A stable)
    down = view(pod_facts={A: PodFacts(exists=False), B: SERVING})
    failed = decide_lif(down, A, None, A, B)
    assert (failed.node, failed.state) == (B, "FailedOver")
    recovering = view(pod_facts={A: replace(SERVING, ready_since=99.0), B: SERVING})
    waiting = decide_lif(recovering, A, None, B, B, "FailedOver")
    assert waiting.node == B and waiting.requeue_after is not None
    # A planned move (here: migrated, then reverted) does not wait for stability.
    assert decide_lif(recovering, A, None, B, B, "Migrated").node == A
    assert decide_lif(view(takeover=A), A, None, A, B).node == B
    both_down = view(node_facts={A: DOWN, B: DOWN})
    assert decide_lif(both_down, A, None, A, A).state == "Down"


def test_pods_are_created_when_missing() -> None:
    v = view(pod_facts={A: PodFacts(), B: PodFacts()})
    assert pod_actions(v, None, []).create == [A, B]


def _run_upgrade(auto_giveback: bool) -> list[tuple[str | None, str | None, list[str]]]:
    """Drive the rolling upgrade to completion; returns (owner, deleted, lif nodes) per step."""
    pods = {A: replace(SERVING, current=False), B: replace(SERVING, current=False)}
    holder: str | None = A
    reason: Reason | None = Reason.HOME
    lifs = {"lif-a": A, "lif-b": B}
    homes = {"lif-a": A, "lif-b": B}
    steps: list[tuple[str | None, str | None, list[str]]] = []
    now = 100.0
    for _ in range(20):
        v = view(pod_facts=dict(pods), auto_giveback=auto_giveback, now=now)
        d = decide_owner(v, A, None, holder, reason)
        if d.owner is not None:
            holder, reason = d.owner, d.reason
        for name, home in homes.items():
            lifs[name] = decide_lif(v, home, None, lifs[name], holder, "Home").node
        acts = pod_actions(v, holder, list(lifs.values()))
        # Invariant: the owner always serves.
        assert holder is not None and v.serving(holder)
        deleted = None
        for node in acts.delete:
            assert node != holder and node not in lifs.values()
            deleted = node
            pods[node] = PodFacts(exists=False)
        for node in acts.create:
            pods[node] = replace(SERVING, ready_since=now)
        steps.append((holder, deleted, sorted(set(lifs.values()))))
        now += 10.0
        if all(p.current and p.exists for p in pods.values()) and holder == A and not acts.create:
            break
    return steps


def test_rolling_upgrade_replaces_one_pod_at_a_time_and_gives_back() -> None:
    steps = _run_upgrade(auto_giveback=True)
    deleted = [d for _, d, _ in steps if d]
    assert deleted == [B, A]  # standby first, then the (former) owner
    owners = [o for o, _, _ in steps]
    assert B in owners and owners[-1] == A
    assert steps[-1][2] == [A, B]  # LIFs home again


def test_rolling_upgrade_gives_back_even_without_auto_giveback() -> None:
    steps = _run_upgrade(auto_giveback=False)
    assert steps[-1][0] == A


def test_the_old_owner_is_replaced_only_after_the_handover_grace() -> None:
    # A's outdated pod just lost ownership to B (upgraded): it is still handing over.
    pods = {A: replace(SERVING, current=False), B: SERVING}
    v = view(pod_facts=pods, now=100.0)
    fresh = pod_actions(v, B, [B], owner_since=99.5)
    assert fresh.delete == [] and fresh.waiting == [A]
    assert fresh.requeue_after is not None and 1.4 < fresh.requeue_after <= 1.5
    settled = pod_actions(v, B, [B], owner_since=100.0 - HANDOVER_GRACE)
    assert settled.delete == [A] and settled.requeue_after is None
