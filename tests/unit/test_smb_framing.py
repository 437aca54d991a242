"""hasmb.smb.framing.FrameReader: frames split and merged arbitrarily by the socket."""

from __future__ import annotations

import asyncio
import os

from hasmb.smb.framing import SCRATCH_SIZE, FrameReader


async def _noop(reader: FrameReader, writer: asyncio.StreamWriter) -> None:
    return None


def _feed(fr: FrameReader, data: bytes, chunk: int) -> None:
    """What the transport does: recv_into get_buffer(), then buffer_updated()."""
    pos = 0
    while pos < len(data):
        buf = fr.get_buffer(-1)
        n = min(len(buf), chunk, len(data) - pos)
        buf[:n] = data[pos : pos + n]
        fr.buffer_updated(n)
        pos += n


def _frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


async def test_small_and_large_frames_in_any_chunking() -> None:
    payloads = [
        b"a" * 70,
        os.urandom(3 * SCRATCH_SIZE + 5),
        b"",
        b"b" * 1000,
        os.urandom(SCRATCH_SIZE),
    ]
    stream = b"".join(_frame(p) for p in payloads)
    for chunk in (1, 3, 4096, 65536 + 7, len(stream)):
        fr = FrameReader(_noop, 16 * 1024 * 1024)
        _feed(fr, stream, chunk)
        fr.eof_received()
        got = []
        while (f := await fr.read_frame()) is not None:
            # large frames arrive in the buffer they were received into, small ones as bytes
            assert isinstance(f, bytearray) == (len(f) > SCRATCH_SIZE // 2), (chunk, len(f))
            got.append(bytes(f))
        assert got == payloads, chunk


async def test_bad_frame_header_ends_the_stream_after_earlier_frames() -> None:
    fr = FrameReader(_noop, 1024)
    _feed(fr, _frame(b"ok") + b"\x01\x00\x00\x02zz" + _frame(b"never"), 5)
    assert await fr.read_frame() == b"ok"
    assert await fr.read_frame() is None
    fr2 = FrameReader(_noop, 1024)
    _feed(fr2, _frame(b"x" * 2000), 100)  # longer than the limit
    assert await fr2.read_frame() is None


async def test_reader_waits_for_a_frame_split_across_reads() -> None:
    fr = FrameReader(_noop, 16 * 1024 * 1024)
    payload = os.urandom(SCRATCH_SIZE * 2)
    data = _frame(payload)
    task = asyncio.get_running_loop().create_task(fr.read_frame())
    _feed(fr, data[:1000], 1000)
    assert not task.done()
    _feed(fr, data[1000:], 50000)
    got = await asyncio.wait_for(task, 5)
    assert isinstance(got, bytearray) and got == payload
