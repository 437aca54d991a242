"""NTLMv2 initiator for the RPC client (MS-NLMP 3.1.5, 3.3.2).

Just enough for hasmb's own tools (the witness client in hasmb-probe, tests):
NEGOTIATE with signing, sealing, 128-bit keys and key exchange; AUTHENTICATE
with an NTLMv2 response and a random exported session key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import time
from dataclasses import dataclass

from hasmb.auth.ntlm import nt_owf_v2, parse_av_pairs, rc4

SIGNATURE = b"NTLMSSP\x00"
CLIENT_FLAGS = (
    0x00000001  # UNICODE
    | 0x00000004  # REQUEST_TARGET
    | 0x00000010  # SIGN
    | 0x00000020  # SEAL
    | 0x00000200  # NTLM
    | 0x00008000  # ALWAYS_SIGN
    | 0x00080000  # EXTENDED_SESSIONSECURITY
    | 0x20000000  # 128
    | 0x40000000  # KEY_EXCH
    | 0x80000000  # 56
)
_AV_TIMESTAMP = 7


class NtlmClientError(Exception):
    pass


@dataclass
class NtlmClientResult:
    authenticate: bytes
    exported_session_key: bytes
    flags: int


def negotiate_message(flags: int = CLIENT_FLAGS) -> bytes:
    return SIGNATURE + struct.pack("<II", 1, flags) + b"\x00" * 16


def authenticate_message(
    challenge: bytes, user: str, password: str, domain: str = "", workstation: str = "HASMB"
) -> NtlmClientResult:
    if len(challenge) < 48 or challenge[:8] != SIGNATURE:
        raise NtlmClientError("not an NTLM CHALLENGE")
    (msg_type,) = struct.unpack_from("<I", challenge, 8)
    if msg_type != 2:
        raise NtlmClientError(f"expected CHALLENGE, got type {msg_type}")
    (flags,) = struct.unpack_from("<I", challenge, 20)
    server_challenge = challenge[24:32]
    ti_len, _, ti_off = struct.unpack_from("<HHI", challenge, 40)
    target_info = challenge[ti_off : ti_off + ti_len]
    av = parse_av_pairs(target_info) if target_info else {}
    timestamp = av.get(_AV_TIMESTAMP) or struct.pack(
        "<Q", int(time.time() * 10_000_000) + 116444736000000000
    )
    flags &= CLIENT_FLAGS
    key = nt_owf_v2(password, user, domain)
    temp = (
        b"\x01\x01"
        + b"\x00" * 6
        + timestamp
        + os.urandom(8)
        + b"\x00" * 4
        + target_info
        + b"\x00" * 4
    )
    nt_proof = hmac.new(key, server_challenge + temp, hashlib.md5).digest()
    nt_response = nt_proof + temp
    session_base_key = hmac.new(key, nt_proof, hashlib.md5).digest()
    exported = session_base_key
    encrypted_key = b""
    if flags & 0x40000000:
        exported = os.urandom(16)
        encrypted_key = rc4(session_base_key, exported)
    payload = [
        b"\x00" * 24,  # LmChallengeResponse: Z(24) with NTLMv2 and a timestamp
        nt_response,
        domain.encode("utf-16-le"),
        user.encode("utf-16-le"),
        workstation.encode("utf-16-le"),
        encrypted_key,
    ]
    offset = 64
    fields = b""
    for p in payload:
        fields += struct.pack("<HHI", len(p), len(p), offset)
        offset += len(p)
    msg = SIGNATURE + struct.pack("<I", 3) + fields + struct.pack("<I", flags) + b"".join(payload)
    return NtlmClientResult(msg, exported, flags)
