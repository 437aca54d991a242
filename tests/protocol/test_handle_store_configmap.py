"""configmap: backend specifics against the real apiserver: sharding and capacity."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from hasmb.contract import LABEL_STORE
from hasmb.handles import PersistentOpenRecord, StoreFullError
from hasmb.handles.configmap_store import SHARD_TARGET, ConfigMapHandleStore

MIB = 1 << 20


def big_record(pid: int) -> PersistentOpenRecord:
    return PersistentOpenRecord(
        persistent_id=pid,
        volatile_id=pid,
        create_guid=uuid.uuid4().bytes,
        client_guid=bytes(16),
        share="data",
        path="\\".join(["a-rather-long-directory-name"] * 16) + f"\\file-{pid}.bin",
        desired_access=0x12019F,
        share_access=7,
        create_options=0x40,
        file_attributes=0x20,
        oplock_level=0,
        durable_timeout_ms=60000,
        user="alice",
    )


@pytest.fixture
async def store_name(kube_cluster: Any) -> AsyncIterator[str]:
    name = f"hs-{uuid.uuid4().hex[:10]}"
    yield name
    await asyncio.to_thread(
        kube_cluster.kubectl,
        "delete",
        "configmap",
        "-n",
        "default",
        "-l",
        f"{LABEL_STORE}={name}",
        "--wait=false",
    )


def shard_objects(kube_cluster: Any, name: str) -> dict[str, dict[str, str]]:
    out = kube_cluster.kubectl(
        "get", "configmap", "-n", "default", "-l", f"{LABEL_STORE}={name}", "-o", "json"
    )
    return {
        item["metadata"]["name"]: item.get("data") or {} for item in json.loads(out.stdout)["items"]
    }


async def test_state_larger_than_one_object_is_sharded(kube_cluster: Any, store_name: str) -> None:
    store = ConfigMapHandleStore(
        "default", store_name, kubeconfig=str(kube_cluster.kubeconfig), shards=2
    )
    n = 1600
    try:
        await store.take_ownership("node-a")
        records = [big_record(pid) for pid in range(1, n + 1)]
        total = sum(len(r.to_json()) for r in records)
        assert total > 1.1 * MIB
        await asyncio.gather(*(store.put(r) for r in records))
        assert store.stats.commits < n / 10
    finally:
        await store.close()

    objects = await asyncio.to_thread(shard_objects, kube_cluster, store_name)
    meta = objects.pop(f"{store_name}-meta")
    count = int(meta["shards"])
    # It grew beyond the two it started with, to keep each shard small.
    assert total / SHARD_TARGET <= count <= 2 * total / SHARD_TARGET + 2
    assert set(objects) == {f"{store_name}-{i}" for i in range(count)}
    seen: list[str] = []
    for obj_name, data in objects.items():
        size = sum(len(k) + len(v) for k, v in data.items())
        # A batch may overshoot the target, never the object limit.
        assert size < SHARD_TARGET + 256 * 900, f"{obj_name} holds {size} bytes"
        assert data["epoch"] == "1"
        seen += [k for k in data if k != "epoch"]
    assert sorted(int(k, 16) for k in seen) == list(range(1, n + 1))

    restarted = ConfigMapHandleStore("default", store_name, kubeconfig=str(kube_cluster.kubeconfig))
    try:
        assert await restarted.take_ownership("node-b") == 2
        loaded = await restarted.load_all()
        assert sorted(r.persistent_id for r in loaded) == list(range(1, n + 1))
        # Every shard, including the added ones, carries the new epoch.
        objects = await asyncio.to_thread(shard_objects, kube_cluster, store_name)
        assert len(objects) == count + 1
        assert {objects[f"{store_name}-{i}"]["epoch"] for i in range(count)} == {"2"}
        # Deleting frees room in whichever shard held the record.
        await asyncio.gather(*(restarted.delete(pid) for pid in range(1, n + 1, 2)))
        assert len(await restarted.load_all()) == n // 2
    finally:
        await restarted.close()


async def test_full_store_refuses_with_store_full(kube_cluster: Any, store_name: str) -> None:
    store = ConfigMapHandleStore(
        "default",
        store_name,
        kubeconfig=str(kube_cluster.kubeconfig),
        shards=2,
        max_shards=2,
        shard_limit=8_000,
    )
    try:
        await store.take_ownership("node-a")
        stored = 0
        with pytest.raises(StoreFullError):
            for pid in range(1, 100):
                await store.put(big_record(pid))
                stored += 1
        assert 4 <= stored < 100
        # What was acknowledged is intact, and deleting makes room again.
        assert len(await store.load_all()) == stored
        await store.delete(1)
        await store.put(big_record(1000))
        assert len(await store.load_all()) == stored
        # A record that does not fit fails alone: the rest of its batch commits.
        results = await asyncio.gather(
            store.delete(2),
            *(store.put(big_record(pid)) for pid in range(2000, 2010)),
            return_exceptions=True,
        )
        assert results[0] is None
        assert any(isinstance(r, StoreFullError) for r in results[1:])
        assert not store.fenced
        ids = {r.persistent_id for r in await store.load_all()}
        assert 2 not in ids
        assert ids >= {
            pid for pid, r in zip(range(2000, 2010), results[1:], strict=True) if r is None
        }
    finally:
        await store.close()


async def test_objects_precreated_without_labels_are_adopted(
    kube_cluster: Any, store_name: str
) -> None:
    store = ConfigMapHandleStore(
        "default", store_name, kubeconfig=str(kube_cluster.kubeconfig), shards=2
    )
    try:
        # As an operator might: bare objects with the store's names, no labels.
        for suffix in ("meta", "0"):
            await store.api.request(
                "POST",
                "api/v1/namespaces/default/configmaps",
                body={"metadata": {"name": f"{store_name}-{suffix}"}, "data": {}},
            )
        assert await store.take_ownership("node-a") == 1
        await asyncio.gather(*(store.put(big_record(pid)) for pid in range(1, 11)))
        objects = await asyncio.to_thread(shard_objects, kube_cluster, store_name)
        assert set(objects) == {f"{store_name}-{s}" for s in ("meta", "0", "1")}
        other = ConfigMapHandleStore("default", store_name, kubeconfig=str(kube_cluster.kubeconfig))
        try:
            assert sorted(r.persistent_id for r in await other.load_all()) == list(range(1, 11))
        finally:
            await other.close()
    finally:
        await store.close()


async def test_creates_and_closes_of_short_lived_opens_share_one_cas(
    kube_cluster: Any, store_name: str
) -> None:
    """Every CAS costs the apiserver the same CPU whatever the shard's size, so
    new records follow the last ones while that shard is roomy: a batch of new
    opens and closes of recent ones is one round trip, not one per shard."""
    store = ConfigMapHandleStore("default", store_name, kubeconfig=str(kube_cluster.kubeconfig))
    try:
        await store.take_ownership("node-a")
        kept: list[int] = []
        recent: list[int] = []
        for step in range(1, 31):
            # three opens; two of the last batch close, one stays open for good
            batch = [store.put(big_record(100 * step + i)) for i in range(3)]
            batch += [store.delete(pid) for pid in recent[1:]]
            trips = store.stats.round_trips
            await asyncio.gather(*batch)
            assert store.stats.round_trips - trips == 1, f"batch {step}"
            kept += recent[:1]
            recent = [100 * step + i for i in range(3)]
        stored = sorted(r.persistent_id for r in await store.load_all())
        assert stored == sorted(kept + recent)
    finally:
        await store.close()
