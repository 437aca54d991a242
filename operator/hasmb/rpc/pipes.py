"""DCE/RPC over SMB named pipes (contract 4).

The SMB server calls `open_pipe(name, ctx)` on CREATE in IPC$ and moves bytes
with `write` / `read` / `transceive`; `close()` on CLOSE or session teardown.
Each `NamedPipe` is one DCE/RPC association (MS-RPCE 2.1.1.2 ncacn_np).

The pipe is message-mode: every DCE/RPC fragment the server emits is one
message, and a read returns at most one message.  Reads block until output
exists (`has_data` says whether a read would return at once; the SMB server
should go async otherwise).  A read shorter than the current message returns
its first `max_len` bytes and `available` then reports how many bytes of that
message remain: the SMB server answers STATUS_BUFFER_OVERFLOW while it is
non-zero (MS-SMB2 3.3.5.12) and the next read continues the message.

`PipeContext.users` (optional, name -> password) lets clients that bind with
DCE/RPC authentication on the pipe (smbtorture's ncacn_np with `sign`)
authenticate; without it such binds are refused with bind_nak.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

from hasmb.rpc.connection import MAX_FRAG, RpcConnection
from hasmb.rpc.pdu import HEADER_SIZE
from hasmb.rpc.security import AuthIdentity
from hasmb.rpc.srvsvc import ShareInfo, SrvsvcInterface


class PipeError(Exception):
    """The client wrote bytes that are not DCE/RPC (the SMB server fails the write)."""


@dataclass(frozen=True)
class PipeShareInfo:
    name: str
    type: int
    comment: str
    path: str


@dataclass
class PipeContext:
    netname: str
    shares: list[PipeShareInfo]
    user: str
    session_key: bytes
    users: Mapping[str, str] = field(default_factory=dict)


class NamedPipe:
    def __init__(self, name: str, ctx: PipeContext) -> None:
        self.name = name
        shares = [ShareInfo(s.name, s.type, s.comment, s.path) for s in ctx.shares]
        iface = SrvsvcInterface(ctx.netname, lambda: shares)
        identity = AuthIdentity(ctx.users, ctx.netname, ctx.netname.lower()) if ctx.users else None
        self._conn = RpcConnection(
            [iface], identity, self._emit, f"\\PIPE\\{name}", peer="smb", transport_user=ctx.user
        )
        self._inbuf = bytearray()
        self._out: collections.deque[bytearray] = collections.deque()
        self._head_started = False
        self._ready = asyncio.Event()
        self._closed = False
        self._broken = False
        self._close_task: asyncio.Task[None] | None = None

    async def _emit(self, data: bytes) -> None:
        # `data` may hold several fragments (faults are sent whole); split so
        # each fragment is its own message.
        while data:
            (n,) = struct.unpack_from("<H", data, 8) if len(data) >= 16 else (len(data),)
            n = max(n, 1)
            self._out.append(bytearray(data[:n]))
            data = data[n:]
        self._ready.set()

    @property
    def available(self) -> int:
        """Bytes left of a message a previous read returned only in part."""
        return len(self._out[0]) if self._out and self._head_started else 0

    @property
    def has_data(self) -> bool:
        return bool(self._out)

    async def write(self, data: bytes) -> None:
        if self._closed or self._broken:
            raise PipeError("pipe is closed")
        self._inbuf += data
        while len(self._inbuf) >= HEADER_SIZE:
            (frag_len,) = struct.unpack_from("<H", self._inbuf, 8)
            if frag_len < HEADER_SIZE or frag_len > MAX_FRAG:
                self._broken = True
                raise PipeError(f"bad fragment length {frag_len}")
            if len(self._inbuf) < frag_len:
                break
            frag = bytes(self._inbuf[:frag_len])
            del self._inbuf[:frag_len]
            if not await self._conn.receive(frag):
                # The connection already queued its fault / bind_nak; further
                # writes fail, reads drain what is queued.
                self._broken = True
                break

    async def read(self, max_len: int) -> bytes:
        while not self._out:
            if self._closed or self._broken:
                return b""
            self._ready.clear()
            await self._ready.wait()
        head = self._out[0]
        out = bytes(head[:max_len])
        del head[:max_len]
        if head:
            self._head_started = True
        else:
            self._out.popleft()
            self._head_started = False
        return out

    async def transceive(self, data: bytes, max_out: int) -> bytes:
        await self.write(data)
        return await self.read(max_out)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._ready.set()
        with contextlib.suppress(RuntimeError):
            self._close_task = asyncio.get_running_loop().create_task(self._conn.close())


PIPES = ("srvsvc",)


def open_pipe(name: str, ctx: PipeContext) -> NamedPipe | None:
    """A new pipe instance, or None if there is no such pipe."""
    base = name.replace("/", "\\").lstrip("\\")
    if base.lower().startswith("pipe\\"):
        base = base[5:]
    if base.lower() not in PIPES:
        return None
    return NamedPipe(base.lower(), ctx)
