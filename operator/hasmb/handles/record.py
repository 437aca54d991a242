"""The persistent-open record: what a partner needs to honour a DH2C reclaim.

One record per persistent (or durable) open, keyed by its persistent FileId.
The fields mirror the Open object of MS-SMB2 3.3.1.10 that must survive the
loss of the server process: identity (FileId, CreateGuid, AppInstanceId,
ClientGuid), what was opened and how (share, path, access, share access,
options, attributes), what it holds (oplock or lease, byte-range locks) and
its reclaim timer (durable timeout, disconnected_at).

Serialisation is compact JSON with a version field "v". Bytes are hex strings.
Unknown fields are tolerated: a reader keeps them in `extra` and writes them
back unchanged, so an older server never drops what a newer one wrote.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any

RECORD_VERSION = 1


class RecordFormatError(ValueError):
    """A stored record could not be decoded."""


@dataclass(frozen=True)
class ByteRangeLock:
    """One byte-range lock held by an open (MS-SMB2 2.2.26.1)."""

    offset: int
    length: int
    exclusive: bool


@dataclass(frozen=True)
class LeaseInfo:
    """The lease an open holds (MS-SMB2 3.3.1.12/3.3.1.13); version 1 or 2."""

    key: bytes
    state: int
    epoch: int = 0
    version: int = 2
    parent_key: bytes | None = None


@dataclass
class PersistentOpenRecord:
    """Everything needed to re-create an open after a restart or a takeover."""

    persistent_id: int
    volatile_id: int
    create_guid: bytes
    client_guid: bytes
    share: str
    path: str
    desired_access: int
    share_access: int
    create_options: int
    file_attributes: int
    oplock_level: int
    durable_timeout_ms: int
    user: str
    app_instance_id: bytes | None = None
    lease: LeaseInfo | None = None
    locks: list[ByteRangeLock] = field(default_factory=list)
    is_persistent: bool = True
    disconnected_at: float | None = None
    epoch: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = dict(self.extra)
        d.update(
            {
                "v": RECORD_VERSION,
                "persistent_id": self.persistent_id,
                "volatile_id": self.volatile_id,
                "create_guid": self.create_guid.hex(),
                "client_guid": self.client_guid.hex(),
                "share": self.share,
                "path": self.path,
                "desired_access": self.desired_access,
                "share_access": self.share_access,
                "create_options": self.create_options,
                "file_attributes": self.file_attributes,
                "oplock_level": self.oplock_level,
                "durable_timeout_ms": self.durable_timeout_ms,
                "user": self.user,
                "is_persistent": self.is_persistent,
                "epoch": self.epoch,
            }
        )
        if self.app_instance_id is not None:
            d["app_instance_id"] = self.app_instance_id.hex()
        if self.lease is not None:
            lease: dict[str, Any] = {
                "key": self.lease.key.hex(),
                "state": self.lease.state,
                "epoch": self.lease.epoch,
                "version": self.lease.version,
            }
            if self.lease.parent_key is not None:
                lease["parent_key"] = self.lease.parent_key.hex()
            d["lease"] = lease
        if self.locks:
            d["locks"] = [[lk.offset, lk.length, int(lk.exclusive)] for lk in self.locks]
        if self.disconnected_at is not None:
            d["disconnected_at"] = self.disconnected_at
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def to_bytes(self) -> bytes:
        return self.to_json().encode()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PersistentOpenRecord:
        try:
            version = int(d.get("v", 1))
            if version < 1:
                raise RecordFormatError(f"bad record version {version}")
            lease_d = d.get("lease")
            lease = None
            if lease_d is not None:
                parent = lease_d.get("parent_key")
                lease = LeaseInfo(
                    key=bytes.fromhex(lease_d["key"]),
                    state=int(lease_d["state"]),
                    epoch=int(lease_d.get("epoch", 0)),
                    version=int(lease_d.get("version", 2)),
                    parent_key=bytes.fromhex(parent) if parent is not None else None,
                )
            app = d.get("app_instance_id")
            disc = d.get("disconnected_at")
            rec = cls(
                persistent_id=int(d["persistent_id"]),
                volatile_id=int(d["volatile_id"]),
                create_guid=bytes.fromhex(d["create_guid"]),
                client_guid=bytes.fromhex(d["client_guid"]),
                share=str(d["share"]),
                path=str(d["path"]),
                desired_access=int(d["desired_access"]),
                share_access=int(d["share_access"]),
                create_options=int(d["create_options"]),
                file_attributes=int(d["file_attributes"]),
                oplock_level=int(d["oplock_level"]),
                durable_timeout_ms=int(d["durable_timeout_ms"]),
                user=str(d["user"]),
                app_instance_id=bytes.fromhex(app) if app is not None else None,
                lease=lease,
                locks=[ByteRangeLock(int(o), int(n), bool(x)) for o, n, x in d.get("locks", [])],
                is_persistent=bool(d.get("is_persistent", True)),
                disconnected_at=float(disc) if disc is not None else None,
                epoch=int(d.get("epoch", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, RecordFormatError):
                raise
            raise RecordFormatError(f"bad persistent-open record: {exc!r}") from exc
        rec.extra = {k: v for k, v in d.items() if k not in _KNOWN_KEYS}
        return rec

    @classmethod
    def from_json(cls, data: str | bytes) -> PersistentOpenRecord:
        try:
            d = json.loads(data)
        except ValueError as exc:
            raise RecordFormatError(f"record is not JSON: {exc}") from exc
        if not isinstance(d, dict):
            raise RecordFormatError("record is not a JSON object")
        return cls.from_dict(d)


_KNOWN_KEYS = frozenset({"v"} | {f.name for f in fields(PersistentOpenRecord)} - {"extra"})
