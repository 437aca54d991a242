"""ncacn_ip_tcp listener: frames the byte stream into fragments for RpcConnection.

Each client connection is its own task; a malformed or hostile peer can only
lose its own connection.  A fragment longer than the negotiated max_recv_frag
is answered with a protocol-error fault and the connection is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Sequence

from hasmb.rpc.connection import MAX_FRAG, RpcConnection
from hasmb.rpc.interface import RpcInterface
from hasmb.rpc.pdu import (
    HEADER_SIZE,
    NCA_S_PROTO_ERROR,
    PFC_FIRST_FRAG,
    PFC_LAST_FRAG,
    PType,
    build_pdu,
    fault_body,
)
from hasmb.rpc.security import AuthIdentity

log = logging.getLogger(__name__)

IDLE_TIMEOUT = 3600.0
MAX_CONNECTIONS = 1024


class RpcTcpServer:
    def __init__(
        self,
        interfaces: Sequence[RpcInterface],
        identity: AuthIdentity | None,
        host: str,
        port: int,
    ) -> None:
        self._interfaces = list(interfaces)
        self._identity = identity
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self._host, self._port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._tasks) >= MAX_CONNECTIONS:
            log.warning("rpc: connection limit %d reached; refusing a client", MAX_CONNECTIONS)
            writer.close()
            return
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            # stop(): end quietly; asyncio's stream callback would log a
            # cancelled client task as an error (Python 3.11).
            pass
        finally:
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        peer_s = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)

        async def send(data: bytes) -> None:
            writer.write(data)
            await writer.drain()

        conn = RpcConnection(self._interfaces, self._identity, send, str(self.port), peer_s)
        try:
            while True:
                header = await asyncio.wait_for(reader.readexactly(HEADER_SIZE), IDLE_TIMEOUT)
                frag_length, _auth, call_id = struct.unpack_from("<HHI", header, 8)
                # Before bind the peer has not negotiated; accept up to our maximum.
                limit = conn.max_recv_frag if conn.bound else MAX_FRAG
                if frag_length > limit or frag_length < HEADER_SIZE:
                    log.info(
                        "rpc %s: fragment of %d bytes refused (limit %d)",
                        peer_s,
                        frag_length,
                        limit,
                    )
                    await send(
                        build_pdu(
                            PType.FAULT,
                            PFC_FIRST_FRAG | PFC_LAST_FRAG,
                            call_id,
                            fault_body(NCA_S_PROTO_ERROR),
                        )
                    )
                    break
                body = await asyncio.wait_for(
                    reader.readexactly(frag_length - HEADER_SIZE), IDLE_TIMEOUT
                )
                if not await conn.receive(header + body):
                    break
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        except Exception:
            log.exception("rpc %s: connection failed", peer_s)
        finally:
            await conn.close()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
