"""Reconcile one SVM: ownership Lease, LIF Services, pods, ConfigMaps and statuses.

Level-triggered and idempotent: every call recomputes the whole desired state
from the cached view (`Store`) with the pure decisions of `placement`, applies
the differences and writes status. Order matters for the never-both-down rule:
ownership moves first (a CAS on the Lease), then the LIF Services follow, and
only then may a pod be deleted. Bad status that may be stale (`freshness`) moves
nothing away from a node; a holder's Lease is judged on the operator's own clock.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import Any

from hasmb import contract
from hasmb.contract import UNPLANNED, Reason, parse_time
from hasmb.controller import freshness, render, status_writer, volume_move
from hasmb.controller.facts import node_facts, pod_facts, pod_node
from hasmb.controller.model import LIF, SVM, HAPair, Share, lif_ip_owner
from hasmb.controller.placement import (
    LifDecision,
    OwnerDecision,
    PairView,
    after_partner_failover,
    decide_lif,
    decide_owner,
    hold_takeover,
    pod_actions,
)
from hasmb.controller.runtime import Runtime
from hasmb.controller.store import Store
from hasmb.kube.client import (
    CONFIGMAPS,
    HAPAIRS,
    LEASES,
    LIFS,
    NODES,
    PODS,
    ROLEBINDINGS,
    SERVICEACCOUNTS,
    SERVICES,
    SHARES,
    SVMS,
    ApiError,
)

log = logging.getLogger("hasmb.operator.svm")

Body = dict[str, Any]


def _deleting(body: Body) -> bool:
    return bool((body.get("metadata") or {}).get("deletionTimestamp"))


async def _create_or_fetch(rt: Runtime, kind: str, res: Any, body: Body) -> Body:
    """Create; when it already exists (a stale cache), take the live object instead."""
    try:
        created = await rt.kube.create(res, body)
    except ApiError as exc:
        if not exc.conflict:
            raise
        md = body["metadata"]
        created = await rt.kube.get(res, md.get("namespace"), md["name"])
    rt.store.put(kind, created)
    return created


def _failure_time(pod: Body | None, node: Body | None, now: float) -> float:
    """Best estimate of when the serving side failed (for takeover durations)."""
    candidates: list[float] = []
    if pod is not None:
        md = pod.get("metadata") or {}
        deleted = parse_time(md.get("deletionTimestamp"))
        if deleted is not None:
            candidates.append(deleted - float(md.get("deletionGracePeriodSeconds") or 0))
        for cond in (pod.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "Ready" and cond.get("status") != "True":
                t = parse_time(cond.get("lastTransitionTime"))
                if t is not None:
                    candidates.append(t)
    if node is not None:
        for cond in (node.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "Ready" and cond.get("status") != "True":
                t = parse_time(cond.get("lastTransitionTime"))
                if t is not None:
                    candidates.append(t)
    valid = [t for t in candidates if t <= now]
    return min(valid) if valid else now


async def reconcile_svm(rt: Runtime, namespace: str, name: str) -> float | None:
    store = rt.store
    body = store.get("SVM", namespace, name)
    share_bodies = store.of_svm("Share", namespace, name)
    lif_bodies = store.of_svm("LIF", namespace, name)
    if body is None or _deleting(body):
        await _orphaned(rt, namespace, name, share_bodies, lif_bodies)
        return None

    svm = SVM.from_body(body)
    pair_body = store.get("HAPair", namespace, svm.pair)
    pair = HAPair.from_body(pair_body) if pair_body is not None else None
    lease_body = store.get("Lease", namespace, svm.lease_name)
    own = contract.read_ownership(lease_body)

    errors = svm.validate(pair)
    if pair is not None:
        errors += [f"HAPair {pair.meta.name}: {e}" for e in pair.validate()]
        if own.holder is None:
            # Before the SVM ever ran, a missing node is a typo, not a failure.
            for node in pair.nodes:
                if store.get("Node", "", node) is None:
                    errors.append(
                        f"node {node!r} of HAPair {pair.meta.name} does not exist: "
                        "fix spec.nodes of the HAPair"
                    )
    if errors or pair is None:
        await status_writer.write_invalid(rt, body, svm, errors, share_bodies, lif_bodies)
        return None

    now = rt.clock()
    desired_hash = render.pod_hash(svm)
    pods: dict[str, Body] = {}
    strays: list[Body] = []
    for pod_body in store.of_svm("Pod", namespace, name):
        on = pod_node(pod_body)
        if on is not None and on in pair.nodes and pod_body["metadata"]["name"] == svm.pod_name(on):
            pods[on] = pod_body
        else:
            strays.append(pod_body)
    nodes = (pair.nodes[0], pair.nodes[1])
    trust = _trust(rt, svm, own, nodes, pods)
    view = PairView(
        nodes=nodes,
        node_facts={n: node_facts(store.get("Node", "", n)) for n in nodes},
        pod_facts={n: pod_facts(pods.get(n), desired_hash) for n in nodes},
        takeover=pair.takeover,
        auto_giveback=pair.auto_giveback,
        giveback_delay=pair.auto_giveback_delay,
        now=now,
        doubted=trust.doubted,
        recheck_after=trust.recheck_after,
        hold_deletions=trust.hold_deletions,
    )
    holder_reason = _reason(own.reason)
    view = after_partner_failover(view, own.holder, holder_reason, own.acquired)
    decision = decide_owner(view, svm.home_node, svm.relocate_to, own.holder, holder_reason)

    if decision.move and own.holder in nodes and not view.serving(own.holder or ""):
        # Taking ownership away is destructive: confirm on live objects, not the cache.
        holder = own.holder or ""
        live_pod = await rt.kube.get_or_none(PODS, namespace, svm.pod_name(holder))
        live_node = await rt.kube.get_or_none(NODES, None, holder)
        if live_pod is not None:
            store.put("Pod", live_pod)
        if live_node is not None:
            store.put("Node", live_node)
        fresh = pod_facts(live_pod, desired_hash)
        fresh_node = node_facts(live_node)
        if fresh.exists and fresh.ready and not fresh.terminating and fresh_node.ready:
            log.info(
                "svm %s/%s: cache said %s was down, live objects disagree", namespace, name, holder
            )
            return 0.0
        # Judged again now, on what was just read: the reads may have waited out an outage.
        mono = rt.mono()
        contact = rt.contact.state(mono)
        seen = store.seen_of("Lease", namespace, svm.lease_name)
        lapsed = freshness.holder_lapsed(own, seen, contact, mono)
        doubt = freshness.doubt(
            holder,
            freshness.evidence(store, holder, live_pod, contact, mono, lapsed, live_node),
            contact,
            mono,
        )
        left = freshness.lease_left(own, seen, contact, mono)
        if decision.reason is Reason.FAILOVER and doubt is not None:
            recheck = doubt.left if doubt.left is not None else 1.0
            decision = hold_takeover(
                replace(view, recheck_after=recheck), holder, holder_reason, doubt.why
            )
        elif fresh.exists and not fresh.terminating and left > 0:
            # The holder may still be serving behind a partition: it fences itself
            # when it cannot renew, so its lease must run out before the partner
            # takes over. Judged on this process's clock from when the renewal was seen.
            rt.failure_seen.setdefault((namespace, name), _failure_time(live_pod, live_node, now))
            ago = mono - seen.changed if seen is not None else 0.0
            wait = left if not math.isinf(left) else 1.0
            decision = OwnerDecision(
                holder,
                False,
                holder_reason or Reason.FAILOVER,
                False,
                requeue_after=wait,
                message=(
                    f"{holder} is not serving; takeover when its lease expires in {wait:.1f}s "
                    f"(renewal seen {ago:.1f} s ago on the operator's clock, "
                    f"fencing={own.fencing or 'lease'})"
                ),
                held=True,
            )
        else:
            rt.failure_seen.setdefault((namespace, name), _failure_time(live_pod, live_node, now))
    report_hold(rt, body, ("SVM", namespace, name), decision.message if decision.held else "")

    owner = own.holder
    epoch = own.epoch
    move_record: dict[str, Any] | None = None
    if decision.owner is not None and (decision.move or own.reason != decision.reason.value):
        new_epoch = own.epoch + 1 if decision.move else own.epoch
        lease = render.lease(svm, decision.owner, new_epoch, decision.reason.value, now, lease_body)
        try:
            if lease_body is None:
                lease.setdefault("metadata", {}).pop("resourceVersion", None)
                written = await rt.kube.create(LEASES, lease)
            else:
                written = await rt.kube.replace(LEASES, lease)
        except ApiError as exc:
            if not exc.conflict:
                raise
            # Someone else (the partner pod, another operator) moved first: re-read, re-decide.
            live = await rt.kube.get_or_none(LEASES, namespace, svm.lease_name)
            if live is not None:
                store.put("Lease", live)
            return 0.0
        store.put("Lease", written)
        if decision.move:
            move_record = await _record_move(
                rt, body, svm, pair, own.holder, decision, new_epoch, now
            )
        owner, epoch = decision.owner, new_epoch
    elif holder_reason is Reason.PARTNER_FAILOVER and own.holder in nodes:
        # The partner pod moved the Lease itself: Event and status.lastTakeover, once
        # per epoch (status names the epoch it recorded, so a restart does not repeat it).
        last = (body.get("status") or {}).get("lastTakeover") or {}
        if last.get("epoch") != own.epoch:
            old = view.partner(own.holder or "")
            pod_move = OwnerDecision(
                own.holder,
                True,
                Reason.PARTNER_FAILOVER,
                False,
                message=f"the pod on {own.holder} saw {old} stop serving and took over",
            )
            start = own.acquired if own.acquired is not None else now
            rt.failure_seen.setdefault((namespace, name), start)
            move_record = await _record_move(rt, body, svm, pair, old, pod_move, own.epoch, now)

    # LIFs follow ownership before any pod may go away.
    lif_claims = [
        (str(b["metadata"].get("creationTimestamp", "")), LIF.from_body(b))
        for b in store.all("LIF", namespace)
    ]
    allocated = {lif.meta.name for _, lif in lif_claims if _service_holds_ip(store, namespace, lif)}
    ip_holders = lif_ip_owner(lif_claims, allocated)
    lif_states: list[tuple[Body, LIF, list[str], LifDecision | None, Body | None]] = []
    requeues: list[float] = []
    if decision.requeue_after is not None:
        requeues.append(decision.requeue_after)
    for lif_body in lif_bodies:
        lif = LIF.from_body(lif_body)
        lif_errors = lif.validate(pair, ip_holders.get(lif.ip) if lif.ip else None)
        svc = store.get("Service", namespace, lif.service_name)
        if lif_errors:
            lif_states.append((lif_body, lif, lif_errors, None, svc))
            continue
        current = ((svc or {}).get("spec") or {}).get("selector", {}).get(contract.LABEL_NODE)
        current_state = (
            ((svc or {}).get("metadata") or {}).get("annotations", {}).get(contract.ANN_LIF_STATE)
        )
        lif_decision = decide_lif(
            view, lif.home_node, lif.migrate_to, current, owner, current_state
        )
        held = f"holding failover of LIF {lif.meta.name} from {current}: {lif_decision.held}"
        report_hold(
            rt, lif_body, ("LIF", namespace, lif.meta.name), held if lif_decision.held else ""
        )
        if lif_decision.requeue_after is not None:
            requeues.append(lif_decision.requeue_after)
        if svc is None:
            try:
                svc = await _create_or_fetch(
                    rt,
                    "Service",
                    SERVICES,
                    render.service(lif, name, lif_decision.node, lif_decision.state),
                )
            except ApiError as exc:
                if exc.status not in (409, 422):
                    raise
                lif_states.append(
                    (lif_body, lif, [f"cannot create Service: {exc.message}"], None, None)
                )
                continue
        else:
            annotations = (svc.get("metadata") or {}).get("annotations") or {}
            if (
                current != lif_decision.node
                or annotations.get(contract.ANN_LIF_STATE) != lif_decision.state
            ):
                svc = await rt.kube.patch(
                    SERVICES,
                    namespace,
                    lif.service_name,
                    render.selector_patch(lif_decision.node, lif_decision.state),
                )
                store.put("Service", svc)
                if current != lif_decision.node:
                    await _lif_moved(rt, lif_body, current, lif_decision)
        lif_states.append((lif_body, lif, [], lif_decision, svc))
    if move_record is not None:
        await _complete_move(rt, body, move_record)

    # Pods: create missing ones, replace outdated ones one at a time.
    lif_nodes = [d.node for _, _, _, d, _ in lif_states if d is not None]
    owner_since = now if decision.move and decision.owner is not None else own.acquired
    actions = pod_actions(view, owner, lif_nodes, owner_since)
    if actions.requeue_after is not None:
        requeues.append(actions.requeue_after)
    if actions.create:
        await _ensure_smbd_account(rt, namespace)
    for node in actions.create:
        try:
            await _create_or_fetch(rt, "Pod", PODS, render.pod(svm, node))
        except ApiError as exc:
            if "serviceaccount" in exc.message.lower():
                rt.smbd_accounts.discard(namespace)  # deleted behind our back: recreate
            raise
    for node in actions.delete:
        await rt.kube.delete(PODS, namespace, svm.pod_name(node))
        await status_writer.event(
            rt, body, "Upgrading", f"replacing pod on {node} with image {svm.image}"
        )
    for stray in strays:
        if not _deleting(stray):
            await rt.kube.delete(PODS, namespace, stray["metadata"]["name"])

    # Volume moves first: a completed cutover sets a Share's status.volume, which the
    # ConfigMap below then serves (docs/volume-move.md).
    share_bodies, move_requeue = await volume_move.drive(
        rt, svm, share_bodies, owner, pods, view.serving(owner or "")
    )
    if move_requeue is not None:
        requeues.append(move_requeue)
    # ConfigMaps: shares and witness interfaces reach running pods without a restart.
    shares = [Share.from_body(b) for b in share_bodies]
    valid_shares = [s for s in shares if not s.validate()]
    placements = [
        render.LifPlacement(
            name=lif.meta.name,
            ip=((svc or {}).get("spec") or {}).get("clusterIP") or lif.ip,
            node=d.node,
            available=d.state != "Down",
        )
        for _, lif, _, d, svc in lif_states
        if d is not None
    ]
    cm = render.config_map(svm, render.smbd_config(svm, valid_shares, placements))
    live_cm = store.get("ConfigMap", namespace, svm.config_map_name)
    if live_cm is None:
        live_cm = await _create_or_fetch(rt, "ConfigMap", CONFIGMAPS, cm)
    want_hash = cm["metadata"]["annotations"][contract.ANN_CONFIG_HASH]
    have_hash = ((live_cm.get("metadata") or {}).get("annotations") or {}).get(
        contract.ANN_CONFIG_HASH
    )
    if have_hash != want_hash:
        patched = await rt.kube.patch(
            CONFIGMAPS,
            namespace,
            svm.config_map_name,
            {"metadata": {"annotations": cm["metadata"]["annotations"]}, "data": cm["data"]},
        )
        store.put("ConfigMap", patched)
    if svm.state_store == "configmap":
        for state_obj in render.state_store_objects(svm):
            if store.get("ConfigMap", namespace, state_obj["metadata"]["name"]) is None:
                # Never overwrite: an existing object holds handle state.
                await _create_or_fetch(rt, "ConfigMap", CONFIGMAPS, state_obj)

    await status_writer.write_svm_status(
        rt, body, svm, view, decision, owner, epoch, pods, actions.waiting, desired_hash
    )
    await status_writer.write_share_statuses(rt, shares, owner, view.serving(owner or ""))
    await status_writer.write_lif_statuses(rt, lif_states, svm)
    return min(requeues) if requeues else None


def _trust(
    rt: Runtime, svm: SVM, own: contract.Ownership, nodes: tuple[str, str], pods: dict[str, Body]
) -> freshness.Trust:
    """The doubts over the pair's nodes, from the Store's bodies and observation times."""
    mono = rt.mono()
    contact = rt.contact.state(mono)
    seen = rt.store.seen_of("Lease", svm.meta.namespace, svm.lease_name)
    lapsed = freshness.holder_lapsed(own, seen, contact, mono)
    evidence = {
        n: freshness.evidence(rt.store, n, pods.get(n), contact, mono, lapsed and n == own.holder)
        for n in nodes
    }
    return freshness.judge(evidence, contact, mono)


def report_hold(rt: Runtime, body: Body, key: tuple[str, str, str], message: str) -> None:
    """Log (and post an Event) when a hold starts, log when it ends; `message` empty: none."""
    kind, namespace, name = key
    before = rt.holds.get(key)
    if message and before is None:
        rt.holds[key] = message
        log.info("%s %s/%s: %s", kind.lower(), namespace, name, message)
        rt.post_event(body, "FailoverHeld", message, False)
    elif message and before != message:
        rt.holds[key] = message
        log.debug("%s %s/%s: %s", kind.lower(), namespace, name, message)
    elif not message and before is not None:
        del rt.holds[key]
        log.info("%s %s/%s: no longer held (%s)", kind.lower(), namespace, name, before)


async def _ensure_smbd_account(rt: Runtime, namespace: str) -> None:
    """The pods' ServiceAccount and its RoleBinding to ClusterRole hasmb-smbd."""
    if namespace in rt.smbd_accounts:
        return
    for res, body in (
        (SERVICEACCOUNTS, render.smbd_service_account(namespace)),
        (ROLEBINDINGS, render.smbd_role_binding(namespace)),
    ):
        if await rt.kube.get_or_none(res, namespace, render.SMBD_ACCOUNT) is None:
            try:
                await rt.kube.create(res, body)
            except ApiError as exc:
                if not exc.conflict:
                    raise
    rt.smbd_accounts.add(namespace)


def _reason(text: str | None) -> Reason | None:
    try:
        return Reason(text) if text else None
    except ValueError:
        return None


async def _record_move(
    rt: Runtime,
    body: Body,
    svm: SVM,
    pair: HAPair,
    old: str | None,
    decision: OwnerDecision,
    epoch: int,
    now: float,
) -> dict[str, Any]:
    key = (svm.meta.namespace, svm.meta.name)
    start = rt.failure_seen.pop(key, now)
    kind = "lastGiveback" if decision.reason is Reason.GIVEBACK else "lastTakeover"
    if old is None:
        kind = ""  # the first owner: nothing moved
    event_reason = {
        Reason.FAILOVER: "Takeover",
        Reason.PARTNER_FAILOVER: "Takeover",
        Reason.GIVEBACK: "Giveback",
        Reason.PLANNED_TAKEOVER: "PlannedTakeover",
        Reason.RELOCATED: "Relocated",
        Reason.UPGRADE: "UpgradeTakeover",
        Reason.HOME: "Owned",
    }[decision.reason]
    if old is None:
        event_reason = "Owned"
    where = f"{old} -> {decision.owner}" if old else f"owner {decision.owner}"
    msg = f"{decision.message or decision.reason.value}; epoch {epoch} ({where})"
    await status_writer.event(rt, body, event_reason, msg, warning=decision.reason in UNPLANNED)
    log.info("svm %s/%s: %s", svm.meta.namespace, svm.meta.name, msg)
    if (
        decision.reason is Reason.FAILOVER
        and old is not None
        and old == svm.preferred_node()
        and not pair.auto_giveback
        and pair.takeover is None
    ):
        # autoGiveback off: hold the takeover declaratively until someone gives back.
        await rt.kube.patch(
            HAPAIRS, pair.meta.namespace, pair.meta.name, {"spec": {"takeover": old}}
        )
        pair_body = rt.store.get("HAPair", pair.meta.namespace, pair.meta.name)
        if pair_body is not None:
            await status_writer.event(
                rt,
                pair_body,
                "TakeoverHeld",
                f"autoGiveback is off: {old} stays taken over; run `kubectl hasmb giveback {old}`",
                warning=True,
            )
    rt.metrics.ownership_moves.labels(decision.reason.value).inc()
    return {
        "kind": kind,
        "reason": decision.reason.value,
        "record": {
            "from": old or "",
            "to": decision.owner or "",
            "epoch": epoch,
            "planned": decision.planned,
            "reason": decision.message or decision.reason.value,
            "startTime": status_writer.iso(start),
            "_start": start,
        },
    }


async def _complete_move(rt: Runtime, body: Body, move: dict[str, Any]) -> None:
    if not move["kind"]:
        return
    record = dict(move["record"])
    start = record.pop("_start")
    end = rt.clock()
    record["completionTime"] = status_writer.iso(end)
    record["durationSeconds"] = round(max(0.0, end - start), 3)
    rt.metrics.move_seconds.labels(move["reason"]).observe(record["durationSeconds"])
    md = body["metadata"]
    patched = await rt.kube.patch_status(SVMS, md["namespace"], md["name"], {move["kind"]: record})
    rt.store.put("SVM", patched)
    body.setdefault("status", {})[move["kind"]] = record


async def _lif_moved(rt: Runtime, lif_body: Body, old: str | None, d: LifDecision) -> None:
    rt.metrics.lif_moves.labels(d.state).inc()
    reason = {"Home": "Reverted", "Migrated": "Migrated", "FailedOver": "FailedOver"}.get(
        d.state, d.state
    )
    await status_writer.event(
        rt,
        lif_body,
        reason,
        f"LIF moved {old} -> {d.node} ({d.state})",
        warning=d.state in ("FailedOver", "Down"),
    )


async def _orphaned(
    rt: Runtime, namespace: str, name: str, share_bodies: list[Body], lif_bodies: list[Body]
) -> None:
    """The SVM is gone: its LIF Services go too; Shares and LIFs say why they do nothing."""
    for svc in rt.store.of_svm("Service", namespace, name):
        if not _deleting(svc):
            await rt.kube.delete(SERVICES, namespace, svc["metadata"]["name"])
    msg = f"SVM {name!r} does not exist in namespace {namespace}"
    for kind, res, bodies in (("Share", SHARES, share_bodies), ("LIF", LIFS, lif_bodies)):
        for b in bodies:
            await status_writer.patch_cr_status(
                rt, kind, res, b, status_writer.unready_status(b, "SVMNotFound", msg)
            )


def _service_holds_ip(store: Store, namespace: str, lif: LIF) -> bool:
    svc = store.get("Service", namespace, lif.service_name)
    return bool(svc is not None and lif.ip and svc.get("spec", {}).get("clusterIP") == lif.ip)
