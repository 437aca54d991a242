"""The per-request context every command handler receives, and the handler registry.

A handler is `async def handler(req: Request) -> bytes`: it returns the response
body (everything after the 64-byte header) and raises `SmbError` to answer
with an error. It may set `req.status` for a success-class warning such as
STATUS_BUFFER_OVERFLOW, call `req.go_async()` before blocking (the server then
sends an interim STATUS_PENDING response), and wrap blocking waits in
`req.wait_cancellable(...)` so that SMB2 CANCEL ends them.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from hasmb.smb.constants import Status
from hasmb.smb.errors import SmbError
from hasmb.smb.header import HEADER_SIZE, TRANSFORM_SIZE, Header
from hasmb.smb.state import Connection, Open, Session, TreeConnect

if TYPE_CHECKING:
    from hasmb.smb.server import SmbServer

T = TypeVar("T")
Handler = Callable[["Request"], Awaitable[bytes]]
RELATED_FILE_ID = b"\xff" * 16
# frame length (4) + transform header + SMB2 header + a READ response's fixed body (16)
TAIL_HEADROOM = 4 + TRANSFORM_SIZE + HEADER_SIZE + 16


@dataclass(slots=True)
class CommandSpec:
    handler: Handler
    needs_session: bool = True
    needs_tree: bool = True
    # commands allowed on a session whose setup is still in progress
    allow_unauthenticated: bool = False


@dataclass
class Registry:
    """Command code -> handler. Modules add themselves with `register(registry)`."""

    commands: dict[int, CommandSpec] = field(default_factory=dict)
    fsctls: dict[int, Callable[[Request, Open | None, bytes, int], Awaitable[bytes]]] = field(
        default_factory=dict
    )

    def add(
        self,
        command: int,
        handler: Handler,
        *,
        needs_session: bool = True,
        needs_tree: bool = True,
    ) -> None:
        self.commands[command] = CommandSpec(handler, needs_session, needs_tree)

    def add_fsctl(
        self, code: int, handler: Callable[[Request, Open | None, bytes, int], Awaitable[bytes]]
    ) -> None:
        self.fsctls[code] = handler


@dataclass
class CompoundState:
    """What related operations of one compound chain inherit (MS-SMB2 3.3.5.2.7.2)."""

    session_id: int = 0
    tree_id: int = 0
    file_id: bytes = b""
    create_error: int = 0


@dataclass(eq=False)
class Request:
    server: SmbServer
    conn: Connection
    header: Header
    msg: bytes  # the whole message: header + body; offsets in requests are from its start
    encrypted: bool
    compound: CompoundState
    session: Session | None = None
    tree: TreeConnect | None = None
    status: int = Status.SUCCESS
    sign_response: bool = False
    on_response: Callable[[bytes], None] | None = None
    async_id: int = 0
    credits_granted: int = 0
    # bulk payload sent after the body without copying (READ data); part of the message
    tail: bytes | bytearray | memoryview = b""
    # the buffer `tail` is a view of, starting at TAIL_HEADROOM and followed by 16 spare
    # bytes: room to frame, sign or encrypt the response in place (no copy of the data)
    tail_frame: bytearray | None = None
    _cancel: asyncio.Future[None] | None = None
    cancelled: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------ parsing helpers
    def body(self, fmt: struct.Struct) -> tuple[Any, ...]:
        if len(self.msg) < 64 + fmt.size:
            raise SmbError(Status.INVALID_PARAMETER, "short request body")
        return fmt.unpack_from(self.msg, 64)

    def buffer(self, offset: int, length: int) -> bytes:
        if length == 0:
            return b""
        if offset < 64 or offset + length > len(self.msg):
            raise SmbError(Status.INVALID_PARAMETER, "buffer outside the message")
        return self.msg[offset : offset + length]

    def structure_size(self, expected: int) -> None:
        if len(self.msg) < 66:
            raise SmbError(Status.INVALID_PARAMETER, "no structure size")
        size = int.from_bytes(self.msg[64:66], "little")
        if size != expected:
            raise SmbError(Status.INVALID_PARAMETER, "bad structure size")

    # ------------------------------------------------------------ state lookups
    def require_session(self) -> Session:
        if self.session is None:
            raise SmbError(Status.USER_SESSION_DELETED)
        return self.session

    def require_tree(self) -> TreeConnect:
        if self.tree is None:
            raise SmbError(Status.NETWORK_NAME_DELETED)
        return self.tree

    def lookup_open(self, file_id: bytes) -> Open:
        """FileId -> Open of this session and tree (3.3.5.2.9 style checks)."""
        if file_id == RELATED_FILE_ID:
            if self.compound.create_error:
                raise SmbError(self.compound.create_error)
            if not self.compound.file_id:
                raise SmbError(Status.INVALID_PARAMETER)
            file_id = self.compound.file_id
        session = self.require_session()
        volatile = int.from_bytes(file_id[8:16], "little")
        persistent = int.from_bytes(file_id[0:8], "little")
        op = session.opens.get(volatile)
        if op is None or op.persistent_id != persistent or op.closed:
            raise SmbError(Status.FILE_CLOSED)
        if self.tree is not None and op.tree is not self.tree:
            raise SmbError(Status.FILE_CLOSED)
        self.compound.file_id = file_id
        return op

    # ------------------------------------------------------------ async
    async def go_async(self) -> int:
        """Send the interim response now; the final one will carry this async id."""
        if not self.async_id:
            self.async_id = await self.server.send_interim(self)
        return self.async_id

    def cancel(self) -> None:
        self.cancelled = True
        if self._cancel is not None and not self._cancel.done():
            self._cancel.set_result(None)

    async def wait_cancellable(self, aw: Awaitable[T]) -> T:
        """Await `aw`; an SMB2 CANCEL of this request raises SmbError(CANCELLED)."""
        loop = asyncio.get_running_loop()
        if self.cancelled:
            # the CANCEL overtook us (it is handled as soon as it is read)
            if asyncio.iscoroutine(aw):
                aw.close()
            raise SmbError(Status.CANCELLED)
        if self._cancel is None:
            self._cancel = loop.create_future()
        task: asyncio.Future[T] = asyncio.ensure_future(aw)
        waiters: set[asyncio.Future[Any]] = {task, self._cancel}
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        raise SmbError(Status.CANCELLED)
