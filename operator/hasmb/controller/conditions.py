"""Status conditions (Ready, Available, Degraded, Progressing) with stable timestamps."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

CONDITION_TYPES = ("Ready", "Available", "Degraded", "Progressing")


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str = ""


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(
    old: list[dict[str, Any]] | None,
    new: list[Condition],
    generation: int,
    now: str,
) -> list[dict[str, Any]]:
    """New condition list; lastTransitionTime moves only when a status flips."""
    previous = {c.get("type"): c for c in old or []}
    out = []
    for cond in new:
        status = "True" if cond.status else "False"
        prev = previous.get(cond.type)
        since = now
        if prev is not None and prev.get("status") == status and prev.get("lastTransitionTime"):
            since = prev["lastTransitionTime"]
        out.append(
            {
                "type": cond.type,
                "status": status,
                "reason": cond.reason,
                "message": cond.message,
                "observedGeneration": generation,
                "lastTransitionTime": since,
            }
        )
    return out


def status_changed(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """True when `new` differs from `old` in any field it sets."""
    old = old or {}
    return any(old.get(k) != v for k, v in new.items())


def condition(status: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for cond in (status or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None
