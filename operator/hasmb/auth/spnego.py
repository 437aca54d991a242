"""SPNEGO (RFC 4178, MS-SPNG) acceptor that negotiates NTLMSSP only.

SMB carries SPNEGO in SESSION_SETUP security buffers; DCE/RPC may carry it
(auth type 9) or raw NTLMSSP (auth type 10). The acceptor takes either.
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass, field

from hasmb.auth.ntlm import (
    AUTHENTICATE,
    NEGOTIATE,
    SIGNATURE,
    NtlmAuthError,
    NtlmResult,
    NtlmServer,
)
from hasmb.auth.ntlm_session import NtlmSession

OID_SPNEGO = b"\x2b\x06\x01\x05\x05\x02"  # 1.3.6.1.5.5.2
OID_NTLMSSP = b"\x2b\x06\x01\x04\x01\x82\x37\x02\x02\x0a"  # 1.3.6.1.4.1.311.2.2.10

ACCEPT_COMPLETED = 0
ACCEPT_INCOMPLETE = 1
REJECT = 2


# --- minimal DER ----------------------------------------------------------


def _der_len(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def der(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _der_len(len(content)) + content


def _read_tlv(data: bytes, offset: int) -> tuple[int, bytes, int]:
    """Return (tag, content, next offset); raise NtlmAuthError on malformed input."""
    if offset + 2 > len(data):
        raise NtlmAuthError("SPNEGO token truncated")
    tag = data[offset]
    first = data[offset + 1]
    offset += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or offset + count > len(data):
            raise NtlmAuthError("SPNEGO length malformed")
        length = int.from_bytes(data[offset : offset + count], "big")
        offset += count
    if offset + length > len(data):
        raise NtlmAuthError("SPNEGO element overruns the token")
    return tag, data[offset : offset + length], offset + length


def _children(content: bytes) -> list[tuple[int, bytes, bytes]]:
    """Split a constructed element into (tag, content, raw encoding) triples."""
    out = []
    offset = 0
    while offset < len(content):
        start = offset
        tag, value, offset = _read_tlv(content, offset)
        out.append((tag, value, content[start:offset]))
    return out


# --- tokens ----------------------------------------------------------------


def neg_token_init_ntlm() -> bytes:
    """The server's initial token (SMB2 NEGOTIATE response security buffer)."""
    mech_types = der(0x30, der(0x06, OID_NTLMSSP))
    hints = der(0xA3, der(0x30, der(0xA0, der(0x1B, b"not_defined_in_RFC4178@please_ignore"))))
    init = der(0x30, der(0xA0, mech_types) + hints)
    return der(0x60, der(0x06, OID_SPNEGO) + der(0xA0, init))


def neg_token_resp(
    state: int | None,
    supported_mech: bytes | None = None,
    response_token: bytes | None = None,
    mech_list_mic: bytes | None = None,
) -> bytes:
    body = b""
    if state is not None:
        body += der(0xA0, der(0x0A, bytes([state])))
    if supported_mech is not None:
        body += der(0xA1, der(0x06, supported_mech))
    if response_token is not None:
        body += der(0xA2, der(0x04, response_token))
    if mech_list_mic is not None:
        body += der(0xA3, der(0x04, mech_list_mic))
    return der(0xA1, der(0x30, body))


@dataclass
class _ParsedInit:
    mech_types_raw: bytes
    mechs: list[bytes]
    mech_token: bytes | None


@dataclass
class _ParsedResp:
    response_token: bytes | None
    mech_list_mic: bytes | None


def _parse_init(token: bytes) -> _ParsedInit:
    tag, content, _ = _read_tlv(token, 0)
    if tag != 0x60:
        raise NtlmAuthError("not a GSS-API initial token")
    parts = _children(content)
    if len(parts) < 2 or parts[0][0] != 0x06 or parts[0][1] != OID_SPNEGO:
        raise NtlmAuthError("initial token is not SPNEGO")
    if parts[1][0] != 0xA0:
        raise NtlmAuthError("expected NegTokenInit")
    seq = _children(parts[1][1])
    if not seq or seq[0][0] != 0x30:
        raise NtlmAuthError("NegTokenInit malformed")
    mech_types_raw = b""
    mechs: list[bytes] = []
    mech_token: bytes | None = None
    for tag, value, _raw in _children(seq[0][1]):
        if tag == 0xA0:
            inner = _children(value)
            if not inner or inner[0][0] != 0x30:
                raise NtlmAuthError("mechTypes malformed")
            mech_types_raw = inner[0][2]
            mechs = [oid for t, oid, _ in _children(inner[0][1]) if t == 0x06]
        elif tag == 0xA2:
            inner = _children(value)
            if not inner or inner[0][0] != 0x04:
                raise NtlmAuthError("mechToken malformed")
            mech_token = inner[0][1]
    return _ParsedInit(mech_types_raw, mechs, mech_token)


def _parse_resp(token: bytes) -> _ParsedResp:
    tag, content, _ = _read_tlv(token, 0)
    if tag != 0xA1:
        raise NtlmAuthError("expected NegTokenResp")
    seq = _children(content)
    if not seq or seq[0][0] != 0x30:
        raise NtlmAuthError("NegTokenResp malformed")
    response_token: bytes | None = None
    mic: bytes | None = None
    for tag, value, _raw in _children(seq[0][1]):
        inner = _children(value)
        if tag in (0xA2, 0xA3):
            if not inner or inner[0][0] != 0x04:
                raise NtlmAuthError("NegTokenResp octet string malformed")
            if tag == 0xA2:
                response_token = inner[0][1]
            else:
                mic = inner[0][1]
    return _ParsedResp(response_token, mic)


def ntlm_mic(result: NtlmResult, message: bytes, client_to_server: bool) -> bytes:
    """An NTLM message signature with sequence number 0 on fresh keys (MS-NLMP 3.4.4.2).

    SPNEGO's mechListMIC is the first (and, for SMB, the only) signature of the
    context; per MS-SPNG 3.3.5.1 the NTLM message security state is reset
    afterwards, so DCE/RPC starts its own `NtlmSession` again.
    """
    # The client signs with the client-to-server keys: a client-side session.
    session = NtlmSession(
        result.exported_session_key, result.negotiate_flags, server=not client_to_server
    )
    return session.sign(message)


@dataclass
class AcceptStep:
    out_token: bytes
    complete: bool
    result: NtlmResult | None = None


@dataclass
class SpnegoNtlmAcceptor:
    """Drives one authentication: call step() with each client token."""

    server: NtlmServer
    _spnego: bool = field(default=True, init=False)
    _mech_types_raw: bytes = field(default=b"", init=False)

    def step(self, token: bytes) -> AcceptStep:
        if token.startswith(SIGNATURE):
            self._spnego = False
            return self._ntlm(token, None)
        if token[:1] == b"\x60":
            init = _parse_init(token)
            if OID_NTLMSSP not in init.mechs:
                raise NtlmAuthError("client offers no mechanism this server supports (NTLMSSP)")
            self._mech_types_raw = init.mech_types_raw
            if init.mechs[0] == OID_NTLMSSP and init.mech_token:
                return self._ntlm(init.mech_token, None)
            # The optimistic token was for another mechanism: select NTLMSSP, ask again.
            return AcceptStep(neg_token_resp(ACCEPT_INCOMPLETE, OID_NTLMSSP), complete=False)
        if token[:1] == b"\xa1":
            resp = _parse_resp(token)
            if not resp.response_token:
                raise NtlmAuthError("NegTokenResp carries no NTLM token")
            return self._ntlm(resp.response_token, resp.mech_list_mic)
        raise NtlmAuthError("unrecognised security token")

    def _ntlm(self, msg: bytes, client_mic: bytes | None) -> AcceptStep:
        if len(msg) < 12 or msg[:8] != SIGNATURE:
            raise NtlmAuthError("not an NTLMSSP message")
        (msg_type,) = struct.unpack_from("<I", msg, 8)
        if msg_type == NEGOTIATE:
            challenge = self.server.challenge(msg)
            if not self._spnego:
                return AcceptStep(challenge, complete=False)
            return AcceptStep(
                neg_token_resp(ACCEPT_INCOMPLETE, OID_NTLMSSP, challenge), complete=False
            )
        if msg_type != AUTHENTICATE:
            raise NtlmAuthError(f"unexpected NTLM message type {msg_type}")
        result = self.server.authenticate(msg)
        if not self._spnego:
            return AcceptStep(b"", complete=True, result=result)
        server_mic: bytes | None = None
        if self._mech_types_raw and not result.anonymous:
            if client_mic is not None:
                expected = ntlm_mic(result, self._mech_types_raw, client_to_server=True)
                if not hmac.compare_digest(expected, client_mic):
                    raise NtlmAuthError("SPNEGO mechListMIC mismatch")
            if client_mic is not None or result.has_mic:
                server_mic = ntlm_mic(result, self._mech_types_raw, client_to_server=False)
        return AcceptStep(
            neg_token_resp(ACCEPT_COMPLETED, mech_list_mic=server_mic),
            complete=True,
            result=result,
        )
