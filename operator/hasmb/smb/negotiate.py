"""NEGOTIATE (MS-SMB2 3.3.5.3/3.3.5.4), including 3.1.1 negotiate contexts and the
SMB1 multi-protocol upgrade (3.3.5.3.1)."""

from __future__ import annotations

import os
import struct
from typing import TYPE_CHECKING

from hasmb.auth.spnego import neg_token_init_ntlm
from hasmb.smb import crypto
from hasmb.smb.constants import (
    CAP_ENCRYPTION,
    CAP_LARGE_MTU,
    CAP_LEASING,
    CAP_PERSISTENT_HANDLES,
    CIPHER_AES_128_CCM,
    CTX_ENCRYPTION,
    CTX_PREAUTH_INTEGRITY,
    CTX_SIGNING,
    DIALECT_202,
    DIALECT_210,
    DIALECT_300,
    DIALECT_311,
    DIALECT_WILDCARD,
    FLAGS_SERVER_TO_REDIR,
    HASH_SHA512,
    NEGOTIATE_SIGNING_ENABLED,
    SERVER_CIPHER_PREFERENCE,
    SIGNING_AES_CMAC,
    SIGNING_AES_GMAC,
    SIGNING_HMAC_SHA256,
    SUPPORTED_DIALECTS,
    Command,
    Status,
)
from hasmb.smb.errors import SmbError
from hasmb.smb.fileinfo import filetime_now
from hasmb.smb.header import Header, MalformedPacket
from hasmb.smb.request import Registry, Request

if TYPE_CHECKING:
    from hasmb.smb.server import ConnectionHandler, SmbServer

_REQ = struct.Struct("<HHHHI16sIHH")
_RESP = struct.Struct("<HHHH16sIIIIQQHHI")
SIGNING_PREFERENCE = (SIGNING_AES_GMAC, SIGNING_AES_CMAC, SIGNING_HMAC_SHA256)
SMALL_MTU = 65536
LARGE_MTU = 8 * 1024 * 1024


def register(reg: Registry) -> None:
    reg.add(Command.NEGOTIATE, handle_negotiate, needs_session=False, needs_tree=False)


def _pad8(b: bytes) -> bytes:
    return b + b"\x00" * ((-len(b)) % 8)


def parse_contexts(msg: bytes, offset: int, count: int) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    for _ in range(count):
        offset += (-offset) % 8
        if offset + 8 > len(msg):
            raise SmbError(Status.INVALID_PARAMETER, "negotiate context outside message")
        ctype, dlen = struct.unpack_from("<HH", msg, offset)
        data = msg[offset + 8 : offset + 8 + dlen]
        if len(data) != dlen:
            raise SmbError(Status.INVALID_PARAMETER, "truncated negotiate context")
        out.append((ctype, data))
        offset += 8 + dlen
    return out


def server_capabilities(server: SmbServer, dialect: int, client_caps: int) -> int:
    caps = 0
    if dialect >= DIALECT_210:
        caps |= CAP_LEASING | CAP_LARGE_MTU
    if dialect in (0x0300, 0x0302) and client_caps & CAP_ENCRYPTION:
        caps |= CAP_ENCRYPTION
    if dialect >= 0x0300 and client_caps & CAP_PERSISTENT_HANDLES:
        caps |= CAP_PERSISTENT_HANDLES  # echoed only to clients that offer it, as Windows does
    return caps


async def handle_negotiate(req: Request) -> bytes:
    conn = req.conn
    if conn.negotiated:
        raise MalformedPacket("second NEGOTIATE on a connection")
    req.structure_size(36)
    (_, count, sec_mode, _r, caps, guid, ctx_off, ctx_count, _r2) = req.body(_REQ)
    if count == 0:
        raise SmbError(Status.INVALID_PARAMETER, "no dialects")
    raw = req.buffer(64 + 36, count * 2)
    if len(raw) != count * 2:
        raise SmbError(Status.INVALID_PARAMETER)
    dialects = list(struct.unpack(f"<{count}H", raw))
    chosen = next((d for d in SUPPORTED_DIALECTS if d in dialects), None)
    if chosen is None:
        raise SmbError(Status.NOT_SUPPORTED, "no common dialect")
    conn.client_dialects = dialects
    conn.client_security_mode = sec_mode
    conn.client_capabilities = caps
    conn.client_guid = guid
    conn.dialect = chosen
    conn.server_security_mode = NEGOTIATE_SIGNING_ENABLED
    conn.server_capabilities = server_capabilities(req.server, chosen, caps)
    conn.signing_algorithm = SIGNING_HMAC_SHA256 if chosen < DIALECT_300 else SIGNING_AES_CMAC
    if chosen >= DIALECT_300:
        conn.cipher = CIPHER_AES_128_CCM if caps & CAP_ENCRYPTION else 0
    mtu = SMALL_MTU if chosen == DIALECT_202 else LARGE_MTU
    conn.max_transact = conn.max_read = conn.max_write = mtu
    conn.supports_multi_credit = chosen >= DIALECT_210

    out_contexts: list[tuple[int, bytes]] = []
    if chosen == DIALECT_311:
        contexts = parse_contexts(req.msg, ctx_off, ctx_count)
        seen: set[int] = set()
        preauth_ok = False
        conn.cipher = 0
        for ctype, data in contexts:
            if ctype in seen and ctype in (CTX_PREAUTH_INTEGRITY, CTX_ENCRYPTION, CTX_SIGNING):
                raise SmbError(Status.INVALID_PARAMETER, "duplicate negotiate context")
            seen.add(ctype)
            if ctype == CTX_PREAUTH_INTEGRITY:
                if len(data) < 4:
                    raise SmbError(Status.INVALID_PARAMETER)
                n, _salt_len = struct.unpack_from("<HH", data)
                algs = struct.unpack_from(f"<{n}H", data, 4) if len(data) >= 4 + 2 * n else ()
                if HASH_SHA512 not in algs:
                    raise SmbError(Status.SMB_NO_PREAUTH_INTEGRITY_HASH_OVERLAP)
                preauth_ok = True
                out_contexts.append(
                    (
                        CTX_PREAUTH_INTEGRITY,
                        struct.pack("<HHH", 1, 32, HASH_SHA512) + os.urandom(32),
                    )
                )
            elif ctype == CTX_ENCRYPTION:
                if len(data) < 2:
                    raise SmbError(Status.INVALID_PARAMETER)
                (n,) = struct.unpack_from("<H", data)
                if n == 0 or len(data) < 2 + 2 * n:
                    raise SmbError(Status.INVALID_PARAMETER)
                offered = struct.unpack_from(f"<{n}H", data, 2)
                # the client lists ciphers in its order of preference (3.3.5.4)
                cipher = next((c for c in offered if c in SERVER_CIPHER_PREFERENCE), 0)
                conn.cipher = cipher
                out_contexts.append((CTX_ENCRYPTION, struct.pack("<HH", 1, cipher)))
            elif ctype == CTX_SIGNING:
                if len(data) < 2:
                    raise SmbError(Status.INVALID_PARAMETER)
                (n,) = struct.unpack_from("<H", data)
                if n == 0 or len(data) < 2 + 2 * n:
                    raise SmbError(Status.INVALID_PARAMETER)
                offered = struct.unpack_from(f"<{n}H", data, 2)
                alg = next((a for a in SIGNING_PREFERENCE if a in offered), SIGNING_AES_CMAC)
                conn.signing_algorithm = alg
                out_contexts.append((CTX_SIGNING, struct.pack("<HH", 1, alg)))
        if not preauth_ok:
            raise SmbError(Status.INVALID_PARAMETER, "3.1.1 without pre-auth integrity")
        conn.preauth_hash = crypto.preauth_update(b"\x00" * 64, req.msg)

        def _hash_response(resp: bytes) -> None:
            conn.preauth_hash = crypto.preauth_update(conn.preauth_hash, resp)

        req.on_response = _hash_response
    conn.negotiated = True
    return negotiate_response(req.server, conn.dialect, conn, out_contexts)


def negotiate_response(
    server: SmbServer,
    dialect: int,
    conn: ConnectionHandler | object,
    contexts: list[tuple[int, bytes]],
) -> bytes:
    from hasmb.smb.state import Connection

    assert isinstance(conn, Connection)
    token = neg_token_init_ntlm()
    sec_off = 64 + 64
    buf = _pad8(token) if contexts else token
    ctx_off = sec_off + len(buf) if contexts else 0
    ctx_blob = b""
    for i, (ctype, data) in enumerate(contexts):
        item = struct.pack("<HHI", ctype, len(data), 0) + data
        ctx_blob += item if i == len(contexts) - 1 else _pad8(item)
    fixed = _RESP.pack(
        65,
        conn.server_security_mode,
        dialect,
        len(contexts),
        server.server_guid,
        conn.server_capabilities,
        conn.max_transact,
        conn.max_read,
        conn.max_write,
        filetime_now(),
        0,
        sec_off,
        len(token),
        ctx_off,
    )
    return fixed + buf + ctx_blob


def smb1_upgrade(server: SmbServer, ch: ConnectionHandler, packet: bytes) -> None:
    """Answer an SMB1 NEGOTIATE that offers SMB2 with an SMB2 NEGOTIATE response."""
    conn = ch.conn
    if conn.negotiated or len(packet) < 35 or packet[4] != 0x72:
        raise MalformedPacket("unexpected SMB1 message")
    names = [n.decode("ascii", "replace") for n in packet[35:].split(b"\x00") if n]
    names = [n.lstrip("\x02") for n in names]
    if "SMB 2.???" in names:
        dialect = DIALECT_WILDCARD
    elif "SMB 2.002" in names:
        dialect = DIALECT_202
    else:
        raise MalformedPacket("SMB1 only client")
    conn.server_security_mode = NEGOTIATE_SIGNING_ENABLED
    conn.server_capabilities = 0
    conn.max_transact = conn.max_read = conn.max_write = SMALL_MTU
    if dialect == DIALECT_202:
        conn.dialect = DIALECT_202
        conn.negotiated = True
        conn.signing_algorithm = SIGNING_HMAC_SHA256
    body = negotiate_response(server, dialect, conn, [])
    h = Header(command=Command.NEGOTIATE, message_id=0, credits=1, flags=FLAGS_SERVER_TO_REDIR)
    ch.send(h.pack() + body)
