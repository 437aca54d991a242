"""The probe's self-describing block pattern detects stale and corrupt data."""

from __future__ import annotations

import pytest

from hasmb.probe.pattern import BlockId, make_block, parse_block


def test_round_trip() -> None:
    block = BlockId(3, 17, 42)
    assert parse_block(make_block(block, 4096), 4096) == block


def test_generations_differ() -> None:
    assert make_block(BlockId(1, 0, 1), 4096) != make_block(BlockId(1, 0, 2), 4096)


def test_zeros_and_corruption_are_detected() -> None:
    data = bytearray(make_block(BlockId(1, 2, 3), 4096))
    assert parse_block(bytes(4096), 4096) is None
    data[1000] ^= 0xFF
    assert parse_block(bytes(data), 4096) is None
    assert parse_block(bytes(data[:100]), 4096) is None


def test_tiny_blocks_rejected() -> None:
    with pytest.raises(ValueError):
        make_block(BlockId(1, 0, 1), 16)
