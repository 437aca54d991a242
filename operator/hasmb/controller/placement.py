"""Pure decisions: who owns an SVM, where each LIF lives, which pod may be replaced.

The reconciler feeds observed facts (node and pod health, the ownership Lease,
the specs) into these functions and applies what they return, so takeover,
giveback, ARL, LIF migrate/revert and the rolling upgrade are one state machine
that is re-evaluated from scratch on every event. Nothing here remembers
anything: an operator restarted at any point computes the same answer.

Invariant kept by `pod_actions`: a pod is deleted only when the other pod of the
pair is serving, owns the SVM and carries every LIF (never both pods down).

Stale status (`freshness`): a node in `PairView.doubted` looks unhealthy, but that
may be stale (API contact was lost, or the node controller's verdict is
contradicted by a heartbeat). Nothing moves *away* from a doubted node on the
strength of its bad status -- no Failover of ownership, no LIF failover, no pod
deletion -- while moves *onto* a node still need it to look healthy.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from hasmb.contract import PLANNED, Reason


@dataclass(frozen=True, slots=True)
class PodFacts:
    exists: bool = False
    ready: bool = False
    terminating: bool = False
    current: bool = True  # runs the desired pod template (image etc.)
    ready_since: float | None = None  # epoch seconds of the last Ready transition


@dataclass(frozen=True, slots=True)
class NodeFacts:
    exists: bool = False
    ready: bool = False


@dataclass(frozen=True, slots=True)
class PairView:
    """What the decisions need to know about the pair and its members' health."""

    nodes: tuple[str, str]
    node_facts: dict[str, NodeFacts]
    pod_facts: dict[str, PodFacts]
    takeover: str | None = None  # spec.takeover of the HAPair
    auto_giveback: bool = True
    giveback_delay: float = 5.0
    now: float = 0.0
    # node -> why its bad status is not acted on yet (freshness.judge)
    doubted: dict[str, str] = field(default_factory=dict)
    recheck_after: float | None = None  # when a doubt may resolve by itself
    hold_deletions: bool = False  # API contact is not fresh: no pod is deleted

    def partner(self, node: str) -> str:
        return self.nodes[1] if node == self.nodes[0] else self.nodes[0]

    def node_ok(self, node: str) -> bool:
        facts = self.node_facts.get(node, NodeFacts())
        return facts.exists and facts.ready

    def serving(self, node: str) -> bool:
        """The node's pod can serve clients right now."""
        pod = self.pod_facts.get(node, PodFacts())
        return self.node_ok(node) and pod.exists and pod.ready and not pod.terminating

    def stable(self, node: str) -> bool:
        """Serving for at least the giveback delay (no flapping back onto a shaky node)."""
        if not self.serving(node):
            return False
        since = self.pod_facts[node].ready_since
        return since is None or self.now - since >= self.giveback_delay

    def stable_in(self, node: str) -> float:
        since = self.pod_facts.get(node, PodFacts()).ready_since
        if since is None:
            return 0.0
        return max(0.0, self.giveback_delay - (self.now - since))

    def outdated(self, node: str) -> bool:
        pod = self.pod_facts.get(node, PodFacts())
        return pod.exists and not pod.current

    def draining(self, node: str, owner: str | None) -> bool:
        """Node whose outdated pod is replaced next (rolling upgrade).

        The non-owner goes first; the owner drains only once its partner runs the
        new template, so ownership moves exactly once each way.
        """
        other = self.partner(node)
        return (
            self.outdated(node)
            and self.serving(other)
            and (not self.outdated(other) or owner == other)
        )


def after_partner_failover(
    view: PairView, holder: str | None, reason: Reason | None, acquired: float | None
) -> PairView:
    """The view with the old owner's pod status discounted after a pod-driven failover.

    A Lease the partner pod took itself (PartnerFailover, or after the Lease expired)
    proves the old owner stopped serving at `acquired`, while its pod may still show
    Ready: a cut-off node's kubelet reports nothing until the node-monitor grace period
    ends (~40 s), and a restarted container may not have flipped Ready yet. The old
    owner serves again (for giveback and LIF revert) only once its pod became Ready
    after the takeover. lastTransitionTime has whole seconds: the same second counts.
    """
    if reason is not Reason.PARTNER_FAILOVER or holder not in view.nodes or acquired is None:
        return view
    lost = view.partner(holder)
    pod = view.pod_facts.get(lost, PodFacts())
    if pod.ready and pod.ready_since is not None and pod.ready_since >= int(acquired):
        return view
    facts = dict(view.pod_facts)
    facts[lost] = replace(pod, ready=False)
    # The Lease proves it stopped serving: a fact, not a status that could be stale.
    doubted = {n: why for n, why in view.doubted.items() if n != lost}
    return replace(view, pod_facts=facts, doubted=doubted)


@dataclass(frozen=True, slots=True)
class OwnerDecision:
    owner: str | None  # None: nobody can serve yet and nothing was recorded
    move: bool  # the Lease must change (epoch + 1)
    reason: Reason
    planned: bool
    requeue_after: float | None = None  # re-evaluate then (giveback delay running)
    message: str = ""
    held: bool = False  # a takeover is held back (status not fresh, lease still live)


def preferred_owner(
    view: PairView, home: str, relocate_to: str | None, holder: str | None
) -> tuple[str, Reason]:
    """Where the SVM belongs given the specs (and a running upgrade)."""
    node = relocate_to or home
    reason = Reason.RELOCATED if relocate_to and relocate_to != home else Reason.HOME
    if view.takeover == node:
        node, reason = view.partner(node), Reason.PLANNED_TAKEOVER
    if view.draining(node, holder):
        node, reason = view.partner(node), Reason.UPGRADE
    return node, reason


def hold_takeover(
    view: PairView, holder: str, holder_reason: Reason | None, why: str
) -> OwnerDecision:
    """The decision that keeps `holder` while a takeover from it is held back."""
    return OwnerDecision(
        holder,
        False,
        holder_reason or Reason.FAILOVER,
        False,
        requeue_after=max(0.05, view.recheck_after) if view.recheck_after is not None else 1.0,
        message=f"holding takeover from {holder}: {why}",
        held=True,
    )


def decide_owner(
    view: PairView,
    home: str,
    relocate_to: str | None,
    holder: str | None,
    holder_reason: Reason | None,
) -> OwnerDecision:
    """The owner an SVM should have now; `holder` is the Lease's current holder.

    An unplanned takeover from a holder whose bad status is doubted is held back.
    """
    decision = _decide_owner(view, home, relocate_to, holder, holder_reason)
    if (
        decision.move
        and decision.reason is Reason.FAILOVER
        and holder is not None
        and holder in view.doubted
        and decision.owner != holder
    ):
        return hold_takeover(view, holder, holder_reason, view.doubted[holder])
    return decision


def _decide_owner(
    view: PairView,
    home: str,
    relocate_to: str | None,
    holder: str | None,
    holder_reason: Reason | None,
) -> OwnerDecision:
    want, why = preferred_owner(view, home, relocate_to, holder)
    other = view.partner(want)
    planned = why in PLANNED

    if holder is None or holder not in view.nodes:
        if view.serving(want):
            return OwnerDecision(want, True, why, planned, message=f"{want} takes ownership")
        if not view.node_ok(want) and view.serving(other):
            return OwnerDecision(
                other, True, Reason.FAILOVER, False, message=f"{want} is down; {other} serves"
            )
        # Waiting for the preferred pod to start: no owner recorded yet.
        return OwnerDecision(None, False, why, planned, message=f"waiting for the pod on {want}")

    if holder == want:
        if view.serving(want) or not view.serving(other):
            return OwnerDecision(want, False, why, planned)
        return OwnerDecision(
            other,
            True,
            Reason.FAILOVER,
            False,
            message=f"pod on {want} is not serving; {other} takes over",
        )

    # holder == other: the SVM is away from where it belongs.
    if not view.serving(want):
        return OwnerDecision(holder, False, holder_reason or Reason.FAILOVER, False)
    if not view.serving(holder):
        return OwnerDecision(
            want,
            True,
            Reason.FAILOVER,
            False,
            message=f"{holder} is not serving; {want} takes over",
        )
    if planned:
        return OwnerDecision(want, True, why, True, message=f"{why.value}: {holder} -> {want}")
    # Back to the preferred node after a failover or a finished planned operation.
    if holder_reason in PLANNED:
        return OwnerDecision(
            want, True, Reason.GIVEBACK, True, message=f"giveback {holder} -> {want}"
        )
    if not view.auto_giveback:
        return OwnerDecision(
            holder,
            False,
            holder_reason or Reason.FAILOVER,
            False,
            message=f"autoGiveback is off: {holder} keeps the SVM until giveback of {want}",
        )
    if not view.stable(want):
        return OwnerDecision(
            holder,
            False,
            holder_reason or Reason.FAILOVER,
            False,
            requeue_after=max(0.05, view.stable_in(want)),
            message=f"giveback to {want} once it has been healthy for {view.giveback_delay:g}s",
        )
    return OwnerDecision(want, True, Reason.GIVEBACK, False, message=f"auto giveback -> {want}")


@dataclass(frozen=True, slots=True)
class LifDecision:
    node: str
    state: str  # Home, Migrated, FailedOver, Down
    requeue_after: float | None = None
    held: str = ""  # why a failover away from its node is held back


def decide_lif(
    view: PairView,
    home: str,
    migrate_to: str | None,
    current: str | None,
    owner: str | None,
    current_state: str | None = None,
) -> LifDecision:
    """The node whose pod a LIF's Service should select now.

    `current`/`current_state`: where the Service points now and why (its annotation).
    Only a LIF that failed over waits for its node to be stable before it reverts;
    planned moves (migrate, takeover, upgrade) go back at once. A LIF does not fail
    over (nor turn Down) away from a node whose bad status is doubted.
    """
    decision = _decide_lif(view, home, migrate_to, current, owner, current_state)
    if (
        current is not None
        and current in view.doubted
        and decision.state in ("FailedOver", "Down")
        and (decision.node != current or decision.state != current_state)
    ):
        state = current_state or ("Home" if current == home else "Migrated")
        return LifDecision(
            current,
            state,
            requeue_after=max(0.05, view.recheck_after) if view.recheck_after is not None else 1.0,
            held=view.doubted[current],
        )
    return decision


def _decide_lif(
    view: PairView,
    home: str,
    migrate_to: str | None,
    current: str | None,
    owner: str | None,
    current_state: str | None,
) -> LifDecision:
    want = migrate_to or home
    if view.takeover == want or view.draining(want, owner):
        want = view.partner(want)
    base = "Home" if want == home else "Migrated"
    other = view.partner(want)
    if view.serving(want):
        reverting = (
            current == other
            and current_state == "FailedOver"
            and view.serving(other)
            and view.takeover != other
            and not view.draining(other, owner)
            and not view.stable(want)
        )
        if reverting:
            # Back from a failover: only once the node has stayed healthy.
            return LifDecision(other, "FailedOver", requeue_after=max(0.05, view.stable_in(want)))
        return LifDecision(want, base)
    if view.serving(other):
        return LifDecision(other, "FailedOver")
    return LifDecision(current or want, "Down")


# Seconds an outdated pod stays after ownership left it: the old owner hands over
# (in-flight requests drain for up to 1 s) and Service routing moves before its IP goes.
HANDOVER_GRACE = 2.0


@dataclass(slots=True)
class PodActions:
    create: list[str] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # outdated pods that must wait
    requeue_after: float | None = None


def pod_actions(
    view: PairView, owner: str | None, lif_nodes: list[str], owner_since: float | None = None
) -> PodActions:
    """Create missing pods; replace outdated ones one at a time, never the last server.

    `owner_since`: when the owner got the SVM; a pod that owned it until less than
    HANDOVER_GRACE ago is still handing over and is not deleted yet. While API contact
    is not fresh (`hold_deletions`) no pod is deleted; a pod is replaced because both
    look down only when neither node is doubted.
    """
    actions = PodActions()
    settling = 0.0 if owner_since is None else HANDOVER_GRACE - (view.now - owner_since)
    for node in view.nodes:
        pod = view.pod_facts.get(node, PodFacts())
        if not pod.exists:
            actions.create.append(node)
            continue
        if pod.terminating or pod.current:
            continue
        other = view.partner(node)
        safe = owner == other and view.serving(other) and node not in lif_nodes
        # When the other pod cannot serve anyway (e.g. a fresh pair), replacing is harmless.
        lonely = (
            not view.serving(node)
            and not view.serving(other)
            and owner != node
            and node not in view.doubted
            and other not in view.doubted
        )
        if (safe or lonely) and view.hold_deletions:
            actions.waiting.append(node)
            hold = view.recheck_after if view.recheck_after is not None else 1.0
            actions.requeue_after = min(actions.requeue_after or hold, hold)
        elif safe and settling > 0:
            actions.waiting.append(node)
            actions.requeue_after = settling
        elif safe or lonely:
            actions.delete.append(node)
        else:
            actions.waiting.append(node)
    return actions
