"""A self-describing write pattern, so a reader can tell which write a block holds.

Every block starts with a header naming the file, the block index and the
generation (how many times that block has been written); the rest is derived
from those, so corruption and stale data are both detectable from the bytes
alone. An acknowledged write is lost when a later read shows an older
generation than the one acknowledged.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

MAGIC = b"HASMBPRB"
_HEADER = struct.Struct("<8sQQQ")  # magic, file tag, block index, generation


@dataclass(frozen=True)
class BlockId:
    file_tag: int
    index: int
    generation: int


def make_block(block: BlockId, size: int) -> bytes:
    if size < _HEADER.size + 32:
        raise ValueError(f"block size {size} too small for the pattern header")
    header = _HEADER.pack(MAGIC, block.file_tag, block.index, block.generation)
    seed = hashlib.sha256(header).digest()
    body_len = size - len(header)
    body = (seed * (body_len // len(seed) + 1))[:body_len]
    return header + body


def parse_block(data: bytes, size: int) -> BlockId | None:
    """Return the block's identity, or None when it is absent (zeros) or corrupt."""
    if len(data) < size or data[:8] != MAGIC:
        return None
    _, tag, index, generation = _HEADER.unpack_from(data)
    block = BlockId(tag, index, generation)
    return block if make_block(block, size) == data[:size] else None
