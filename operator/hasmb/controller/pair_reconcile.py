"""Reconcile one HAPair's status: node states, takeover/giveback progress and timings.

The SVM reconciles do the moving (each SVM follows spec.takeover and node
health); the pair only observes and reports, so there is one writer per object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hasmb.contract import parse_time, read_ownership
from hasmb.controller import freshness
from hasmb.controller.conditions import Condition, merge_conditions, now_iso
from hasmb.controller.facts import node_facts
from hasmb.controller.model import SVM, HAPair
from hasmb.controller.runtime import Runtime
from hasmb.controller.status_writer import iso, patch_cr_status, unready_status
from hasmb.kube.client import HAPAIRS

Body = dict[str, Any]


@dataclass(frozen=True, slots=True)
class PairSummary:
    state: str
    takeover: str  # "NODE->PARTNER" or ""
    taken_node: str
    planned: bool
    complete: bool  # every SVM of the taken (or given back) node sits where it should
    nodes: list[dict[str, Any]]


def summarise(
    pair: HAPair,
    node_ok: dict[str, bool],
    svms: list[tuple[SVM, str | None]],
    owners: dict[str, str | None] | None = None,
) -> PairSummary:
    """Pure: the pair's state from node health and SVMs.

    `svms`: (svm, owner once settled -- None while it is still moving);
    `owners`: svm name -> Lease holder right now, for the per-node counts.
    """
    owners = owners if owners is not None else {s.meta.name: h for s, h in svms}
    a, b = pair.nodes[0], pair.nodes[1]
    taken = ""
    planned = False
    if pair.takeover in (a, b):
        taken, planned = pair.takeover or "", True
    else:
        for node in (a, b):
            if not node_ok[node] and node_ok[pair.partner(node)]:
                taken = node
    nodes = []
    for node in (a, b):
        owned = sum(1 for holder in owners.values() if holder == node)
        home = sum(1 for svm, _ in svms if svm.preferred_node() == node)
        state = "TakenOver" if node == taken else ("Up" if node_ok[node] else "Down")
        nodes.append(
            {
                "name": node,
                "state": state,
                "ready": node_ok[node],
                "ownedSVMs": owned,
                "homeSVMs": home,
            }
        )
    if taken:
        partner = pair.partner(taken)
        complete = all(holder == partner for _, holder in svms)
        return PairSummary("TakenOver", f"{taken}->{partner}", taken, planned, complete, nodes)
    complete = all(holder == svm.preferred_node() for svm, holder in svms)
    state = "Normal" if node_ok[a] and node_ok[b] else "Degraded"
    return PairSummary(state, "", "", False, complete, nodes)


async def reconcile_pair(rt: Runtime, namespace: str, name: str) -> float | None:
    store = rt.store
    body = store.get("HAPair", namespace, name)
    if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
        return None
    pair = HAPair.from_body(body)
    old: dict[str, Any] = body.get("status") or {}
    errors = pair.validate()
    missing = [n for n in pair.nodes if store.get("Node", "", n) is None]
    if not errors and missing and old.get("state") in (None, "", "Invalid"):
        errors = [f"node {n!r} does not exist: fix spec.nodes" for n in missing]
    if errors:
        invalid = unready_status(
            body, "NodeNotFound" if missing else "InvalidSpec", "; ".join(errors)
        )
        invalid["state"] = "Invalid"
        await patch_cr_status(rt, "HAPair", HAPAIRS, body, invalid)
        return None

    # A Node whose NotReady may be stale (freshness) is not reported as taken over.
    mono = rt.mono()
    contact = rt.contact.state(mono)
    node_ok: dict[str, bool] = {}
    rechecks: list[float] = []
    for n in pair.nodes:
        doubt = freshness.node_doubt(
            n, freshness.evidence(store, n, None, contact, mono), contact, mono
        )
        node_ok[n] = _node_ok(store.get("Node", "", n)) or doubt is not None
        if doubt is not None:
            rechecks.append(doubt.left if doubt.left is not None else 1.0)
    svms: list[tuple[SVM, str | None]] = []
    owners: dict[str, str | None] = {}
    for svm_body in store.all("SVM", namespace):
        svm = SVM.from_body(svm_body)
        if svm.pair != name or (svm_body.get("metadata") or {}).get("deletionTimestamp"):
            continue
        lease = store.get("Lease", namespace, svm.lease_name)
        holder = read_ownership(lease).holder
        # Settled only once the SVM's own reconcile has moved its LIFs and reported.
        st = svm_body.get("status") or {}
        settled = st.get("currentNode") == holder
        svms.append((svm, holder if settled else None))
        owners[svm.meta.name] = holder
    summary = summarise(pair, node_ok, svms, owners)

    now = rt.clock()
    status: dict[str, Any] = {
        "observedGeneration": pair.meta.generation,
        "state": summary.state,
        "takeover": summary.takeover,
        "nodes": summary.nodes,
    }
    last_to = dict(old.get("lastTakeover") or {})
    last_gb = dict(old.get("lastGiveback") or {})
    events: list[tuple[str, str, bool]] = []
    if summary.takeover and old.get("takeover") != summary.takeover:
        partner = pair.partner(summary.taken_node)
        why = (
            "requested by spec.takeover"
            if summary.planned
            else f"{summary.taken_node} is not ready"
        )
        last_to = {
            "node": summary.taken_node,
            "partner": partner,
            "planned": summary.planned,
            "reason": why,
            "startTime": iso(now),
        }
        events.append(
            (
                "TakeoverStarted",
                f"{partner} takes over {summary.taken_node} ({why})",
                not summary.planned,
            )
        )
    if not summary.takeover and old.get("takeover"):
        node, _, partner = str(old["takeover"]).partition("->")
        last_gb = {
            "node": node,
            "partner": partner,
            "planned": pair.takeover is None and bool(last_to.get("planned")),
            "reason": "spec.takeover cleared"
            if last_to.get("planned")
            else f"{node} is healthy again",
            "startTime": iso(now),
        }
        events.append(("GivebackStarted", f"{partner} gives {node} back", False))
    if summary.complete:
        for record, label in ((last_to, "Takeover"), (last_gb, "Giveback")):
            active = (label == "Takeover") == bool(summary.takeover)
            if record.get("startTime") and not record.get("completionTime") and active:
                start = parse_time(record["startTime"]) or now
                record["completionTime"] = iso(now)
                record["durationSeconds"] = round(max(0.0, now - start), 3)
                events.append(
                    (f"{label}Complete", f"{label.lower()} of {record['node']} complete", False)
                )
    if last_to:
        status["lastTakeover"] = last_to
    if last_gb:
        status["lastGiveback"] = last_gb

    down = [n for n in pair.nodes if not node_ok[n]]
    ready = not down or bool(summary.takeover)
    msg = {
        "Normal": "both nodes serve their SVMs",
        "TakenOver": f"{summary.takeover}: the partner serves every SVM and LIF",
        "Degraded": f"not ready: {', '.join(down)}",
    }[summary.state]
    status["conditions"] = merge_conditions(
        old.get("conditions"),
        [
            Condition("Ready", ready, summary.state, msg),
            Condition("Available", ready, "Available" if ready else "Unavailable", msg),
            Condition("Degraded", summary.state != "Normal", summary.state, msg),
            Condition(
                "Progressing",
                not summary.complete,
                "Moving" if not summary.complete else "Stable",
                "SVMs are moving" if not summary.complete else "every SVM is where it belongs",
            ),
        ],
        pair.meta.generation,
        now_iso(),
    )
    for reason, message, warning in events:
        rt.post_event(body, reason, message, warning)
    await patch_cr_status(rt, "HAPair", HAPAIRS, body, status)
    return max(0.05, min(rechecks)) if rechecks else None


def _node_ok(body: Body | None) -> bool:
    facts = node_facts(body)
    return facts.exists and facts.ready
