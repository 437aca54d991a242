"""The file store's log line format: CRC framing and torn-tail handling."""

from __future__ import annotations

from typing import Any

from hasmb.handles.file_store import encode_log_line, parse_log


def test_lines_round_trip() -> None:
    entries: list[dict[str, Any]] = [{"e": 1, "d": 5}, {"e": 1, "p": {"x": "y"}}, {"e": 2, "d": 7}]
    data = b"".join(encode_log_line(e) for e in entries)
    assert parse_log(data) == (entries, len(data))


def test_partial_last_line_is_not_consumed() -> None:
    good = encode_log_line({"e": 1, "d": 1})
    torn = encode_log_line({"e": 1, "d": 2})[:-5]
    entries, consumed = parse_log(good + torn)
    assert entries == [{"e": 1, "d": 1}]
    assert consumed == len(good)


def test_damaged_line_stops_parsing() -> None:
    a = encode_log_line({"e": 1, "d": 1})
    b = bytearray(encode_log_line({"e": 1, "d": 2}))
    b[12] ^= 0x01  # flip a bit inside the JSON body: the CRC no longer matches
    c = encode_log_line({"e": 1, "d": 3})
    entries, consumed = parse_log(a + bytes(b) + c)
    assert entries == [{"e": 1, "d": 1}]
    assert consumed == len(a)


def test_garbage_is_rejected() -> None:
    assert parse_log(b"hello world\n") == ([], 0)
    assert parse_log(b"zzzzzzzz {}\n") == ([], 0)
    assert parse_log(b"") == ([], 0)
