"""DCE/RPC over SMB named pipes (contract 4).

The SMB server calls `open_pipe(name, ctx)` on CREATE in IPC$ and moves bytes
with `write` / `read` / `transceive`; `close()` on CLOSE or session teardown.
Each `NamedPipe` is one DCE/RPC association (MS-RPCE 2.1.1.2 ncacn_np).

Reads block until the server has produced output (the SMB server should send
an interim async response if it does not want to wait).  A read shorter than
the pending PDU returns the first `max_len` bytes; `available` then reports
how many more are queued (the SMB server answers STATUS_BUFFER_OVERFLOW while
it is non-zero, as message-mode pipes do).

`PipeContext.users` (optional, name -> password) lets clients that bind with
DCE/RPC authentication on the pipe (smbtorture's ncacn_np with `sign`)
authenticate; without it such binds are refused with bind_nak.
"""

from __future__ import annotations

import asyncio
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
        self._out: bytearray = bytearray()
        self._ready = asyncio.Event()
        self._closed = False
        self._broken = False
        self._close_task: asyncio.Task[None] | None = None

    async def _emit(self, data: bytes) -> None:
        self._out += data
        self._ready.set()

    @property
    def available(self) -> int:
        return len(self._out)

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
        out = bytes(self._out[:max_len])
        del self._out[:max_len]
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
