"""Read health facts out of Node and Pod bodies (pure)."""

from __future__ import annotations

from typing import Any

from hasmb.contract import ANN_HANDLES, ANN_POD_HASH, parse_time
from hasmb.controller.placement import NodeFacts, PodFacts


def _ready_condition(body: dict[str, Any]) -> dict[str, Any] | None:
    for cond in (body.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return dict(cond)
    return None


def node_facts(body: dict[str, Any] | None) -> NodeFacts:
    if body is None:
        return NodeFacts(exists=False, ready=False)
    if (body.get("metadata") or {}).get("deletionTimestamp"):
        return NodeFacts(exists=True, ready=False)
    cond = _ready_condition(body)
    return NodeFacts(exists=True, ready=cond is not None and cond.get("status") == "True")


def pod_facts(body: dict[str, Any] | None, desired_hash: str) -> PodFacts:
    if body is None:
        return PodFacts(exists=False)
    md = body.get("metadata") or {}
    status = body.get("status") or {}
    cond = _ready_condition(body)
    ready = status.get("phase") == "Running" and cond is not None and cond.get("status") == "True"
    return PodFacts(
        exists=True,
        ready=ready,
        terminating=bool(md.get("deletionTimestamp"))
        or status.get("phase") in ("Failed", "Succeeded"),
        current=(md.get("annotations") or {}).get(ANN_POD_HASH) == desired_hash,
        ready_since=parse_time(cond.get("lastTransitionTime")) if ready and cond else None,
    )


def pod_node(body: dict[str, Any]) -> str | None:
    node = (body.get("spec") or {}).get("nodeName")
    return str(node) if node else None


def persistent_handles(body: dict[str, Any] | None) -> int:
    """The owning hasmb-smbd writes its persistent-handle count into the Lease it renews."""
    if body is None:
        return 0
    value = ((body.get("metadata") or {}).get("annotations") or {}).get(ANN_HANDLES, "0")
    try:
        return int(value)
    except ValueError:
        return 0
