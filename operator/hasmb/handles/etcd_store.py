"""etcd:URL -- the handle-state store in etcd v3, through its JSON gateway.

No gRPC dependency: etcd serves its KV and watch APIs as JSON on the client
port (POST /v3/kv/range, /v3/kv/txn, /v3/watch; keys and values base64).

Keys under PREFIX (the URL path, default /hasmb/handles):
- PREFIX/epoch: {"epoch": N, "owner": ...}
- PREFIX/h/<persistent id, 16 hex digits>: the record's JSON

The fence: every commit is one txn whose compare is "the epoch key's
mod_revision is still the one this owner wrote"; raising the epoch is a txn
comparing the mod_revision the raiser read. An old owner's txn therefore fails
once anyone raised the epoch, and it learns the new epoch by reading the key.
Group commit puts a whole batch of puts/deletes into that one txn (etcd's
default limit is 128 operations per txn).
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from hasmb.handles.errors import StaleEpochError, StoreClosedError, StoreError
from hasmb.handles.group_commit import WriteOp
from hasmb.handles.record import PersistentOpenRecord, RecordFormatError
from hasmb.handles.store import EpochInfo, HandleStore, StoreChange
from hasmb.handles.streams import iter_lines

ETCD_MAX_TXN_OPS = 128


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with `prefix`."""
    p = bytearray(prefix)
    while p:
        if p[-1] < 0xFF:
            p[-1] += 1
            return bytes(p)
        p.pop()
    return b"\0"


class EtcdHandleStore(HandleStore):
    """Handle state in etcd; see the module docstring for the layout."""

    def __init__(
        self,
        endpoints: str | list[str],
        prefix: str = "/hasmb/handles",
        *,
        max_batch: int = ETCD_MAX_TXN_OPS,
        request_timeout: float = 10.0,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
    ) -> None:
        super().__init__(max_batch=min(max_batch, ETCD_MAX_TXN_OPS))
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        if not endpoints:
            raise ValueError("at least one etcd endpoint")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self._current = 0
        self._ssl: ssl.SSLContext | None = None
        if ca_file or cert_file:
            self._ssl = ssl.create_default_context(cafile=ca_file)
            if cert_file:
                self._ssl.load_cert_chain(cert_file, key_file)
        self.prefix = prefix.rstrip("/")
        self._root = (self.prefix + "/").encode()
        self._epoch_key = (self.prefix + "/epoch").encode()
        self._rec_prefix = (self.prefix + "/h/").encode()
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        # Open watch streams, closed by close(): closing the session alone
        # does not wake a reader waiting on a stream.
        self._watches: set[aiohttp.ClientResponse] = set()
        self._epoch_mod_revision = 0
        self.round_trips = 0

    def _key(self, persistent_id: int) -> bytes:
        return self._rec_prefix + b"%016x" % persistent_id

    @property
    def base_url(self) -> str:
        return self.endpoints[self._current]

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise StoreClosedError("etcd store is closed")
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=16, enable_cleanup_closed=True, ssl=self._ssl or True
                )
            )
        return self._session

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        # An unreachable member moves us to the next endpoint. Retrying is safe:
        # puts and deletes are idempotent, and a txn that did apply has moved
        # nothing its compare depends on (only take_ownership writes the epoch
        # key, and it re-reads before retrying).
        last: Exception | None = None
        for _ in range(len(self.endpoints)):
            self.round_trips += 1
            url = self.base_url + path
            try:
                async with self._get_session().post(url, json=body, timeout=self._timeout) as resp:
                    text = await resp.text()
                    if resp.status != 200:
                        raise StoreError(f"etcd {url}: HTTP {resp.status}: {text[:500]}")
                break
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = exc
                self._current = (self._current + 1) % len(self.endpoints)
        else:
            raise StoreError(f"etcd {path}: no endpoint answered: {last!r}") from last
        data = json.loads(text)
        if not isinstance(data, dict):
            raise StoreError(f"etcd {path}: unexpected reply {text[:200]}")
        return data

    # -- epoch ---------------------------------------------------------------

    async def _get_epoch_raw(self) -> tuple[bytes, int]:
        """The epoch key's value and mod_revision (b"", 0 if absent)."""
        res = await self._call("/v3/kv/range", {"key": b64(self._epoch_key)})
        kvs = res.get("kvs") or []
        if not kvs:
            return b"", 0
        return unb64(kvs[0].get("value", "")), int(kvs[0]["mod_revision"])

    async def _get_epoch(self) -> tuple[EpochInfo, int]:
        """The ownership record and the epoch key's mod_revision (0 if absent)."""
        raw, mod = await self._get_epoch_raw()
        return (_decode_epoch(raw) if mod else EpochInfo(0, "")), mod

    async def read_epoch(self) -> EpochInfo:
        return (await self._get_epoch())[0]

    async def _raise_epoch(self, owner: str, requested: int | None) -> int:
        # A nonce makes our own write recognisable if its reply was lost.
        nonce = uuid.uuid4().hex
        raw, mod = await self._get_epoch_raw()
        while True:
            cur = _decode_epoch(raw) if mod else EpochInfo(0, "")
            if requested is not None and requested <= cur.epoch:
                raise StaleEpochError(requested, cur.epoch)
            new = requested if requested is not None else cur.epoch + 1
            value = json.dumps({"epoch": new, "owner": owner, "nonce": nonce}).encode()
            compare = (
                {"key": b64(self._epoch_key), "target": "MOD", "mod_revision": str(mod)}
                if mod
                else {"key": b64(self._epoch_key), "target": "CREATE", "create_revision": "0"}
            )
            compare["result"] = "EQUAL"
            res = await self._call(
                "/v3/kv/txn",
                {
                    "compare": [compare],
                    "success": [
                        {"request_put": {"key": b64(self._epoch_key), "value": b64(value)}}
                    ],
                },
            )
            if res.get("succeeded"):
                # The txn's revision is the mod_revision of the key it wrote.
                self._epoch_mod_revision = int(res["header"]["revision"])
                return new
            raw, mod = await self._get_epoch_raw()
            if raw == value:
                # Our txn applied on an attempt whose reply was lost.
                self._epoch_mod_revision = mod
                return new
            # Someone else raised it between our read and our txn: go again.

    # -- writes --------------------------------------------------------------

    async def _commit(self, ops: list[WriteOp], epoch: int) -> None:
        success: list[dict[str, Any]] = []
        for op in ops:
            key = b64(self._key(op.persistent_id))
            if op.kind == "put":
                assert op.record is not None
                success.append({"request_put": {"key": key, "value": b64(op.record.to_bytes())}})
            else:
                success.append({"request_delete_range": {"key": key}})
        for _ in range(3):
            self.stats.round_trips += 1
            res = await self._call(
                "/v3/kv/txn",
                {
                    "compare": [
                        {
                            "key": b64(self._epoch_key),
                            "target": "MOD",
                            "result": "EQUAL",
                            "mod_revision": str(self._epoch_mod_revision),
                        }
                    ],
                    "success": success,
                },
            )
            if res.get("succeeded"):
                return
            cur, mod = await self._get_epoch()
            if cur.epoch != epoch:
                raise StaleEpochError(epoch, cur.epoch)
            # Same epoch rewritten (e.g. by a second store object of this
            # owner): adopt its revision and try again.
            self._epoch_mod_revision = mod
        raise StoreError("etcd: epoch key keeps changing under the same epoch")

    # -- reads ---------------------------------------------------------------

    async def _range_all(self) -> tuple[list[dict[str, Any]], int]:
        """Every key under the prefix at one revision, and that revision."""
        kvs: list[dict[str, Any]] = []
        start = self._root
        end = prefix_end(self._root)
        revision = 0
        while True:
            body: dict[str, Any] = {"key": b64(start), "range_end": b64(end), "limit": "1000"}
            if revision:
                body["revision"] = str(revision)
            res = await self._call("/v3/kv/range", body)
            if not revision:
                revision = int(res["header"]["revision"])
            page = res.get("kvs") or []
            kvs.extend(page)
            if not res.get("more") or not page:
                return kvs, revision
            start = unb64(page[-1]["key"]) + b"\0"

    def _decode_state(
        self, kvs: list[dict[str, Any]]
    ) -> tuple[dict[int, PersistentOpenRecord], EpochInfo]:
        records: dict[int, PersistentOpenRecord] = {}
        epoch = EpochInfo(0, "")
        for kv in kvs:
            key = unb64(kv["key"])
            value = unb64(kv.get("value", ""))
            if key == self._epoch_key:
                epoch = _decode_epoch(value)
            elif key.startswith(self._rec_prefix):
                rec = _decode_record(key, value)
                records[rec.persistent_id] = rec
        return records, epoch

    async def load_all(self) -> list[PersistentOpenRecord]:
        kvs, _ = await self._range_all()
        return list(self._decode_state(kvs)[0].values())

    async def follow(self) -> AsyncIterator[StoreChange]:
        while True:
            kvs, revision = await self._range_all()
            records, epoch = self._decode_state(kvs)
            yield StoreChange(
                "reset", records=tuple(records.values()), epoch=epoch.epoch, owner=epoch.owner
            )
            async for change in self._watch(revision + 1):
                yield change
            # The watch ended (compaction, cancellation, connection loss):
            # resynchronise from a fresh read.

    async def _watch(self, start_revision: int) -> AsyncIterator[StoreChange]:
        body = {
            "create_request": {
                "key": b64(self._root),
                "range_end": b64(prefix_end(self._root)),
                "start_revision": str(start_revision),
            }
        }
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        try:
            async with self._get_session().post(
                self.base_url + "/v3/watch", json=body, timeout=timeout
            ) as resp:
                self._watches.add(resp)
                try:
                    if resp.status != 200:
                        raise StoreError(f"etcd watch: HTTP {resp.status}")
                    # The gateway streams one JSON message per line.
                    async for line in iter_lines(resp.content):
                        msg = json.loads(line)
                        result = msg.get("result")
                        if (
                            result is None
                            or result.get("canceled")
                            or result.get("compact_revision")
                        ):
                            return
                        for ev in result.get("events") or []:
                            change = self._event_change(ev)
                            if change is not None:
                                yield change
                finally:
                    self._watches.discard(resp)
        except (aiohttp.ClientError, TimeoutError):
            if self._closed:
                raise StoreClosedError("etcd store is closed") from None
            self._current = (self._current + 1) % len(self.endpoints)
            await asyncio.sleep(0.2)

    def _event_change(self, ev: dict[str, Any]) -> StoreChange | None:
        kv = ev["kv"]
        key = unb64(kv["key"])
        deleted = ev.get("type") == "DELETE"
        if key == self._epoch_key:
            if deleted:
                return None
            info = _decode_epoch(unb64(kv.get("value", "")))
            return StoreChange("epoch", epoch=info.epoch, owner=info.owner)
        if not key.startswith(self._rec_prefix):
            return None
        if deleted:
            return StoreChange("delete", persistent_id=int(key[len(self._rec_prefix) :], 16))
        rec = _decode_record(key, unb64(kv.get("value", "")))
        return StoreChange("put", record=rec, persistent_id=rec.persistent_id)

    async def _close(self) -> None:
        self._closed = True
        for resp in list(self._watches):
            resp.close()
        if self._session is not None:
            await self._session.close()
            self._session = None


def _decode_epoch(value: bytes) -> EpochInfo:
    try:
        d = json.loads(value)
        return EpochInfo(int(d["epoch"]), str(d.get("owner", "")))
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"etcd: corrupt epoch record {value[:100]!r}") from exc


def _decode_record(key: bytes, value: bytes) -> PersistentOpenRecord:
    try:
        return PersistentOpenRecord.from_json(value)
    except RecordFormatError as exc:
        raise StoreError(f"etcd: corrupt record at {key!r}: {exc}") from exc
