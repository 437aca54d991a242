"""The SMB2 direct-TCP transport's receive side (MS-SMB2 2.1): 4-byte big-endian length
frames, each received into its own buffer.

A StreamReader copies every byte three times (recv into a fresh bytes, append to its
buffer, slice out for readexactly). For 1-8 MiB WRITEs that dominated the server's CPU,
so this BufferedProtocol lets the kernel write a large frame straight into the
bytearray it is handed on in; small frames (and the length words) go through one
scratch buffer and leave it as bytes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

log = logging.getLogger("hasmb.smb")

SCRATCH_SIZE = 256 * 1024
# frames waiting for the connection's loop beyond this: stop reading the socket
QUEUE_HIGH = 32 * 1024 * 1024
QUEUE_LOW = 8 * 1024 * 1024

OnConnect = Callable[["FrameReader", asyncio.StreamWriter], Awaitable[None]]


class FrameReader(asyncio.streams.FlowControlMixin, asyncio.BufferedProtocol):
    """Protocol of one connection: hands whole frames to `read_frame`, and (being a
    FlowControlMixin) backs an ordinary StreamWriter for the send side."""

    def __init__(self, on_connect: OnConnect, max_frame: int) -> None:
        self._eloop = asyncio.get_running_loop()
        super().__init__(self._eloop)
        self._on_connect = on_connect
        self._max_frame = max_frame
        self._scratch = bytearray(SCRATCH_SIZE)
        self._have = 0  # bytes of the scratch buffer holding unparsed data
        self._big: bytearray | None = None  # a large frame being received in place
        self._big_got = 0
        self._frames: deque[bytes | bytearray] = deque()
        self._queued = 0
        self._eof = False
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._transport: asyncio.Transport | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed: asyncio.Future[None] = self._eloop.create_future()
        self.peer = ""

    # ------------------------------------------------------------ protocol callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self.peer = str(transport.get_extra_info("peername"))
        writer = asyncio.StreamWriter(transport, self, None, self._eloop)
        self._task = self._eloop.create_task(self._run(writer))

    async def _run(self, writer: asyncio.StreamWriter) -> None:
        try:
            await self._on_connect(self, writer)
        except Exception:
            log.exception("%s: connection handler failed", self.peer)
            writer.close()

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._big is not None:
            return memoryview(self._big)[self._big_got :]
        if self._have == len(self._scratch):  # only after a protocol error (see _fail)
            self._have = 0
        return memoryview(self._scratch)[self._have :]

    def buffer_updated(self, nbytes: int) -> None:
        if self._eof:
            self._have = 0  # after a bad frame: discard until the connection closes
            return
        if self._big is not None:
            self._big_got += nbytes
            if self._big_got == len(self._big):
                self._push(self._big)
                self._big = None
            return
        self._have += nbytes
        self._parse()

    def eof_received(self) -> bool:
        self._finish()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()
        super().connection_lost(exc)
        if not self._closed.done():
            self._closed.set_result(None)

    def _get_close_waiter(self, stream: asyncio.StreamWriter) -> asyncio.Future[None]:
        return self._closed

    # ------------------------------------------------------------ frames
    def _parse(self) -> None:
        buf, pos, have = self._scratch, 0, self._have
        while have - pos >= 4:
            length = int.from_bytes(buf[pos : pos + 4], "big")
            if buf[pos] != 0 or length > self._max_frame:
                self._fail(bytes(buf[pos : pos + 4]))
                return
            start = pos + 4
            if have - start >= length:
                self._push(bytes(buf[start : start + length]))
                pos = start + length
                continue
            if length > len(buf) // 2:
                # the rest of this frame is received straight into its own buffer
                big = bytearray(length)
                big[: have - start] = buf[start:have]
                self._big, self._big_got = big, have - start
                pos = have
            break
        if pos:
            rest = have - pos
            buf[:rest] = buf[pos:have]
            self._have = rest

    def _push(self, frame: bytes | bytearray) -> None:
        self._frames.append(frame)
        self._queued += len(frame)
        if self._queued > QUEUE_HIGH and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def _fail(self, header: bytes) -> None:
        log.warning("%s: bad frame header %r, dropping", self.peer, header)
        self._have = 0
        self._finish()

    def _finish(self) -> None:
        self._eof = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def read_frame(self) -> bytes | bytearray | None:
        """The next frame's payload (bytearray for one received in place), or None at
        the end of the connection or after a malformed frame header."""
        while not self._frames:
            if self._eof:
                return None
            self._waiter = self._eloop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        frame = self._frames.popleft()
        self._queued -= len(frame)
        if self._paused and self._queued < QUEUE_LOW and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        return frame


async def read_stream_frame(
    reader: asyncio.StreamReader, max_frame: int, peer: str
) -> bytes | None:
    """One frame from a plain StreamReader (connections handed over by hasmb.smb.forward)."""
    try:
        hdr = await reader.readexactly(4)
        length = int.from_bytes(hdr, "big")
        if hdr[0] != 0 or length > max_frame:
            log.warning("%s: bad frame header %r, dropping", peer, hdr)
            return None
        return await reader.readexactly(length)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
