"""hasmb.handles -- the handle-state store: persistent opens that survive the server.

What it holds
    One `PersistentOpenRecord` per persistent (CA) open: everything a server
    needs to honour a DH2C reclaim after a restart or on the partner after a
    takeover -- FileIds, CreateGuid, AppInstanceId, ClientGuid, share, path,
    access and share modes, create options, attributes, oplock or lease,
    durable timeout, byte-range locks, user, disconnect time and the epoch it
    was written under. Compact JSON with a version field; unknown fields are
    kept and written back (record.py).

The interface (store.py)
    `HandleStore`: `take_ownership(owner, epoch=None) -> int`, `put(record)`,
    `delete(persistent_id)`, `load_all()`, `follow()`, `read_epoch()`,
    `close()`. `put`/`delete` return only when the change is durable, so the
    SMB server answers a CREATE/LOCK/CLOSE only after its state is safe.

Ownership and the fence
    The store holds an epoch. `take_ownership` raises it atomically (to
    current+1 when a standalone server restarts on its own store, or to the
    epoch the cluster's ownership record decided) and the store object writes
    under that epoch from then on. Every write is checked against the stored
    epoch in the same atomic step that applies it; a write under an older
    epoch fails with `StaleEpochError` and the store object stays fenced
    (every later write fails too), so an isolated old owner can never
    overwrite what the new owner holds. A new owner calls take_ownership and
    then load_all: everything acknowledged before the fence is visible.

Group commit (group_commit.py)
    Concurrent put/delete calls queue behind the commit in flight and go out
    together in the next one: one fsync (file), one txn (etcd), one CAS per
    touched shard (configmap; new records follow the last ones into a roomy
    shard, so creates and closes of short-lived opens share one CAS). There
    is no timer; batches grow with load.
    `store.stats` counts writes, commits and backend round trips.

Errors (errors.py)
    `StaleEpochError` (fenced: stop serving), `NotOwnerError` (write before
    take_ownership), `StoreFullError` (configmap: one record that fits nowhere;
    the rest of its batch still commits), `StoreClosedError`, and
    `StoreError` for I/O and protocol failures (the write may or may not have
    landed; it was not acknowledged).

Backends, chosen by a spec string (`open_store`, parsed in spec.py)
    file:DIR                 snapshot + CRC-checked log, zero-filled ahead
                             so a commit's fdatasync rewrites existing blocks,
                             epoch file replaced atomically, flock at commit
                             (file_store.py). For standalone use and a shared
                             RWX volume.
    configmap:NS/NAME[?shards=N]
                             ConfigMaps NAME-meta (epoch, owner, shard count)
                             and NAME-0..NAME-(N-1) (records; small shards,
                             more added as state grows), every write a
                             compare-and-set on resourceVersion; taking
                             ownership stamps the new epoch into every shard, so
                             an old owner's CAS fails and it finds the newer
                             epoch (configmap_store.py, kube_api.py).
    etcd:http://HOST:PORT[,http://HOST2:PORT...][/PREFIX][?cacert=&cert=&key=]
                             etcd v3 JSON gateway; each batch is one txn
                             guarded by the epoch key's mod_revision; the
                             endpoints are tried in turn (etcd_store.py).

Following
    `follow()` yields a "reset" with the full state, then "put"/"delete"/
    "epoch" changes (and another "reset" whenever continuity was lost), so a
    standby keeps a warm `StoreMirror` (`StoreFollower` runs it in the
    background) and takeover needs no cold load. An epoch is reported only
    once its fence is complete (every change written under older epochs was
    delivered first), so takeover is:

        epoch = await store.take_ownership(me)
        async with asyncio.timeout(10):
            await follower.wait_epoch(epoch)
        records = follower.mirror.records      # complete
"""

from __future__ import annotations

from typing import Any

from hasmb.handles.errors import (
    NotOwnerError,
    StaleEpochError,
    StoreClosedError,
    StoreError,
    StoreFullError,
    StoreSpecError,
)
from hasmb.handles.follower import StoreFollower
from hasmb.handles.group_commit import CommitStats, GroupCommitter, WriteOp
from hasmb.handles.record import ByteRangeLock, LeaseInfo, PersistentOpenRecord
from hasmb.handles.spec import StoreSpec, parse_store_spec
from hasmb.handles.store import EpochInfo, HandleStore, StoreChange, StoreMirror


def open_store(spec: str, **options: Any) -> HandleStore:
    """Create the store a spec names; `options` go to the backend's constructor."""
    parsed = parse_store_spec(spec)
    if parsed.kind == "file":
        from hasmb.handles.file_store import FileHandleStore

        return FileHandleStore(parsed.location, **options)
    if parsed.kind == "etcd":
        from hasmb.handles.etcd_store import EtcdHandleStore

        for key, name in (("cacert", "ca_file"), ("cert", "cert_file"), ("key", "key_file")):
            if key in parsed.options:
                options.setdefault(name, parsed.options[key])
        return EtcdHandleStore(parsed.location.split(","), parsed.prefix, **options)
    from hasmb.handles.configmap_store import ConfigMapHandleStore

    if "shards" in parsed.options:
        options.setdefault("shards", int(parsed.options["shards"]))
    return ConfigMapHandleStore(parsed.namespace, parsed.name, **options)


__all__ = [
    "ByteRangeLock",
    "CommitStats",
    "EpochInfo",
    "GroupCommitter",
    "HandleStore",
    "LeaseInfo",
    "NotOwnerError",
    "PersistentOpenRecord",
    "StaleEpochError",
    "StoreChange",
    "StoreClosedError",
    "StoreError",
    "StoreFollower",
    "StoreFullError",
    "StoreMirror",
    "StoreSpec",
    "StoreSpecError",
    "WriteOp",
    "open_store",
    "parse_store_spec",
]
