"""SESSION_SETUP and LOGOFF (MS-SMB2 3.3.5.5, 3.3.5.6): NTLMv2 over SPNEGO."""

from __future__ import annotations

import logging
import struct

from hasmb.auth.ntlm import NtlmAuthError, NtlmServer
from hasmb.auth.spnego import SpnegoNtlmAcceptor
from hasmb.smb import crypto
from hasmb.smb.constants import (
    DIALECT_300,
    DIALECT_311,
    NEGOTIATE_SIGNING_REQUIRED,
    SESSION_FLAG_BINDING,
    SESSION_FLAG_ENCRYPT_DATA,
    SESSION_FLAG_IS_NULL,
    Command,
    Status,
)
from hasmb.smb.errors import SmbError
from hasmb.smb.request import Registry, Request
from hasmb.smb.state import Session

log = logging.getLogger("hasmb.smb")
_REQ = struct.Struct("<HBBIIHHQ")


def register(reg: Registry) -> None:
    reg.add(Command.SESSION_SETUP, handle_session_setup, needs_session=False, needs_tree=False)
    reg.add(Command.LOGOFF, handle_logoff, needs_tree=False)


def _new_acceptor(req: Request) -> SpnegoNtlmAcceptor:
    netname = req.server.config.netname
    return SpnegoNtlmAcceptor(NtlmServer(req.server.users, netname, netname.lower(), netname))


async def handle_session_setup(req: Request) -> bytes:
    conn = req.conn
    server = req.server
    req.structure_size(25)
    (_, flags, sec_mode, _caps, _chan, sb_off, sb_len, prev_id) = req.body(_REQ)
    token = req.buffer(sb_off, sb_len)
    sid = req.header.session_id
    if flags & SESSION_FLAG_BINDING:
        # multichannel binding is not offered (no MULTI_CHANNEL capability)
        raise SmbError(Status.REQUEST_NOT_ACCEPTED)
    if sid == 0:
        session = Session(
            session_id=server.state.new_session_id(),
            connection=conn,
            preauth_hash=conn.preauth_hash,
        )
        conn.sessions[session.session_id] = session
        server.state.sessions[session.session_id] = session
    else:
        found = conn.sessions.get(sid)
        if found is None or found.expired:
            raise SmbError(Status.USER_SESSION_DELETED)
        session = found
        if session.valid and session.keys is not None and req.header.flags & 0x8:
            if not crypto.verify(conn.signing_algorithm, session.keys.signing, req.msg):
                raise SmbError(Status.ACCESS_DENIED)
    req.session = session
    if session.authenticator is None:
        session.authenticator = _new_acceptor(req)
    reauth = session.valid
    if conn.dialect == DIALECT_311 and not reauth:
        session.preauth_hash = crypto.preauth_update(session.preauth_hash, req.msg)
    try:
        step = session.authenticator.step(token)
    except NtlmAuthError as exc:
        log.info("%s: authentication failed: %s", conn.peer, exc)
        session.authenticator = None
        # a failed re-authentication ends the session too (MS-SMB2 3.3.5.5.3)
        await server.destroy_session(session)
        raise SmbError(Status.LOGON_FAILURE) from exc
    if not step.complete:
        if conn.dialect == DIALECT_311 and not reauth:

            def _hash(resp: bytes) -> None:
                session.preauth_hash = crypto.preauth_update(session.preauth_hash, resp)

            req.on_response = _hash
        req.status = Status.MORE_PROCESSING_REQUIRED
        return _response(0, step.out_token)
    result = step.result
    assert result is not None
    session.authenticator = None
    session_flags = 0
    if reauth:
        # re-authentication (3.3.5.5.2) keeps the session's keys; only the identity is refreshed
        session.user = result.user
        session.domain = result.domain
        session.anonymous = result.anonymous
        req.sign_response = True
        if session.encrypt_data:
            session_flags |= SESSION_FLAG_ENCRYPT_DATA
        return _response(session_flags, step.out_token)
    if result.anonymous:
        session.anonymous = True
        session_flags |= SESSION_FLAG_IS_NULL
    else:
        session.user = result.user
        session.domain = result.domain
        session.session_key = result.exported_session_key
        session.keys = crypto.derive_keys(
            result.exported_session_key, conn.dialect, session.preauth_hash, conn.cipher
        )
        session.signing_required = bool(
            sec_mode & NEGOTIATE_SIGNING_REQUIRED
            or conn.server_security_mode & NEGOTIATE_SIGNING_REQUIRED
        )
        if conn.dialect >= DIALECT_300:
            req.sign_response = True
        if conn.cipher and _global_encrypt(req):
            session.encrypt_data = True
            session_flags |= SESSION_FLAG_ENCRYPT_DATA
    session.valid = True
    if prev_id and prev_id != session.session_id:
        await _expire_previous(req, prev_id, session)
    return _response(session_flags, step.out_token)


def _global_encrypt(req: Request) -> bool:
    # Encryption is per share (TREE_CONNECT sets SMB2_SHAREFLAG_ENCRYPT_DATA).
    return False


async def _expire_previous(req: Request, prev_id: int, session: Session) -> None:
    """PreviousSessionId: the client lost its old connection; tear that session down."""
    old = req.server.state.sessions.get(prev_id)
    if old is None or old.user.lower() != session.user.lower() or old is session:
        return
    # as a lost connection: its durable opens stay reclaimable (smb2.durable-v2-open.reopen1a)
    await req.server.destroy_session(old, disconnect=True)


def _response(flags: int, token: bytes) -> bytes:
    return struct.pack("<HHHH", 9, flags, 64 + 8 if token else 0, len(token)) + token


async def handle_logoff(req: Request) -> bytes:
    req.structure_size(4)
    session = req.require_session()
    # sign the reply with the keys of the session before it goes away
    req.sign_response = session.signing_required or bool(req.header.flags & 0x8)
    # durable opens outlive a logoff as they outlive a disconnect (smb2.durable-open.reopen4)
    await req.server.destroy_session(session, disconnect=True)
    return struct.pack("<HH", 4, 0)
