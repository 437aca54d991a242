"""The SMB2/3 server: TCP transport, framing, decryption, signature checks, dispatch,
compounding, credits and async responses (MS-SMB2 3.3.4, 3.3.5.2).

Extension points (for engineers adding or replacing commands):

- `hasmb.smb.request.Registry` maps a command code to a handler
  `async def handler(req: Request) -> bytes` (response body after the header).
  Each command module exposes `register(registry)`; `default_registry()` below
  lists them. Replace a handler by calling `registry.add(Command.X, fn)` after
  the defaults, or pass your own registry to `SmbServer`.
- FSCTLs: `registry.add_fsctl(code, handler)` where the handler is
  `async def h(req, open_or_None, input: bytes, max_output: int) -> bytes`
  (hasmb.smb.ioctl dispatches to it).
- Errors: raise `hasmb.smb.errors.SmbError(status)`. Success warnings: set
  `req.status`. Blocking: `await req.go_async()` then
  `await req.wait_cancellable(...)`.
- State: `SmbServer.state` (hasmb.smb.state.GlobalState) is the global open
  table (by persistent FileId and CreateGuid) and per-file shared state;
  `GlobalState.on_open_change` callbacks see every open added and removed
  (the continuous-availability store hooks in there).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import struct
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from hasmb.smb import crypto
from hasmb.smb.config import ShareConfig, SmbdConfig
from hasmb.smb.constants import (
    FLAGS_ASYNC_COMMAND,
    FLAGS_RELATED_OPERATIONS,
    FLAGS_SERVER_TO_REDIR,
    FLAGS_SIGNED,
    Command,
    Status,
)
from hasmb.smb.errors import SmbError
from hasmb.smb.fence import Fence, Fenced, KillSwitch
from hasmb.smb.framing import FrameReader, read_stream_frame
from hasmb.smb.header import (
    HEADER_SIZE,
    PROTOCOL_ID,
    SMB1_ID,
    TRANSFORM_ID,
    TRANSFORM_SIZE,
    Header,
    MalformedPacket,
    TransformHeader,
)
from hasmb.smb.request import TAIL_HEADROOM, CompoundState, Registry, Request
from hasmb.smb.state import Connection, GlobalState, Session, Share

log = logging.getLogger("hasmb.smb")

MAX_CREDITS = 8192
MAX_PDU = 16 * 1024 * 1024 + 1024
SESSION_ANY = 0xFFFFFFFFFFFFFFFF
TREE_ANY = 0xFFFFFFFF


def default_registry() -> Registry:
    from hasmb.smb import (
        create,
        fileio,
        ioctl,
        lock,
        negotiate,
        notify,
        oplock,
        query,
        session_setup,
        setinfo,
        tree,
    )

    reg = Registry()
    for mod in (
        negotiate,
        session_setup,
        tree,
        create,
        fileio,
        query,
        setinfo,
        ioctl,
        lock,
        notify,
        oplock,
    ):
        mod.register(reg)
    reg.add(Command.ECHO, _echo, needs_session=False, needs_tree=False)
    reg.add(Command.CANCEL, _cancel_placeholder, needs_session=False, needs_tree=False)
    return reg


async def _echo(req: Request) -> bytes:
    return struct.pack("<HH", 4, 0)


async def _cancel_placeholder(req: Request) -> bytes:  # handled inline by the server
    raise SmbError(Status.NOT_SUPPORTED)


def error_body(data: bytes = b"") -> bytes:
    # MS-SMB2 2.2.2: StructureSize 9, ErrorContextCount, Reserved, ByteCount, ErrorData
    return struct.pack("<HBBI", 9, 0, 0, len(data)) + (data or b"\x00")


@dataclass(eq=False)
class ConnectionHandler:
    server: SmbServer
    conn: Connection
    reader: FrameReader | asyncio.StreamReader
    writer: asyncio.StreamWriter
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    sync_pending: dict[int, Request] = field(default_factory=dict)  # message id -> request
    # CANCELs that arrived before their request started (bounded)
    early_cancels: set[int] = field(default_factory=set)

    def send(self, data: bytes | bytearray) -> None:
        if self.conn.closed or self.writer.is_closing():
            return
        if len(data) > 65536:
            self.writer.write(struct.pack(">I", len(data)))  # avoid copying bulk payloads
            self.writer.write(data)
        else:
            self.writer.write(struct.pack(">I", len(data)) + data)

    async def run(self) -> None:
        try:
            while not self.conn.closed:
                if isinstance(self.reader, FrameReader):
                    packet = await self.reader.read_frame()
                else:
                    packet = await read_stream_frame(self.reader, MAX_PDU, self.conn.peer)
                if packet is None:
                    break
                try:
                    self.receive(packet)
                except MalformedPacket as exc:
                    log.warning("%s: malformed packet (%s), dropping", self.conn.peer, exc)
                    break
                if self.writer.transport.get_write_buffer_size() > 4 * 1024 * 1024:
                    await self.writer.drain()
        finally:
            await self.close()

    async def close(self) -> None:
        if self.conn.closed:
            return
        self.conn.closed = True
        for t in list(self.tasks):
            t.cancel()
        for session in list(self.conn.sessions.values()):
            await self.server.destroy_session(session, disconnect=True)
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()
        self.server.connections.discard(self)

    def receive(self, packet: bytes | bytearray) -> None:
        proto = bytes(packet[:4])
        if isinstance(packet, bytearray) and not _keep_in_place(proto, packet):
            packet = bytes(packet)  # messages are bytes except bulk WRITEs (see framing)
        encrypted = False
        enc_session: Session | None = None
        if proto == TRANSFORM_ID:
            th = TransformHeader.parse(packet)
            enc_session = self.server.state.sessions.get(th.session_id)
            if enc_session is None or enc_session.keys is None or not enc_session.keys.decrypt:
                raise MalformedPacket("encrypted message for an unknown session")
            try:
                packet = crypto.decrypt(self.conn.cipher, enc_session.keys.decrypt, packet)
            except Exception as exc:
                raise MalformedPacket(f"decryption failed: {exc}") from exc
            encrypted = True
        elif proto == SMB1_ID:
            self.server.smb1_negotiate(self, bytes(packet))
            return
        elif proto != PROTOCOL_ID:
            raise MalformedPacket(f"unknown protocol id {proto!r}")
        messages = split_compound(packet)
        if len(messages) == 1 and messages[0][0].command == Command.CANCEL:
            self.handle_cancel(messages[0][0])
            return
        if encrypted and enc_session is not None:
            for h, _ in messages:
                if h.session_id not in (enc_session.session_id, SESSION_ANY):
                    raise MalformedPacket("encrypted message names another session")
        task = asyncio.get_running_loop().create_task(self.process(messages, encrypted))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def handle_cancel(self, h: Header) -> None:
        if h.flags & FLAGS_ASYNC_COMMAND:
            target = self.conn.pending.get(h.async_id)
        else:
            target = self.sync_pending.get(h.message_id)
            if target is None and len(self.early_cancels) < 1024:
                self.early_cancels.add(h.message_id)
        if target is not None:
            target.cancel()

    async def process(self, messages: list[tuple[Header, bytes]], encrypted: bool) -> None:
        try:
            await self._process(messages, encrypted)
        except MalformedPacket as exc:
            # MS-SMB2 demands a disconnect for some protocol violations (e.g. a failed
            # validate-negotiate, a second NEGOTIATE)
            log.warning("%s: protocol violation (%s), disconnecting", self.conn.peer, exc)
            self.writer.close()

    async def _process(self, messages: list[tuple[Header, bytes]], encrypted: bool) -> None:
        compound = CompoundState()
        out: list[tuple[Request, bytes]] = []
        for i, (h, msg) in enumerate(messages):
            req = Request(self.server, self.conn, h, msg, encrypted, compound)
            if h.flags & FLAGS_RELATED_OPERATIONS and i > 0:
                if h.session_id == SESSION_ANY:
                    h.session_id = compound.session_id
                if h.tree_id == TREE_ANY:
                    h.tree_id = compound.tree_id
            else:
                compound.file_id = b""
                compound.create_error = 0
            self.sync_pending[h.message_id] = req
            if self.early_cancels and h.message_id in self.early_cancels:
                self.early_cancels.discard(h.message_id)
                req.cancelled = True
            try:
                body = await self.server.dispatch(self, req)
            finally:
                self.sync_pending.pop(h.message_id, None)
            compound.session_id = h.session_id if req.session is None else req.session.session_id
            compound.tree_id = h.tree_id if req.tree is None else req.tree.tree_id
            if req.async_id:
                # an async reply goes out on its own once the earlier ones are flushed
                if out:
                    self.flush(out)
                    out = []
                self.flush([(req, body)])
                self.server.finish_async(req)
                continue
            out.append((req, body))
        if out:
            self.flush(out)

    def flush(self, responses: list[tuple[Request, bytes]]) -> None:
        """Build, sign, chain and (if needed) encrypt responses; send as one frame."""
        if len(responses) == 1:
            req, body = responses[0]
            if req.tail and req.tail_frame is not None and req.on_response is None:
                if self.send_in_place(req, body):
                    return
            if (
                req.tail
                and req.on_response is None
                and not self.server.should_encrypt(req)
                and not self.server.needs_signature(req)
            ):
                # bulk READ data goes out without being copied into the message
                msg = self.server.build_response(req, body)
                if self.conn.closed or self.writer.is_closing():
                    return
                self.writer.write(struct.pack(">I", len(msg) + len(req.tail)) + msg)
                self.writer.write(req.tail)
                return
        parts: list[bytearray] = []
        enc_session: Session | None = None
        for idx, (req, body) in enumerate(responses):
            msg = self.server.build_response(req, body + req.tail if req.tail else body)
            last = idx == len(responses) - 1
            if not last:
                pad = (-len(msg)) % 8
                msg += b"\x00" * pad
                struct.pack_into("<I", msg, 20, len(msg))
            if len(responses) > 1 and idx > 0 and req.header.flags & FLAGS_RELATED_OPERATIONS:
                flags = int.from_bytes(msg[16:20], "little") | FLAGS_RELATED_OPERATIONS
                struct.pack_into("<I", msg, 16, flags)
            self.server.maybe_sign(req, msg)
            if req.on_response is not None:
                req.on_response(bytes(msg))
            if self.server.should_encrypt(req):
                enc_session = req.session
            parts.append(msg)
        data: bytes | bytearray = parts[0] if len(parts) == 1 else b"".join(parts)
        if enc_session is not None and enc_session.keys is not None:
            data = crypto.encrypt(
                self.conn.cipher, enc_session.keys.encrypt, enc_session.session_id, data
            )
        self.send(data)

    def send_in_place(self, req: Request, body: bytes) -> bool:
        """Frame, sign or encrypt a READ response around its data in the buffer the data
        was read into (Request.tail_frame), so 1-8 MiB of payload is never copied."""
        frame = req.tail_frame
        server = self.server
        encrypt = server.should_encrypt(req)
        session = req.session
        msg_start = TAIL_HEADROOM - HEADER_SIZE - len(body)
        if frame is None or msg_start < 4 + TRANSFORM_SIZE:
            return False
        if encrypt and (session is None or session.keys is None):
            return False
        end = TAIL_HEADROOM + len(req.tail)
        frame[msg_start:TAIL_HEADROOM] = server.build_response(req, body)
        if encrypt and session is not None and session.keys is not None:
            start = msg_start - TRANSFORM_SIZE
            crypto.seal_in_place(
                self.conn.cipher,
                session.keys.encrypt,
                session.session_id,
                frame,
                start,
                end - msg_start,
            )
        else:
            start = msg_start
            with memoryview(frame) as mv, mv[start:end] as msg:
                server.maybe_sign(req, msg)
        struct.pack_into(">I", frame, start - 4, end - start)
        if not (self.conn.closed or self.writer.is_closing()):
            self.writer.write(memoryview(frame)[start - 4 : end])
        return True


def _keep_in_place(proto: bytes, packet: bytearray) -> bool:
    """A received bytearray that can be handled as is: sealed messages (decryption
    makes new bytes) and a lone WRITE (its data only goes through a memoryview)."""
    if proto == TRANSFORM_ID:
        return True
    return (
        proto == PROTOCOL_ID
        and len(packet) >= HEADER_SIZE
        and int.from_bytes(packet[12:14], "little") == Command.WRITE
        and int.from_bytes(packet[20:24], "little") == 0
    )


def split_compound(received: bytes | bytearray) -> list[tuple[Header, bytes]]:
    # a lone bulk WRITE stays the bytearray it was received into (see _keep_in_place);
    # its handler reads it only through struct and memoryview, so it passes for bytes
    packet = cast(bytes, received)
    out: list[tuple[Header, bytes]] = []
    offset = 0
    while True:
        h = Header.parse(packet, offset)
        if h.next_command:
            if (
                h.next_command < HEADER_SIZE
                or h.next_command % 8
                or offset + h.next_command > len(packet)
            ):
                raise MalformedPacket("bad NextCommand")
            out.append((h, packet[offset : offset + h.next_command]))
            offset += h.next_command
        else:
            out.append((h, packet[offset:] if offset else packet))
            return out
        if len(out) > 512:
            raise MalformedPacket("compound too long")


class SmbServer:
    def __init__(
        self,
        config: SmbdConfig,
        registry: Registry | None = None,
        users: dict[str, str] | None = None,
        kill_switch: KillSwitch | None = None,
        owner: bool = True,
    ) -> None:
        self.config = config
        self.registry = registry or default_registry()
        self.state = GlobalState()
        self.server_guid = uuid.uuid4().bytes_le
        self.users = users if users is not None else config.all_users()
        self.connections: set[ConnectionHandler] = set()
        self.shares: dict[str, Share] = {}
        self._async_ids = itertools.count(1)
        self._server: asyncio.AbstractServer | None = None
        self.start_time = 0
        self.draining = False
        # the data-path fence (hasmb.smb.fence): a lone server owns its volume for good;
        # one started as a standby (owner=False: a pod's) never held it, a takeover arms
        # it with grants from the Lease or partner
        self.fence = Fence(kill_switch=kill_switch)
        if owner:
            self.fence.unconditional()
        # async def hook(req, params, open) run after every successful CREATE (CA adds its own)
        self.create_hooks: list[Any] = []
        from hasmb.smb.persistence import ContinuousAvailability

        # durable/persistent handles, reclaim, replay (wraps CREATE, LOCK, ... in the registry)
        self.ca = ContinuousAvailability(self)
        for s in config.shares:
            self.add_share(s)
        self.add_share(ShareConfig(name="IPC$", path="", comment="IPC Service"), ipc=True)
        from hasmb.smb.volume_move import VolumeMoves

        # wraps the tree commands last: holds them during a volume move's cutover
        self.volume_moves = VolumeMoves(self)

    def add_share(self, cfg: ShareConfig, *, ipc: bool = False) -> None:
        root = "" if ipc else os.path.realpath(cfg.path)
        if not ipc and not os.path.isdir(root):
            raise ValueError(f"share {cfg.name}: {cfg.path} is not a directory")
        self.shares[cfg.name.lower()] = Share(config=cfg, root=root, is_ipc=ipc)

    # ------------------------------------------------------------ lifecycle
    async def start(self, host: str, port: int) -> int:
        from hasmb.smb.fileinfo import filetime_now

        self.start_time = filetime_now()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: FrameReader(self._accept, MAX_PDU), host, port, reuse_address=True
        )
        sock = self._server.sockets[0]
        bound: int = sock.getsockname()[1]
        log.info("hasmb-smbd listening on %s:%d", host, bound)
        return bound

    async def _accept(
        self, reader: FrameReader | asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self.draining:
            writer.close()
            return
        peer = writer.get_extra_info("peername")
        sock = writer.get_extra_info("socket")
        if sock is not None:
            import socket

            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        handler = ConnectionHandler(self, Connection(peer=str(peer)), reader, writer)
        self.connections.add(handler)
        await handler.run()

    async def stop(self, drain_timeout: float = 10.0) -> None:
        """Stop accepting, let in-flight requests finish, then close connections."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_timeout
        while loop.time() < deadline and any(
            t for c in self.connections for t in c.tasks if not t.done()
        ):
            busy = [t for c in self.connections for t in c.tasks if not t.done()]
            await asyncio.wait(busy, timeout=max(0.0, deadline - loop.time()))
        for c in list(self.connections):
            await c.close()
        if self._server is not None:
            await self._server.wait_closed()

    def install_signal_handlers(self, stop_event: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop_event.set)

    # ------------------------------------------------------------ sessions
    async def destroy_session(self, session: Session, *, disconnect: bool = False) -> None:
        from hasmb.smb.create import close_open

        for op in list(session.opens.values()):
            if disconnect and await self.ca.preserve(op):
                continue  # durable: kept for its reclaim window (MS-SMB2 3.3.7.1)
            await close_open(self, op)  # pending notifies end NOTIFY_CLEANUP
        session.opens.clear()
        session.trees.clear()
        session.connection.sessions.pop(session.session_id, None)
        if self.state.sessions.get(session.session_id) is session:
            del self.state.sessions[session.session_id]
        session.expired = True

    # ------------------------------------------------------------ dispatch
    async def dispatch(self, ch: ConnectionHandler, req: Request) -> bytes:
        h = req.header
        spec = self.registry.commands.get(h.command)
        try:
            if spec is None:
                raise SmbError(Status.INVALID_PARAMETER, f"unknown command {h.command}")
            if not self.conn_ready(req) and h.command != Command.NEGOTIATE:
                raise MalformedPacket("request before NEGOTIATE")
            if spec.needs_session:
                self.check_session(req, h.command)
            if spec.needs_tree:
                self.check_tree(req)
            self.check_channel_sequence(req)
            return await spec.handler(req)
        except Fenced as exc:
            # No reply: a refusal would be an error the application sees, while a
            # dropped connection makes the client replay the request to the new owner.
            log.warning(
                "%s %s: %s; dropping the connection", ch.conn.peer, _cmd_name(h.command), exc
            )
            ch.writer.transport.abort()
            req.status = Status.NETWORK_NAME_DELETED
            return error_body()
        except SmbError as err:
            req.status = err.status
            if h.command == Command.CREATE:
                req.compound.create_error = err.status
            if err.status not in (Status.PENDING,):
                lvl = logging.DEBUG
                log.log(lvl, "%s %s -> %s", ch.conn.peer, _cmd_name(h.command), err)
            return error_body(err.data)
        except MalformedPacket:
            raise
        except (struct.error, IndexError, ValueError, UnicodeDecodeError) as exc:
            log.info("%s %s: bad request: %s", ch.conn.peer, _cmd_name(h.command), exc)
            req.status = Status.INVALID_PARAMETER
            return error_body()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s %s: internal error", ch.conn.peer, _cmd_name(h.command))
            req.status = 0xC00000E5  # STATUS_INTERNAL_ERROR
            return error_body()

    def conn_ready(self, req: Request) -> bool:
        return req.conn.negotiated

    def check_session(self, req: Request, command: int) -> None:
        h = req.header
        session = req.conn.sessions.get(h.session_id)
        if session is None or session.expired:
            raise SmbError(Status.USER_SESSION_DELETED)
        if not session.valid and command != Command.SESSION_SETUP:
            raise SmbError(Status.USER_SESSION_DELETED)
        req.session = session
        if session.valid and session.keys is not None:
            if session.encrypt_data and not req.encrypted:
                raise SmbError(Status.ACCESS_DENIED, "session requires encryption")
            if not req.encrypted:
                signed = bool(h.flags & FLAGS_SIGNED)
                if signed:
                    if not crypto.verify(req.conn.signing_algorithm, session.keys.signing, req.msg):
                        raise SmbError(Status.ACCESS_DENIED, "bad signature")
                elif session.signing_required and command not in (Command.CANCEL,):
                    raise SmbError(Status.ACCESS_DENIED, "unsigned request")

    def check_tree(self, req: Request) -> None:
        session = req.require_session()
        t = session.trees.get(req.header.tree_id)
        if t is None:
            raise SmbError(Status.NETWORK_NAME_DELETED)
        if t.encrypt and not req.encrypted:
            raise SmbError(Status.ACCESS_DENIED, "share requires encryption")
        req.tree = t

    def check_channel_sequence(self, req: Request) -> None:
        """Hook for ChannelSequence/replay checks (MS-SMB2 3.3.5.2.10); CA work fills it."""

    # ------------------------------------------------------------ responses
    def grant_credits(self, req: Request) -> int:
        h = req.header
        charge = max(1, h.credit_charge)
        req.conn.credits_granted = max(0, req.conn.credits_granted - charge)
        want = max(1, h.credits)
        room = MAX_CREDITS - req.conn.credits_granted
        grant = max(1 if req.conn.credits_granted == 0 else 0, min(want, room))
        if h.command == Command.NEGOTIATE or h.command == Command.SESSION_SETUP:
            grant = max(grant, 1)
        req.conn.credits_granted += grant
        return grant

    def build_response(self, req: Request, body: bytes) -> bytearray:
        h = req.header
        flags = FLAGS_SERVER_TO_REDIR | (h.flags & 0x70)
        if req.async_id:
            flags |= FLAGS_ASYNC_COMMAND
            credits = 0
        else:
            credits = self.grant_credits(req)
        rh = Header(
            command=h.command,
            message_id=h.message_id,
            credit_charge=h.credit_charge,
            status=req.status,
            credits=credits,
            flags=flags,
            async_id=req.async_id,
            tree_id=req.tree.tree_id if req.tree is not None else h.tree_id,
            process_id=h.process_id,
            session_id=req.session.session_id if req.session is not None else h.session_id,
        )
        return bytearray(rh.pack() + body)

    def should_encrypt(self, req: Request) -> bool:
        s = req.session
        if s is None or s.keys is None or not s.keys.encrypt or not s.valid:
            return False
        if req.header.command == Command.SESSION_SETUP and not req.encrypted:
            return False
        return req.encrypted or s.encrypt_data

    def needs_signature(self, req: Request) -> bool:
        s = req.session
        if s is None or s.keys is None or not s.keys.signing or self.should_encrypt(req):
            return False
        if s.anonymous or s.guest:
            return False
        if not (
            req.sign_response
            or (s.valid and (req.header.flags & FLAGS_SIGNED or s.signing_required))
        ):
            return False
        return not (req.status == Status.PENDING and not req.async_id)

    def maybe_sign(self, req: Request, msg: bytearray | memoryview) -> None:
        s = req.session
        if s is None or s.keys is None or not self.needs_signature(req):
            return
        flags = int.from_bytes(msg[16:20], "little") | FLAGS_SIGNED
        struct.pack_into("<I", msg, 16, flags)
        crypto.sign(req.conn.signing_algorithm, s.keys.signing, msg)

    async def send_interim(self, req: Request) -> int:
        """Interim STATUS_PENDING response (MS-SMB2 3.3.4.2) and a new async id."""
        async_id = next(self._async_ids)
        ch = self.handler_for(req.conn)
        req.conn.pending[async_id] = req
        status, req.status = req.status, Status.PENDING
        req.async_id = async_id
        msg = self.build_response(req, error_body())
        # the interim response carries the credits; the final async one grants none
        struct.pack_into("<H", msg, 14, self.grant_credits(req))
        self.maybe_sign(req, msg)
        data: bytes | bytearray = bytes(msg)
        if self.should_encrypt(req) and req.session is not None and req.session.keys:
            data = crypto.encrypt(
                req.conn.cipher, req.session.keys.encrypt, req.session.session_id, data
            )
        req.status = status
        if ch is not None:
            ch.send(data)
        return async_id

    def finish_async(self, req: Request) -> None:
        req.conn.pending.pop(req.async_id, None)

    def handler_for(self, conn: Connection) -> ConnectionHandler | None:
        for c in self.connections:
            if c.conn is conn:
                return c
        return None

    def send_unsolicited(self, conn: Connection, session: Session | None, msg: bytearray) -> None:
        """Server-initiated messages such as oplock/lease breaks (MS-SMB2 3.3.4.6)."""
        ch = self.handler_for(conn)
        if ch is None:
            return
        data: bytes | bytearray = bytes(msg)
        if session is not None and session.keys is not None and session.encrypt_data:
            data = crypto.encrypt(conn.cipher, session.keys.encrypt, session.session_id, data)
        elif (
            session is not None
            and session.keys is not None
            and conn.dialect >= 0x0300
            and session.signing_required
        ):
            crypto.sign(conn.signing_algorithm, session.keys.signing, msg)
            data = bytes(msg)
        ch.send(data)

    def smb1_negotiate(self, ch: ConnectionHandler, packet: bytes) -> None:
        from hasmb.smb.negotiate import smb1_upgrade

        smb1_upgrade(self, ch, packet)

    def iter_sessions(self) -> Iterable[Session]:
        return list(self.state.sessions.values())


def _cmd_name(code: int) -> str:
    try:
        return Command(code).name
    except ValueError:
        return f"0x{code:02x}"
