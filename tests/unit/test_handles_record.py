"""Serialisation of persistent-open records."""

from __future__ import annotations

import json

import pytest

from hasmb.handles import ByteRangeLock, LeaseInfo, PersistentOpenRecord
from hasmb.handles.record import RECORD_VERSION, RecordFormatError


def full_record() -> PersistentOpenRecord:
    return PersistentOpenRecord(
        persistent_id=0xFFFF_FFFF_FFFF_FFFE,
        volatile_id=7,
        create_guid=bytes(range(16)),
        client_guid=bytes(range(16, 32)),
        share="data",
        path="dir\\file.vhdx",
        desired_access=0x0012019F,
        share_access=0x7,
        create_options=0x40,
        file_attributes=0x80,
        oplock_level=0xFF,
        durable_timeout_ms=60000,
        user="alice",
        app_instance_id=bytes(range(32, 48)),
        lease=LeaseInfo(key=b"K" * 16, state=7, epoch=3, version=2, parent_key=b"P" * 16),
        locks=[ByteRangeLock(0, 100, True), ByteRangeLock(1 << 62, 1, False)],
        disconnected_at=1764000000.25,
        epoch=4,
    )


def test_round_trip_all_fields() -> None:
    rec = full_record()
    back = PersistentOpenRecord.from_json(rec.to_json())
    assert back == rec


def test_round_trip_minimal_fields() -> None:
    rec = full_record()
    rec.app_instance_id = None
    rec.lease = None
    rec.locks = []
    rec.disconnected_at = None
    data = json.loads(rec.to_json())
    assert "lease" not in data and "locks" not in data and "app_instance_id" not in data
    assert PersistentOpenRecord.from_json(rec.to_bytes()) == rec


def test_compact_and_versioned() -> None:
    text = full_record().to_json()
    assert " " not in text.replace("dir\\\\file.vhdx", "")
    assert json.loads(text)["v"] == RECORD_VERSION
    assert len(text) < 700


def test_unknown_fields_are_kept_and_written_back() -> None:
    d = full_record().to_dict()
    d["v"] = RECORD_VERSION + 1
    d["future_field"] = {"x": [1, 2]}
    rec = PersistentOpenRecord.from_dict(d)
    assert rec.extra == {"future_field": {"x": [1, 2]}}
    again = json.loads(rec.to_json())
    assert again["future_field"] == {"x": [1, 2]}
    # The known fields are re-emitted with this reader's version.
    assert again["v"] == RECORD_VERSION


@pytest.mark.parametrize(
    "text",
    ["not json", "[1,2]", '{"v":1}', '{"v":0,"persistent_id":1}'],
)
def test_malformed_records_raise(text: str) -> None:
    with pytest.raises(RecordFormatError):
        PersistentOpenRecord.from_json(text)


def test_bad_hex_raises() -> None:
    d = full_record().to_dict()
    d["create_guid"] = "zz"
    with pytest.raises(RecordFormatError):
        PersistentOpenRecord.from_dict(d)
