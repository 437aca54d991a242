"""The HandleStore contract, run against every backend on real infrastructure.

file: a temp directory; etcd: a real etcd (~/.cache/hasmb/bin/etcd) on free
loopback ports; configmap: the real apiserver of the `kube_cluster` fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hasmb.handles import (
    ByteRangeLock,
    HandleStore,
    LeaseInfo,
    NotOwnerError,
    PersistentOpenRecord,
    StaleEpochError,
    StoreChange,
    StoreClosedError,
    StoreFollower,
    StoreMirror,
    open_store,
)
from tests.support.net import free_port

ETCD_BIN = Path.home() / ".cache/hasmb/bin/etcd"


def make_record(pid: int, path: str = "", *, locks: int = 1) -> PersistentOpenRecord:
    return PersistentOpenRecord(
        persistent_id=pid,
        volatile_id=pid + 1000,
        create_guid=uuid.uuid4().bytes,
        client_guid=b"\x11" * 16,
        share="data",
        path=path or f"vm\\disk-{pid}.vhdx",
        desired_access=0x12019F,
        share_access=7,
        create_options=0x40,
        file_attributes=0x20,
        oplock_level=0xFF,
        durable_timeout_ms=60000,
        user="alice",
        app_instance_id=uuid.uuid4().bytes,
        lease=LeaseInfo(key=uuid.uuid4().bytes, state=7, epoch=1),
        locks=[ByteRangeLock(i * 4096, 4096, i % 2 == 0) for i in range(locks)],
    )


def strip_epoch(records: list[PersistentOpenRecord]) -> dict[int, PersistentOpenRecord]:
    out = {}
    for r in records:
        d = r.to_dict()
        d["epoch"] = 0
        out[r.persistent_id] = PersistentOpenRecord.from_dict(d)
    return out


async def wait_for(pred: Callable[[], bool], what: str, limit: float = 15.0) -> None:
    deadline = time.monotonic() + limit
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class EtcdServer:
    url: str
    proc: subprocess.Popen[bytes]
    data_dir: str


@contextlib.contextmanager
def run_etcd() -> Iterator[EtcdServer]:
    data_dir = tempfile.mkdtemp(prefix="hasmb-etcd-")
    client, peer = free_port(), free_port()
    url = f"http://127.0.0.1:{client}"
    log = open(os.path.join(data_dir, "etcd.log"), "wb")
    proc = subprocess.Popen(
        [
            str(ETCD_BIN),
            "--name=hasmb-test",
            f"--data-dir={data_dir}/data",
            f"--listen-client-urls={url}",
            f"--advertise-client-urls={url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=hasmb-test=http://127.0.0.1:{peer}",
            "--listen-metrics-urls=",
            "--log-level=error",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"etcd exited: {Path(data_dir, 'etcd.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", client), timeout=0.5):
                    pass
                out = subprocess.run(
                    ["curl", "-sf", "-X", "POST", f"{url}/v3/kv/range", "-d", '{"key":"AA=="}'],
                    capture_output=True,
                    timeout=5,
                )
                if out.returncode == 0:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("etcd did not become ready")
            time.sleep(0.05)
        yield EtcdServer(url, proc, data_dir)
    finally:
        proc.kill()
        proc.wait()
        log.close()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def etcd_server() -> Iterator[EtcdServer]:
    with run_etcd() as server:
        yield server


@dataclass
class Backend:
    """Makes store objects that all point at the same backend location."""

    name: str
    spec: str
    options: dict[str, Any] = field(default_factory=dict)
    stores: list[HandleStore] = field(default_factory=list)
    cleanup: Callable[[], Awaitable[None]] | None = None

    def new_store(self, **extra: Any) -> HandleStore:
        store = open_store(self.spec, **{**self.options, **extra})
        self.stores.append(store)
        return store

    async def close(self) -> None:
        for store in self.stores:
            with contextlib.suppress(Exception):
                await store.close()
        if self.cleanup is not None:
            await self.cleanup()


BACKENDS = ["file", "etcd", "configmap"]


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    name = request.param
    tag = uuid.uuid4().hex[:10]
    if name == "file":
        b = Backend(name, f"file:{tmp_path / 'state'}", {"poll_interval": 0.02})
    elif name == "etcd":
        server: EtcdServer = request.getfixturevalue("etcd_server")
        b = Backend(name, f"etcd:{server.url}/t-{tag}")
    else:
        cluster = request.getfixturevalue("kube_cluster")
        cm_name = f"hs-{tag}"
        b = Backend(
            name,
            f"configmap:default/{cm_name}?shards=3",
            {"kubeconfig": str(cluster.kubeconfig)},
        )

        async def cleanup() -> None:
            await asyncio.to_thread(
                cluster.kubectl,
                "delete",
                "configmap",
                "-n",
                "default",
                "-l",
                f"hasmb.io/handle-store={cm_name}",
                "--wait=false",
            )

        b.cleanup = cleanup
    try:
        yield b
    finally:
        await b.close()


async def test_write_before_ownership_is_refused(backend: Backend) -> None:
    store = backend.new_store()
    with pytest.raises(NotOwnerError):
        await store.put(make_record(1))


async def test_put_load_delete_round_trip(backend: Backend) -> None:
    store = backend.new_store()
    epoch = await store.take_ownership("node-a")
    assert epoch == 1
    records = [make_record(i, locks=i % 4) for i in range(1, 11)]
    for r in records:
        await store.put(r)
    loaded = await store.load_all()
    assert strip_epoch(loaded) == strip_epoch(records)
    assert {r.epoch for r in loaded} == {epoch}
    # Overwrite (e.g. a lock was taken, the client disconnected) and delete.
    changed = make_record(3, locks=5)
    changed.disconnected_at = 1764000000.5
    await store.put(changed)
    await store.delete(4)
    await store.delete(12345)  # deleting what is not there is not an error
    loaded_map = {r.persistent_id: r for r in await store.load_all()}
    assert set(loaded_map) == set(range(1, 11)) - {4}
    assert loaded_map[3].locks == changed.locks
    assert loaded_map[3].disconnected_at == 1764000000.5


async def test_restart_loads_everything_and_raises_epoch(backend: Backend) -> None:
    first = backend.new_store()
    assert await first.take_ownership("node-a") == 1
    records = [make_record(i) for i in range(100, 140)]
    await asyncio.gather(*(first.put(r) for r in records))
    await first.delete(100)
    await first.close()

    second = backend.new_store()
    assert (await second.read_epoch()).epoch == 1
    assert await second.take_ownership("node-a") == 2
    loaded = await second.load_all()
    assert strip_epoch(loaded) == strip_epoch(records[1:])
    assert (await second.read_epoch()).owner == "node-a"


async def test_stale_epoch_writer_is_fenced(backend: Backend) -> None:
    old = backend.new_store()
    new = backend.new_store()
    assert await old.take_ownership("node-a") == 1
    await old.put(make_record(1, "a.txt"))
    await old.put(make_record(2, "b.txt"))

    assert await new.take_ownership("node-b") == 2
    held = make_record(1, "taken-over.txt")
    await new.put(held)

    with pytest.raises(StaleEpochError) as info:
        await old.put(make_record(1, "overwrite-attempt.txt"))
    assert info.value.mine == 1 and info.value.current == 2
    assert old.fenced
    with pytest.raises(StaleEpochError):
        await old.delete(2)
    with pytest.raises(StaleEpochError):
        await old.put(make_record(3, "new-after-fence.txt"))

    state = {r.persistent_id: r for r in await new.load_all()}
    assert set(state) == {1, 2}
    assert state[1].path == "taken-over.txt" and state[1].epoch == 2
    # The new owner keeps writing normally.
    await new.delete(2)
    assert [r.persistent_id for r in await new.load_all()] == [1]


async def test_explicit_epoch_from_ownership_record(backend: Backend) -> None:
    a = backend.new_store()
    assert await a.take_ownership("node-a", epoch=10) == 10
    b = backend.new_store()
    with pytest.raises(StaleEpochError):
        await b.take_ownership("node-b", epoch=10)
    assert await b.take_ownership("node-b", epoch=12) == 12
    info = await a.read_epoch()
    assert (info.epoch, info.owner) == (12, "node-b")
    with pytest.raises(StaleEpochError):
        await a.put(make_record(5))


async def test_concurrent_writers_are_group_committed(backend: Backend) -> None:
    store = backend.new_store()
    await store.take_ownership("node-a")
    n = 64
    await asyncio.gather(*(store.put(make_record(i)) for i in range(n)))
    assert store.stats.writes == n
    assert store.stats.commits < n / 2, store.stats
    assert store.stats.round_trips < n / 2, store.stats
    assert len(await store.load_all()) == n
    commits_before, trips_before = store.stats.commits, store.stats.round_trips
    await asyncio.gather(*(store.delete(i) for i in range(0, n, 2)))
    assert store.stats.commits - commits_before < n / 4, store.stats
    assert store.stats.round_trips - trips_before < n / 4, store.stats
    assert sorted(r.persistent_id for r in await store.load_all()) == list(range(1, n, 2))


async def test_follow_keeps_a_standby_warm(backend: Backend) -> None:
    owner = backend.new_store()
    await owner.take_ownership("node-a")
    await owner.put(make_record(1))
    standby = backend.new_store()
    mirror = StoreMirror()
    seen: list[StoreChange] = []

    async def run() -> None:
        async for change in standby.follow():
            seen.append(change)
            mirror.apply(change)

    task = asyncio.create_task(run())
    try:
        await wait_for(lambda: mirror.synced, "initial reset")
        assert seen[0].kind == "reset"
        assert set(mirror.records) == {1} and mirror.epoch == 1
        await asyncio.gather(*(owner.put(make_record(i)) for i in range(2, 30)))
        await owner.delete(1)
        await wait_for(lambda: set(mirror.records) == set(range(2, 30)), "puts and delete")
        assert mirror.records == {r.persistent_id: r for r in await owner.load_all()}
        # A takeover shows up as an epoch change.
        taker = backend.new_store()
        await taker.take_ownership("node-b")
        await wait_for(lambda: (mirror.epoch, mirror.owner) == (2, "node-b"), "epoch change")
        await taker.put(make_record(99))
        await wait_for(lambda: 99 in mirror.records, "put after takeover")
        assert mirror.records[99].epoch == 2
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


OLD_OWNER_SCRIPT = r"""
import asyncio, json, sys, uuid
from hasmb.handles import PersistentOpenRecord, StaleEpochError, open_store

async def main() -> None:
    store = open_store(sys.argv[1], **json.loads(sys.argv[2]))
    print("EPOCH", await store.take_ownership("old-node"), flush=True)
    pid = 1
    try:
        while True:
            rec = PersistentOpenRecord(
                persistent_id=pid, volatile_id=pid, create_guid=uuid.uuid4().bytes,
                client_guid=bytes(16), share="data", path=f"old-{pid}", desired_access=1,
                share_access=7, create_options=0, file_attributes=0x20, oplock_level=0,
                durable_timeout_ms=60000, user="alice",
            )
            await store.put(rec)
            print("ACK", pid, flush=True)
            pid += 1
    except StaleEpochError as exc:
        print("FENCED", exc.mine, exc.current, flush=True)
    finally:
        await store.close()

asyncio.run(main())
"""


async def test_old_owner_in_another_process_is_fenced_mid_stream(backend: Backend) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        OLD_OWNER_SCRIPT,
        backend.spec,
        json.dumps(backend.options),
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    acked: list[int] = []
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode().split()
        assert line[0] == "EPOCH", line
        old_epoch = int(line[1])
        while len(acked) < 20:
            words = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode().split()
            assert words and words[0] == "ACK", words
            acked.append(int(words[1]))
        # Take over while the old owner is writing as fast as it can.
        new = backend.new_store()
        assert await new.take_ownership("new-node") == old_epoch + 1
        at_takeover = {r.persistent_id for r in await new.load_all()}
        fenced = None
        while fenced is None:
            raw = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert raw, "old owner exited without being fenced"
            words = raw.decode().split()
            if words[0] == "ACK":
                acked.append(int(words[1]))
            else:
                fenced = words
        assert fenced == ["FENCED", str(old_epoch), str(old_epoch + 1)]
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        after = {r.persistent_id for r in await new.load_all()}
        # Nothing the old owner wrote landed after the takeover returned,
        # and everything it was told was durable is there.
        assert after == at_takeover
        assert set(acked) <= after
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_standby_takes_over_from_its_warm_mirror(backend: Backend) -> None:
    """The old owner keeps writing in another process while the standby takes over;
    once the standby's follower reports the new epoch, its mirror is complete."""
    standby = backend.new_store()
    # The mirror as it was at the very event that reported each epoch.
    at_epoch: dict[int, dict[int, PersistentOpenRecord]] = {}

    def on_change(change: StoreChange, mirror: StoreMirror) -> None:
        if change.kind in ("epoch", "reset") and mirror.epoch not in at_epoch:
            at_epoch[mirror.epoch] = dict(mirror.records)

    follower = StoreFollower(standby, retry_delay=0.1, on_change=on_change)
    follower.start()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        OLD_OWNER_SCRIPT,
        backend.spec,
        json.dumps(backend.options),
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(60):
            await follower.wait_synced()
            acks = 0
            while acks < 30:
                words = (await proc.stdout.readline()).decode().split()
                acks += words[0] == "ACK"
            epoch = await standby.take_ownership("standby-node")
            await follower.wait_epoch(epoch)
        assert (follower.mirror.epoch, follower.mirror.owner) == (epoch, "standby-node")
        warm = at_epoch[epoch]
        cold = {r.persistent_id: r for r in await standby.load_all()}
        assert warm == cold
        assert follower.mirror.records == cold
        assert len(warm) >= 30
        # It writes as the owner now, and the old one is fenced.
        await standby.put(make_record(10**9))
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        await follower.stop()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_etcd_moves_on_from_an_unreachable_endpoint(etcd_server: EtcdServer) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    store = open_store(f"etcd:{dead},{etcd_server.url}/t-{uuid.uuid4().hex[:10]}")
    try:
        assert await store.take_ownership("node-a") == 1
        await asyncio.gather(*(store.put(make_record(i)) for i in range(5)))
        assert len(await store.load_all()) == 5
        assert getattr(store, "base_url", None) == etcd_server.url
    finally:
        await store.close()


async def test_acknowledged_writes_survive_kill_9(backend: Backend) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        OLD_OWNER_SCRIPT,
        backend.spec,
        json.dumps(backend.options),
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    acked: list[int] = []
    try:
        async with asyncio.timeout(60):
            assert (await proc.stdout.readline()).startswith(b"EPOCH 1")
            while len(acked) < 50:
                words = (await proc.stdout.readline()).decode().split()
                assert words[0] == "ACK", words
                acked.append(int(words[1]))
    finally:
        proc.kill()  # SIGKILL in the middle of its next write
        await proc.wait()
    assert proc.returncode == -9
    # Acknowledgements it printed before dying that we had not read yet.
    for line in (await proc.stdout.read()).decode().splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == "ACK":
            acked.append(int(words[1]))
    restarted = backend.new_store()
    assert await restarted.take_ownership("node-a") == 2
    loaded = {r.persistent_id for r in await restarted.load_all()}
    assert set(acked) <= loaded
    # At most the write in flight at the kill may also have landed.
    assert loaded <= set(acked) | {max(acked) + 1}
    await restarted.put(make_record(10**6))
    again = backend.new_store()
    assert {r.persistent_id for r in await again.load_all()} == loaded | {10**6}


async def test_closing_a_store_ends_its_follower(backend: Backend) -> None:
    owner = backend.new_store()
    await owner.take_ownership("node-a")
    await owner.put(make_record(1))
    standby = backend.new_store()
    follower = StoreFollower(standby, retry_delay=0.05)
    follower.start()
    async with asyncio.timeout(30):
        await follower.wait_synced()
        await owner.put(make_record(2))
        await follower.wait_until(lambda m: set(m.records) == {1, 2})
        await standby.close()
        task = follower._task
        assert task is not None
        await task  # returns instead of retrying for ever
    assert not follower.mirror.synced
    await owner.close()
    with pytest.raises(StoreClosedError):
        await owner.put(make_record(3))
