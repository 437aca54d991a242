"""The operator's cached view: ordering of versions and repair from a LIST (Store.sync)."""

from __future__ import annotations

from typing import Any, cast

from hasmb.controller.runtime import WATCHED, Runtime
from hasmb.controller.store import Store
from hasmb.kube.client import ApiError, KubeClient


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


class FlakyApi:
    """Answers LISTs like a fresh API server: 429 for the first `failures` calls."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def list_versioned(
        self, res: Any, namespace: str | None = None, label_selector: str | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        self.calls += 1
        if self.calls <= self.failures:
            raise ApiError(429, "TooManyRequests", "storage is (re)initializing")
        return ([pod("p", 5)] if res.plural == "pods" else []), 7


async def test_startup_list_waits_for_a_server_that_is_not_ready_yet() -> None:
    api = FlakyApi(failures=3)
    rt = Runtime(kube=cast(KubeClient, api))
    await rt.prime_at_start(patience=10.0)
    assert names(rt.store) == {"p"}
    assert api.calls == 3 + len(WATCHED) + 1  # + the kubelets' Leases in kube-node-lease


async def test_startup_list_gives_up_after_its_patience() -> None:
    api = FlakyApi(failures=10**6)
    rt = Runtime(kube=cast(KubeClient, api))
    await rt.prime_at_start(patience=0.5)  # returns: the operator starts anyway
    assert names(rt.store) == set() and api.calls >= 2
