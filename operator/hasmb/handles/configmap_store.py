"""configmap:NAMESPACE/NAME -- the handle-state store in Kubernetes ConfigMaps.

Objects (all labelled hasmb.io/handle-store=NAME):
- NAME-meta: data {epoch, owner, shards}: the ownership record and the shard
  count (initially `?shards=N`, default 4).
- NAME-0 .. NAME-(shards-1): data {"epoch": E, "<pid as 16 hex>": record
  JSON, ...}.

Sizing: every CAS makes the apiserver decode, re-encode, store and return the
whole object, so a write costs time in proportion to its shard's size (about
4 ms at a few KiB, 40 ms at 500 KiB on the development machine). New records
therefore go to shards below SHARD_TARGET (64 KiB), and when every shard is
above it the store adds one (a CAS of the count in NAME-meta, then the new
object), up to max_shards. SHARD_DATA_LIMIT (just under the 1 MiB object
limit) is the hard bound; a record that fits nowhere fails alone with
StoreFullError.

Every write is a compare-and-set on resourceVersion (a merge patch that
carries metadata.resourceVersion; the apiserver answers 409 if the object
changed), in the manner of Patroni's Kubernetes DCS.

The fence: take_ownership CASes the new epoch into NAME-meta, then CASes it
into the "epoch" field of every shard (creating missing ones). From then on an
old owner's cached resourceVersion of any shard is stale, so its next CAS gets
409; it re-reads the shard, sees a newer epoch there (and in NAME-meta) and
raises StaleEpochError. A write that won the race before the stamp is one the
new owner sees, because it loads after take_ownership returns. Adding a shard
CASes NAME-meta first, so it is fenced the same way.

Group commit: a batch is one CAS per touched shard, in parallel; records that
are new in the batch all go to the least-filled shard, so a burst of creates
costs one round trip. An existing record stays in its shard.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from hasmb.contract import LABEL_STORE, LABEL_STORE_ROLE
from hasmb.handles.errors import StaleEpochError, StoreClosedError, StoreError, StoreFullError
from hasmb.handles.group_commit import WriteOp
from hasmb.handles.kube_api import KubeApi, KubeApiError
from hasmb.handles.record import PersistentOpenRecord, RecordFormatError
from hasmb.handles.store import EpochInfo, HandleStore, StoreChange

DEFAULT_SHARDS = 4
DEFAULT_MAX_SHARDS = 512
# Every CAS rewrites (and returns) the whole object, so a write costs time in
# proportion to its shard's size: new records go to shards below this size,
# and the store adds shards when all are above it.
SHARD_TARGET = 64 * 1024
# The apiserver limit is 1 MiB for the whole object; leave room for metadata.
SHARD_DATA_LIMIT = 1_000_000
EPOCH_KEY = "epoch"


def record_key(persistent_id: int) -> str:
    return f"{persistent_id:016x}"


def is_record_key(key: str) -> bool:
    return len(key) == 16 and all(c in "0123456789abcdef" for c in key)


def data_size(data: dict[str, str]) -> int:
    return sum(len(k) + len(v) for k, v in data.items())


STORE_REQUEST_TIMEOUT = 5.0


@dataclass
class _Shard:
    """The owner's copy of one shard object."""

    index: int
    resource_version: str = ""
    data: dict[str, str] = field(default_factory=dict)
    size: int = 0

    def load(self, obj: dict[str, Any]) -> None:
        self.resource_version = obj["metadata"]["resourceVersion"]
        self.data = dict(obj.get("data") or {})
        self.size = data_size(self.data)

    @property
    def epoch(self) -> int:
        return int(self.data.get(EPOCH_KEY, "0"))


class ConfigMapHandleStore(HandleStore):
    """Handle state in sharded ConfigMaps; see the module docstring."""

    def __init__(
        self,
        namespace: str,
        name: str,
        *,
        kubeconfig: str | None = None,
        shards: int = DEFAULT_SHARDS,
        max_shards: int = DEFAULT_MAX_SHARDS,
        shard_target: int = SHARD_TARGET,
        shard_limit: int = SHARD_DATA_LIMIT,
        max_batch: int = 256,
    ) -> None:
        super().__init__(max_batch=max_batch)
        if not 1 <= shards <= max_shards:
            raise ValueError("need 1 <= shards <= max_shards")
        self.namespace = namespace
        self.name = name
        self.default_shards = shards
        self.max_shards = max_shards
        self.shard_target = min(shard_target, shard_limit)
        self.shard_limit = shard_limit
        # A write that cannot reach the API server fails in 5 s (STATUS_INSUFFICIENT_
        # RESOURCES for the CREATE, LOCK or CLOSE that needed it) instead of hanging
        # for most of a client's request timeout: I/O on existing opens never waits.
        self.api = KubeApi(kubeconfig, request_timeout=STORE_REQUEST_TIMEOUT)
        self._shards: list[_Shard] = []
        self._where: dict[int, int] = {}
        # the shard new records went to last (see _plan)
        self._filling = -1
        self._meta_rv = ""

    # -- names ---------------------------------------------------------------

    @property
    def _base(self) -> str:
        return f"api/v1/namespaces/{self.namespace}/configmaps"

    def _shard_name(self, index: int) -> str:
        return f"{self.name}-{index}"

    @property
    def _meta_name(self) -> str:
        return f"{self.name}-meta"

    def _new_object(self, obj_name: str, role: str, data: dict[str, str]) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": obj_name,
                "namespace": self.namespace,
                "labels": {LABEL_STORE: self.name, LABEL_STORE_ROLE: role},
            },
            "data": data,
        }

    async def _get(self, obj_name: str) -> dict[str, Any] | None:
        try:
            return await self.api.request("GET", f"{self._base}/{obj_name}")
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def _cas_patch(
        self, obj_name: str, rv: str, data: dict[str, Any], role: str | None = None
    ) -> dict[str, Any]:
        metadata: dict[str, Any] = {"resourceVersion": rv}
        if role is not None:
            # Objects someone else (the operator) created get our labels, so
            # that listing by label finds them.
            metadata["labels"] = {LABEL_STORE: self.name, LABEL_STORE_ROLE: role}
        return await self.api.request(
            "PATCH",
            f"{self._base}/{obj_name}",
            body={"metadata": metadata, "data": data},
            content_type="application/merge-patch+json",
        )

    # -- epoch ---------------------------------------------------------------

    async def read_epoch(self) -> EpochInfo:
        meta = await self._get(self._meta_name)
        if meta is None:
            return EpochInfo(0, "")
        data = meta.get("data") or {}
        return EpochInfo(int(data.get(EPOCH_KEY, "0")), data.get("owner", ""))

    async def _raise_epoch(self, owner: str, requested: int | None) -> int:
        new, shard_count = await self._raise_meta(owner, requested)
        shards = [_Shard(i) for i in range(shard_count)]
        # One list instead of a GET per shard (a stale copy only costs a 409).
        items, _ = await self._list()
        known = {item["metadata"]["name"]: item for item in items}
        await asyncio.gather(
            *(self._stamp(s, new, known.get(self._shard_name(s.index))) for s in shards)
        )
        self._shards = shards
        self._where = {}
        for shard in shards:
            for key in shard.data:
                if is_record_key(key):
                    self._where[int(key, 16)] = shard.index
        return new

    async def _raise_meta(self, owner: str, requested: int | None) -> tuple[int, int]:
        while True:
            meta = await self._get(self._meta_name)
            if meta is None:
                new = requested if requested is not None else 1
                data = {EPOCH_KEY: str(new), "owner": owner, "shards": str(self.default_shards)}
                try:
                    obj = await self.api.request(
                        "POST", self._base, body=self._new_object(self._meta_name, "meta", data)
                    )
                except KubeApiError as exc:
                    if exc.status == 409:
                        continue
                    raise
                self._meta_rv = obj["metadata"]["resourceVersion"]
                return new, self.default_shards
            data = meta.get("data") or {}
            cur = int(data.get(EPOCH_KEY, "0"))
            if requested is not None and requested <= cur:
                raise StaleEpochError(requested, cur)
            new = requested if requested is not None else cur + 1
            shards = int(data.get("shards", str(self.default_shards)))
            try:
                obj = await self._cas_patch(
                    self._meta_name,
                    meta["metadata"]["resourceVersion"],
                    {EPOCH_KEY: str(new), "owner": owner, "shards": str(shards)},
                    role="meta",
                )
            except KubeApiError as exc:
                if exc.status == 409:
                    continue
                raise
            self._meta_rv = obj["metadata"]["resourceVersion"]
            return new, shards

    async def _grow(self, epoch: int) -> bool:
        """Add one shard: CAS the count in NAME-meta, then create the object.

        The meta CAS is what fences growth: after a takeover the old owner's
        cached resourceVersion of NAME-meta is stale. A new owner stamps every
        shard the count names, creating it if the grower had not yet.
        """
        if len(self._shards) >= self.max_shards:
            return False
        count = len(self._shards) + 1
        for _ in range(3):
            try:
                obj = await self._cas_patch(self._meta_name, self._meta_rv, {"shards": str(count)})
                break
            except KubeApiError as exc:
                if exc.status != 409:
                    raise
                meta = await self._get(self._meta_name)
                data = (meta or {}).get("data") or {}
                current = int(data.get(EPOCH_KEY, "0"))
                if meta is None or current != epoch:
                    raise StaleEpochError(epoch, current) from exc
                self._meta_rv = meta["metadata"]["resourceVersion"]
        else:
            raise StoreError(f"configmap {self._meta_name}: conflicts persist under epoch {epoch}")
        self._meta_rv = obj["metadata"]["resourceVersion"]
        shard = _Shard(count - 1)
        await self._stamp(shard, epoch)
        self._shards.append(shard)
        return True

    async def _stamp(self, shard: _Shard, epoch: int, known: dict[str, Any] | None = None) -> None:
        """CAS the new epoch into one shard (creating it if missing)."""
        obj_name = self._shard_name(shard.index)
        while True:
            obj, known = known or await self._get(obj_name), None
            try:
                if obj is None:
                    obj = await self.api.request(
                        "POST",
                        self._base,
                        body=self._new_object(obj_name, "shard", {EPOCH_KEY: str(epoch)}),
                    )
                else:
                    shard.load(obj)
                    if shard.epoch > epoch:
                        raise StaleEpochError(epoch, shard.epoch)
                    obj = await self._cas_patch(
                        obj_name, shard.resource_version, {EPOCH_KEY: str(epoch)}, role="shard"
                    )
            except KubeApiError as exc:
                if exc.status == 409:
                    continue
                raise
            shard.load(obj)
            return

    # -- writes --------------------------------------------------------------

    def _plan(
        self, ops: list[WriteOp], values: dict[int, str]
    ) -> tuple[dict[int, dict[str, str | None]], dict[int, Exception]]:
        """Assign ops to shards: patches of data keys (None deletes), and the
        new records that fit nowhere. `values` holds each put's JSON."""
        patches: dict[int, dict[str, str | None]] = {}
        rejected: dict[int, Exception] = {}
        new_ops: list[tuple[WriteOp, str]] = []
        for op in ops:
            index = self._where.get(op.persistent_id)
            if op.kind == "delete":
                if index is not None:
                    patches.setdefault(index, {})[record_key(op.persistent_id)] = None
                continue
            value = values[op.persistent_id]
            if index is not None:
                patches.setdefault(index, {})[record_key(op.persistent_id)] = value
            else:
                new_ops.append((op, value))
        if new_ops:
            # All new records of a batch go to one shard, so a burst of creates
            # is one round trip; spill over only when full. Every CAS costs the
            # apiserver ~2 ms of CPU whatever the object's size, so new records
            # keep going to the shard the last ones went to while it is below
            # half the target: short-lived opens are then closed in the shard
            # where the next creates go, and a batch of creates and closes is
            # one CAS instead of one per shard. Else a shard this batch writes
            # anyway, else the least filled.
            growth = {i: self._growth(i, p) for i, p in patches.items()}
            roomy = self.shard_target // 2

            def rank(shard: _Shard) -> tuple[int, int, int]:
                size = shard.size + growth.get(shard.index, 0)
                if size <= roomy and shard.index == self._filling:
                    return (0, size, shard.index)
                if size <= roomy and shard.index in patches:
                    return (1, size, shard.index)
                return (2, size, shard.index)

            order = sorted(self._shards, key=rank)
            for op, value in new_ops:
                key = record_key(op.persistent_id)
                need = len(key) + len(value)
                target = None
                for limit in (self.shard_target, self.shard_limit):
                    for shard in order:
                        if shard.size + growth.get(shard.index, 0) + need <= limit:
                            target = shard.index
                            break
                    if target is not None:
                        break
                if target is None:
                    rejected[op.persistent_id] = StoreFullError(
                        f"configmap {self.namespace}/{self.name}: all {len(self._shards)} "
                        "shards are full"
                    )
                    continue
                patches.setdefault(target, {})[key] = value
                growth[target] = growth.get(target, 0) + need
                self._filling = target
        return patches, rejected

    def _growth(self, index: int, patch: dict[str, str | None]) -> int:
        data = self._shards[index].data
        delta = 0
        for key, value in patch.items():
            old = data.get(key)
            delta -= len(key) + len(old) if old is not None else 0
            delta += len(key) + len(value) if value is not None else 0
        return delta

    async def _commit(self, ops: list[WriteOp], epoch: int) -> dict[int, Exception]:
        if not self._shards:
            raise StoreError("configmap store: no shards loaded (take_ownership first)")
        values = {op.persistent_id: op.record.to_json() for op in ops if op.record is not None}
        new_bytes = sum(len(value) + 16 for pid, value in values.items() if pid not in self._where)
        room = sum(max(0, self.shard_target - s.size) for s in self._shards)
        while new_bytes > room and await self._grow(epoch):
            room += max(0, self.shard_target - self._shards[-1].size)
        patches, rejected = self._plan(ops, values)
        results = await asyncio.gather(
            *(self._write_shard(index, patch, epoch) for index, patch in patches.items()),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        stale = [e for e in errors if isinstance(e, StaleEpochError)]
        if stale:
            raise stale[0]
        if errors:
            raise errors[0]
        return rejected

    async def _write_shard(self, index: int, patch: dict[str, str | None], epoch: int) -> None:
        shard = self._shards[index]
        obj_name = self._shard_name(index)
        body: dict[str, Any] = {EPOCH_KEY: str(epoch), **patch}
        for _ in range(3):
            self.stats.round_trips += 1
            try:
                obj = await self._cas_patch(obj_name, shard.resource_version, body)
            except KubeApiError as exc:
                if exc.status not in (404, 409):
                    raise
                await self._check_fence(shard, epoch)
                continue
            shard.load(obj)
            for key, value in patch.items():
                pid = int(key, 16)
                if value is None:
                    if self._where.get(pid) == index:
                        del self._where[pid]
                else:
                    self._where[pid] = index
            return
        raise StoreError(f"configmap {obj_name}: conflicts persist under epoch {epoch}")

    async def _check_fence(self, shard: _Shard, epoch: int) -> None:
        """After a conflict: raise StaleEpochError if anyone holds a newer epoch."""
        obj = await self._get(self._shard_name(shard.index))
        meta_epoch = (await self.read_epoch()).epoch
        shard_epoch = 0
        if obj is not None:
            shard.load(obj)
            shard_epoch = shard.epoch
        current = max(meta_epoch, shard_epoch)
        if current != epoch:
            raise StaleEpochError(epoch, current)
        if obj is None:
            raise StoreError(f"configmap {self._shard_name(shard.index)} vanished")

    # -- reads ---------------------------------------------------------------

    async def _list(self) -> tuple[list[dict[str, Any]], str]:
        res = await self.api.request(
            "GET", self._base, params={"labelSelector": f"{LABEL_STORE}={self.name}"}
        )
        return list(res.get("items") or []), res["metadata"]["resourceVersion"]

    async def load_all(self) -> list[PersistentOpenRecord]:
        items, _ = await self._list()
        view = _FollowView(self.name)
        for item in items:
            view.apply("ADDED", item)
        return list(view.records().values())

    async def follow(self) -> AsyncIterator[StoreChange]:
        while True:
            items, rv = await self._list()
            view = _FollowView(self.name)
            for item in items:
                view.apply("ADDED", item)
            view.announced = view.fenced()
            yield StoreChange(
                "reset",
                records=tuple(view.records().values()),
                epoch=view.announced.epoch,
                owner=view.announced.owner,
            )
            params = {
                "labelSelector": f"{LABEL_STORE}={self.name}",
                "allowWatchBookmarks": "true",
                "timeoutSeconds": "300",
            }
            # Re-watch from the last resourceVersion while the server allows;
            # a 410 Gone (or any error) means a fresh list and a reset.
            try:
                while True:
                    async for event in self.api.watch(
                        self._base, {**params, "resourceVersion": rv}
                    ):
                        kind = str(event.get("type"))
                        obj = event.get("object") or {}
                        if kind == "ERROR":
                            raise StoreError(f"watch error: {obj.get('message')}")
                        rv = obj.get("metadata", {}).get("resourceVersion", rv)
                        if kind == "BOOKMARK":
                            continue
                        for change in view.apply(kind, obj):
                            yield change
                        fenced = view.fenced()
                        if fenced.epoch > view.announced.epoch:
                            view.announced = fenced
                            yield StoreChange("epoch", epoch=fenced.epoch, owner=fenced.owner)
            except StoreClosedError:
                raise
            except StoreError:
                # Lost the watch (410 Gone, apiserver restart): relist after a
                # pause, so a persistent failure does not spin.
                await asyncio.sleep(0.5)

    async def destroy(self) -> None:
        """Delete every object of this store (the SVM and its state are gone)."""
        await self.api.request(
            "DELETE", self._base, params={"labelSelector": f"{LABEL_STORE}={self.name}"}
        )

    async def _close(self) -> None:
        await self.api.close()


@dataclass
class _FollowView:
    """A reader's copy of the store's objects, built from a list and watch events.

    An epoch counts as reached ("fenced") only once NAME-meta holds it and
    every shard has been stamped with it: only then can no write of an older
    owner still land, so a follower that reports epoch N holds everything
    written before N.
    """

    name: str
    meta: dict[str, str] = field(default_factory=dict)
    shards: dict[str, dict[str, str]] = field(default_factory=dict)
    announced: EpochInfo = field(default_factory=lambda: EpochInfo(0, ""))

    def apply(self, kind: str, obj: dict[str, Any]) -> list[StoreChange]:
        labels = obj["metadata"].get("labels") or {}
        data = dict(obj.get("data") or {}) if kind != "DELETED" else {}
        if labels.get(LABEL_STORE_ROLE) == "meta":
            self.meta = data
            return []
        name = obj["metadata"]["name"]
        old = self.shards.get(name, {})
        self.shards[name] = data
        changes = []
        for key, value in data.items():
            if is_record_key(key) and old.get(key) != value:
                rec = _decode_record(key, value)
                changes.append(StoreChange("put", record=rec, persistent_id=rec.persistent_id))
        for key in old:
            if is_record_key(key) and key not in data:
                changes.append(StoreChange("delete", persistent_id=int(key, 16)))
        return changes

    def records(self) -> dict[int, PersistentOpenRecord]:
        records: dict[int, PersistentOpenRecord] = {}
        for data in self.shards.values():
            for key, value in data.items():
                if is_record_key(key):
                    rec = _decode_record(key, value)
                    prev = records.get(rec.persistent_id)
                    if prev is None or rec.epoch >= prev.epoch:
                        records[rec.persistent_id] = rec
        return records

    def fenced(self) -> EpochInfo:
        meta_epoch = int(self.meta.get(EPOCH_KEY, "0"))
        count = int(self.meta.get("shards", "0"))
        stamped = [
            int(self.shards.get(f"{self.name}-{i}", {}).get(EPOCH_KEY, "0")) for i in range(count)
        ]
        epoch = min([meta_epoch, *stamped])
        if epoch == meta_epoch:
            return EpochInfo(epoch, self.meta.get("owner", ""))
        return self.announced if epoch <= self.announced.epoch else EpochInfo(epoch, "")


def _decode_record(key: str, value: str) -> PersistentOpenRecord:
    try:
        return PersistentOpenRecord.from_json(value)
    except RecordFormatError as exc:
        raise StoreError(f"configmap: corrupt record {key}: {exc}") from exc
