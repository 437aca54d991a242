"""Status of SVMs, Shares and LIFs: conditions, fields, and an Event when readiness changes.

Every write is a merge patch of the status subresource, skipped when nothing it
sets has changed, so reconciles that find the world as they left it cost no
API calls.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hasmb.contract import Reason, micro_time
from hasmb.controller.conditions import Condition, merge_conditions, now_iso, status_changed
from hasmb.controller.facts import persistent_handles
from hasmb.controller.model import LIF, SVM, Share
from hasmb.controller.placement import LifDecision, OwnerDecision, PairView
from hasmb.controller.runtime import Runtime
from hasmb.kube.client import LIFS, SHARES, SVMS, ApiError

Body = dict[str, Any]


def iso(ts: float) -> str:
    return micro_time(ts)[:19] + "Z"


async def event(rt: Runtime, body: Body, reason: str, message: str, warning: bool = False) -> None:
    # Fire and forget: an Event is never worth delaying or failing a reconcile for.
    rt.post_event(body, reason, message, warning)


def unready_status(body: Body, reason: str, message: str) -> dict[str, Any]:
    gen = int(body["metadata"].get("generation") or 0)
    old = (body.get("status") or {}).get("conditions")
    return {
        "observedGeneration": gen,
        "conditions": merge_conditions(
            old,
            [
                Condition("Ready", False, reason, message),
                Condition("Available", False, reason, message),
                Condition("Degraded", True, reason, message),
                Condition("Progressing", False, reason, message),
            ],
            gen,
            now_iso(),
        ),
    }


async def patch_cr_status(
    rt: Runtime, kind: str, res: Any, body: Body, status: dict[str, Any]
) -> None:
    if not status_changed(body.get("status"), status):
        return
    md = body["metadata"]
    try:
        patched = await rt.kube.patch_status(res, md["namespace"], md["name"], status)
    except ApiError as exc:
        if exc.not_found:
            return
        raise
    rt.store.put(kind, patched)
    old_ready = ready_of(body.get("status"))
    new_ready = ready_of(status)
    # An Event when readiness or its reason changes, not for every new message.
    if new_ready is not None and (old_ready is None or new_ready[:2] != old_ready[:2]):
        ready, reason, message = new_ready
        await event(
            rt,
            body,
            "Ready" if ready == "True" else reason,
            message or reason,
            warning=ready != "True",
        )


def ready_of(status: dict[str, Any] | None) -> tuple[str, str, str] | None:
    for cond in (status or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return (str(cond.get("status")), str(cond.get("reason")), str(cond.get("message", "")))
    return None


async def write_invalid(
    rt: Runtime,
    body: Body,
    svm: SVM,
    errors: list[str],
    share_bodies: list[Body],
    lif_bodies: list[Body],
) -> None:
    message = "; ".join(errors) or "invalid"
    reason = (
        "PairNotFound" if any("does not exist in namespace" in e for e in errors) else "InvalidSpec"
    )
    if any("of HAPair" in e and "does not exist" in e for e in errors):
        reason = "NodeNotFound"
    await patch_cr_status(rt, "SVM", SVMS, body, unready_status(body, reason, message))
    for kind, res, bodies in (("Share", SHARES, share_bodies), ("LIF", LIFS, lif_bodies)):
        for b in bodies:
            await patch_cr_status(
                rt,
                kind,
                res,
                b,
                unready_status(b, "SVMNotReady", f"SVM {svm.meta.name}: {message}"),
            )


async def write_svm_status(
    rt: Runtime,
    body: Body,
    svm: SVM,
    view: PairView,
    decision: OwnerDecision,
    owner: str | None,
    epoch: int,
    pods: dict[str, Body],
    waiting: list[str],
    desired_hash: str,
) -> None:
    serving = owner is not None and view.serving(owner)
    preferred = svm.preferred_node()
    unhealthy = [n for n in view.nodes if not view.serving(n)]
    outdated = [n for n in view.nodes if view.outdated(n)]
    missing = [n for n in view.nodes if not view.pod_facts[n].exists]
    conds = [
        Condition(
            "Ready",
            serving,
            "Serving"
            if serving
            else (
                "NoOwner"
                if owner is None
                else ("FailoverHeld" if decision.held else "OwnerNotServing")
            ),
            f"served by {owner}, epoch {epoch}"
            if serving
            else (decision.message or "waiting for a serving pod"),
        ),
        Condition(
            "Available",
            serving,
            "Available" if serving else "Unavailable",
            f"owner {owner} is serving" if serving else "no pod of the pair serves the SVM",
        ),
        Condition(
            "Degraded",
            bool(unhealthy)
            or (
                owner is not None
                and owner != preferred
                and view.takeover is None
                and decision.reason not in (Reason.UPGRADE, Reason.RELOCATED)
            ),
            "PodsNotServing" if unhealthy else ("TakenOver" if owner != preferred else "Healthy"),
            (
                f"not serving: {', '.join(unhealthy)}"
                if unhealthy
                else f"owned by {owner}, home {preferred}"
            ),
        ),
        Condition(
            "Progressing",
            bool(
                outdated
                or missing
                or decision.requeue_after is not None
                or (owner is not None and owner != decision.owner)
            ),
            "FailoverHeld"
            if decision.held
            else (
                "Upgrading"
                if outdated
                else (
                    "CreatingPods"
                    if missing
                    else ("GivebackPending" if decision.requeue_after else "Stable")
                )
            ),
            (
                f"replacing pods on {', '.join(outdated)}"
                if outdated and not decision.held
                else (decision.message or "")
            ),
        ),
    ]
    gen = int(body["metadata"].get("generation") or 0)
    old = body.get("status") or {}
    pods_status = []
    for node in view.nodes:
        p = pods.get(node)
        pods_status.append(
            {
                "node": node,
                "name": svm.pod_name(node),
                "ready": view.serving(node),
                "image": (((p or {}).get("spec") or {}).get("containers") or [{}])[0].get(
                    "image", ""
                ),
                "role": "owner" if node == owner else "standby",
            }
        )
    upgrade_phase = (
        "Upgrading"
        if outdated
        else (
            "Complete"
            if old.get("upgrade", {}).get("phase") in ("Upgrading", "Complete")
            else "Idle"
        )
    )
    status: dict[str, Any] = {
        "observedGeneration": gen,
        "currentNode": owner or "",
        "homeNode": svm.home_node,
        "epoch": epoch,
        "persistentHandles": persistent_handles(
            rt.store.get("Lease", svm.meta.namespace, svm.lease_name)
        ),
        "ownerReason": decision.reason.value
        if owner == decision.owner
        else (old.get("ownerReason") or ""),
        "lease": svm.lease_name,
        "configMap": svm.config_map_name,
        "image": svm.image if not outdated else old.get("image", ""),
        "upgrade": {
            "phase": upgrade_phase,
            "node": (waiting or outdated or [""])[0],
            "image": svm.image,
            "message": f"replacing {', '.join(outdated)}"
            if outdated
            else "all pods run the desired image",
        },
        "pods": pods_status,
    }
    status["conditions"] = merge_conditions(old.get("conditions"), conds, gen, now_iso())
    await patch_cr_status(rt, "SVM", SVMS, body, status)


def share_progressing(share: Share) -> Condition:
    if share.serving_volume != share.volume:  # docs/volume-move.md
        move = f"moving from volume {share.serving_volume} to {share.volume}"
        return Condition("Progressing", True, "VolumeMove", move)
    return Condition("Progressing", False, "Stable", "in the SVM's config")


async def write_share_statuses(
    rt: Runtime, shares: list[Share], owner: str | None, serving: bool
) -> None:
    writes = []
    for share in shares:
        body = rt.store.get("Share", share.meta.namespace, share.meta.name)
        if body is None:
            continue
        errors = share.validate()
        gen = share.meta.generation
        if errors:
            status = unready_status(body, "InvalidSpec", "; ".join(errors))
        else:
            msg = f"served by {owner}" if serving else "the SVM has no serving pod"
            status = {
                "observedGeneration": gen,
                "shareName": share.share_name,
                "exportPath": share.export_path,
                "currentNode": owner or "",
                "volume": share.serving_volume,
                "conditions": merge_conditions(
                    (body.get("status") or {}).get("conditions"),
                    [
                        Condition("Ready", serving, "Serving" if serving else "SVMNotServing", msg),
                        Condition(
                            "Available", serving, "Serving" if serving else "SVMNotServing", msg
                        ),
                        Condition(
                            "Degraded",
                            not serving,
                            "SVMNotServing" if not serving else "Healthy",
                            msg,
                        ),
                        share_progressing(share),
                    ],
                    gen,
                    now_iso(),
                ),
            }
        writes.append(patch_cr_status(rt, "Share", SHARES, body, status))
    await asyncio.gather(*writes)


async def write_lif_statuses(
    rt: Runtime,
    lif_states: list[tuple[Body, LIF, list[str], LifDecision | None, Body | None]],
    svm: SVM,
) -> None:
    writes = []
    for lif_body, lif, errors, d, svc in lif_states:
        body = rt.store.get("LIF", lif.meta.namespace, lif.meta.name) or lif_body
        gen = lif.meta.generation
        if errors or d is None:
            reason = "IPConflict" if any("already used" in e for e in errors) else "InvalidSpec"
            status = unready_status(body, reason, "; ".join(errors))
            status.update({"state": "Invalid", "homeNode": lif.home_node})
            writes.append(patch_cr_status(rt, "LIF", LIFS, body, status))
            continue
        ip = ((svc or {}).get("spec") or {}).get("clusterIP") or ""
        up = d.state != "Down"
        msg = f"Service {lif.service_name} ({ip}) selects the pod on {d.node}"
        if d.held:
            msg += f"; holding its failover: {d.held}"
        status = {
            "observedGeneration": gen,
            "ip": ip,
            "service": lif.service_name,
            "homeNode": lif.home_node,
            "currentNode": d.node,
            "state": d.state,
            "conditions": merge_conditions(
                (body.get("status") or {}).get("conditions"),
                [
                    Condition("Ready", up, d.state if up else "NoServingPod", msg),
                    Condition("Available", up, "Available" if up else "NoServingPod", msg),
                    Condition("Degraded", d.state in ("FailedOver", "Down"), d.state, msg),
                    Condition(
                        "Progressing",
                        d.requeue_after is not None,
                        "FailoverHeld"
                        if d.held
                        else ("RevertPending" if d.requeue_after else "Stable"),
                        msg,
                    ),
                ],
                gen,
                now_iso(),
            ),
        }
        old_node = (body.get("status") or {}).get("currentNode")
        if old_node and old_node != d.node:
            status["lastMove"] = {
                "from": old_node,
                "to": d.node,
                "reason": d.state,
                "time": now_iso(),
            }
        writes.append(patch_cr_status(rt, "LIF", LIFS, body, status))
    await asyncio.gather(*writes)
