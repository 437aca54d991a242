"""The operator's cached view: ordering of versions and repair from a LIST (Store.sync)."""

from __future__ import annotations

from typing import Any

from hasmb.controller.store import Store


def pod(name: str, rv: int, ns: str = "ns", uid: str = "") -> dict[str, Any]:
    return {
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "resourceVersion": str(rv),
            "uid": uid or f"uid-{name}",
            "labels": {"hasmb.io/svm": "svm1"},
        },
    }


def names(store: Store) -> set[str]:
    return {b["metadata"]["name"] for b in store.all("Pod")}


def test_sync_forgets_what_the_list_lacks_and_adds_what_it_holds() -> None:
    store = Store()
    store.put("Pod", pod("lost", 10))  # deleted while nobody watched
    store.put("Pod", pod("kept", 11))
    store.sync("Pod", [pod("kept", 11), pod("new", 15)], 20, None)
    assert names(store) == {"kept", "new"}
    assert [b["metadata"]["name"] for b in store.of_svm("Pod", "ns", "svm1")] == ["kept", "new"]


def test_sync_keeps_objects_newer_than_the_list() -> None:
    store = Store()
    store.put("Pod", pod("created-after-the-list", 30))
    store.put("Pod", pod("updated", 31))
    store.sync("Pod", [pod("updated", 12)], 20, None)
    assert names(store) == {"created-after-the-list", "updated"}
    updated = store.get("Pod", "ns", "updated")
    assert updated is not None and updated["metadata"]["resourceVersion"] == "31"


def test_sync_of_one_namespace_leaves_the_others_alone() -> None:
    store = Store()
    store.put("Pod", pod("a", 5, ns="one"))
    store.put("Pod", pod("b", 5, ns="two"))
    store.sync("Pod", [], 20, {"one"})
    assert names(store) == {"b"}


def test_a_deleted_object_never_comes_back_from_a_stale_list() -> None:
    store = Store()
    body = pod("gone", 5)
    store.put("Pod", body)
    store.remove("Pod", body)
    store.sync("Pod", [pod("gone", 5)], 20, None)
    assert names(store) == set()
