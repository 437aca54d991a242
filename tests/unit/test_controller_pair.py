"""The HAPair summary: node states, takeover string, completeness."""

from __future__ import annotations

from typing import Any

from hasmb.controller.model import SVM, HAPair
from hasmb.controller.pair_reconcile import summarise


def _body(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name, "namespace": "ns", "uid": name}, "spec": spec}


def _svm(name: str, home: str) -> SVM:
    return SVM.from_body(
        _body("SVM", name, {"haPair": "p", "homeNode": home, "volume": {"hostPath": "/x"}})
    )


PAIR = HAPair.from_body(_body("HAPair", "p", {"nodes": ["a", "b"]}))
S1, S2 = _svm("s1", "a"), _svm("s2", "b")


def test_normal_pair() -> None:
    s = summarise(PAIR, {"a": True, "b": True}, [(S1, "a"), (S2, "b")])
    assert (s.state, s.takeover, s.complete) == ("Normal", "", True)
    assert [(n["name"], n["state"], n["ownedSVMs"], n["homeSVMs"]) for n in s.nodes] == [
        ("a", "Up", 1, 1),
        ("b", "Up", 1, 1),
    ]


def test_unplanned_takeover_of_a_down_node() -> None:
    moving = summarise(
        PAIR, {"a": False, "b": True}, [(S1, None), (S2, "b")], {"s1": "b", "s2": "b"}
    )
    assert (moving.state, moving.takeover, moving.planned, moving.complete) == (
        "TakenOver",
        "a->b",
        False,
        False,
    )
    assert moving.nodes[0]["state"] == "TakenOver" and moving.nodes[1]["ownedSVMs"] == 2
    done = summarise(PAIR, {"a": False, "b": True}, [(S1, "b"), (S2, "b")])
    assert done.complete


def test_planned_takeover_and_degraded_pair() -> None:
    held = HAPair.from_body(_body("HAPair", "p", {"nodes": ["a", "b"], "takeover": "b"}))
    s = summarise(held, {"a": True, "b": True}, [(S1, "a"), (S2, "a")])
    assert (s.takeover, s.planned, s.complete) == ("b->a", True, True)
    both_down = summarise(PAIR, {"a": False, "b": False}, [(S1, "a"), (S2, "b")])
    assert both_down.state == "Degraded" and both_down.takeover == ""
