"""NTLMv2 server side (MS-NLMP): CHALLENGE generation and AUTHENTICATE verification.

Only NTLMv2 responses are accepted (MS-NLMP 3.3.2); NTLMv1/LM are refused
because they are trivially crackable. The result carries the exported session
key that SMB (key derivation) and DCE/RPC (message security) build on.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntFlag

from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4
from cryptography.hazmat.primitives.ciphers import Cipher

from hasmb.auth.md4 import md4

SIGNATURE = b"NTLMSSP\x00"
NEGOTIATE = 1
CHALLENGE = 2
AUTHENTICATE = 3


class NegotiateFlags(IntFlag):
    UNICODE = 0x00000001
    OEM = 0x00000002
    REQUEST_TARGET = 0x00000004
    SIGN = 0x00000010
    SEAL = 0x00000020
    DATAGRAM = 0x00000040
    LM_KEY = 0x00000080
    NTLM = 0x00000200
    ANONYMOUS = 0x00000800
    OEM_DOMAIN_SUPPLIED = 0x00001000
    OEM_WORKSTATION_SUPPLIED = 0x00002000
    ALWAYS_SIGN = 0x00008000
    TARGET_TYPE_DOMAIN = 0x00010000
    TARGET_TYPE_SERVER = 0x00020000
    EXTENDED_SESSIONSECURITY = 0x00080000
    IDENTIFY = 0x00100000
    REQUEST_NON_NT_SESSION_KEY = 0x00400000
    TARGET_INFO = 0x00800000
    VERSION = 0x02000000
    KEY_128 = 0x20000000
    KEY_EXCH = 0x40000000
    KEY_56 = 0x80000000


class AvId:
    EOL = 0
    NB_COMPUTER_NAME = 1
    NB_DOMAIN_NAME = 2
    DNS_COMPUTER_NAME = 3
    DNS_DOMAIN_NAME = 4
    FLAGS = 6
    TIMESTAMP = 7


# Flags the server is willing to grant when the client asks for them.
_GRANTABLE = (
    NegotiateFlags.SIGN
    | NegotiateFlags.SEAL
    | NegotiateFlags.ALWAYS_SIGN
    | NegotiateFlags.EXTENDED_SESSIONSECURITY
    | NegotiateFlags.KEY_128
    | NegotiateFlags.KEY_EXCH
    | NegotiateFlags.KEY_56
    | NegotiateFlags.IDENTIFY
)
# Windows-like version field: 10.0 build 20348, NTLMSSP revision 15.
_VERSION = struct.pack("<BBHBBBB", 10, 0, 20348, 0, 0, 0, 15)
_MIC_FLAG = 0x00000002  # MsvAvFlags: the AUTHENTICATE message carries a MIC


class NtlmAuthError(Exception):
    """Malformed message or wrong credentials; the caller maps it to LOGON_FAILURE."""


@dataclass(frozen=True)
class NtlmResult:
    user: str
    domain: str
    workstation: str
    session_base_key: bytes
    exported_session_key: bytes
    negotiate_flags: int
    anonymous: bool
    # True when the client protected the exchange with a MIC (MS-NLMP 3.1.5.1.2);
    # SPNEGO then exchanges mechListMICs.
    has_mic: bool = False


def nt_owf_v2(password: str, user: str, domain: str) -> bytes:
    """NTOWFv2 (MS-NLMP 3.3.2)."""
    nt_hash = md4(password.encode("utf-16-le"))
    return hmac.new(nt_hash, (user.upper() + domain).encode("utf-16-le"), hashlib.md5).digest()


def rc4(key: bytes, data: bytes) -> bytes:
    encryptor = Cipher(ARC4(key), mode=None).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def _filetime_now() -> int:
    return int(time.time() * 10_000_000) + 116444736000000000


def _field(msg: bytes, offset: int) -> bytes:
    """Read a (len u16, maxlen u16, offset u32) payload field, bounds-checked."""
    if offset + 8 > len(msg):
        raise NtlmAuthError("NTLM message truncated")
    length, _maxlen, start = struct.unpack_from("<HHI", msg, offset)
    if length == 0:
        return b""
    if start + length > len(msg):
        raise NtlmAuthError("NTLM field points outside the message")
    return msg[start : start + length]


def _decode(raw: bytes, unicode: bool) -> str:
    try:
        return raw.decode("utf-16-le" if unicode else "latin-1")
    except UnicodeDecodeError as exc:
        raise NtlmAuthError("NTLM string is not valid UTF-16") from exc


def _av_pairs(pairs: list[tuple[int, bytes]]) -> bytes:
    out = b"".join(struct.pack("<HH", av_id, len(value)) + value for av_id, value in pairs)
    return out + struct.pack("<HH", AvId.EOL, 0)


def parse_av_pairs(blob: bytes) -> dict[int, bytes]:
    pairs: dict[int, bytes] = {}
    offset = 0
    while offset + 4 <= len(blob):
        av_id, length = struct.unpack_from("<HH", blob, offset)
        offset += 4
        if av_id == AvId.EOL:
            break
        if offset + length > len(blob):
            raise NtlmAuthError("AV pair truncated")
        pairs.setdefault(av_id, blob[offset : offset + length])
        offset += length
    return pairs


class NtlmServer:
    """One NTLM exchange: construct per authentication attempt.

    `users` maps user name to password; names match case-insensitively as
    Windows does.
    """

    def __init__(
        self,
        users: Mapping[str, str],
        netbios_name: str,
        dns_name: str,
        domain: str = "WORKGROUP",
    ) -> None:
        self._users = {name.lower(): password for name, password in users.items()}
        self._netbios_name = netbios_name.upper()
        self._dns_name = dns_name.lower()
        self._domain = domain.upper()
        self._server_challenge = os.urandom(8)
        self.negotiate_message = b""
        self.challenge_message = b""
        self._flags = 0

    def challenge(self, negotiate_msg: bytes) -> bytes:
        if len(negotiate_msg) < 16 or negotiate_msg[:8] != SIGNATURE:
            raise NtlmAuthError("not an NTLMSSP message")
        (msg_type, client_flags) = struct.unpack_from("<II", negotiate_msg, 8)
        if msg_type != NEGOTIATE:
            raise NtlmAuthError(f"expected NTLM NEGOTIATE, got message type {msg_type}")
        if not client_flags & NegotiateFlags.UNICODE:
            raise NtlmAuthError("client does not offer Unicode")
        flags = (
            NegotiateFlags.UNICODE
            | NegotiateFlags.REQUEST_TARGET
            | NegotiateFlags.NTLM
            | NegotiateFlags.TARGET_TYPE_SERVER
            | NegotiateFlags.TARGET_INFO
            | NegotiateFlags.VERSION
            | (client_flags & _GRANTABLE)
        )
        self._flags = int(flags)
        target_name = self._netbios_name.encode("utf-16-le")
        target_info = _av_pairs(
            [
                (AvId.NB_DOMAIN_NAME, self._netbios_name.encode("utf-16-le")),
                (AvId.NB_COMPUTER_NAME, self._netbios_name.encode("utf-16-le")),
                (AvId.DNS_DOMAIN_NAME, self._dns_name.encode("utf-16-le")),
                (AvId.DNS_COMPUTER_NAME, self._dns_name.encode("utf-16-le")),
                (AvId.TIMESTAMP, struct.pack("<Q", _filetime_now())),
            ]
        )
        header_len = 56
        name_off = header_len
        info_off = name_off + len(target_name)
        msg = (
            SIGNATURE
            + struct.pack("<I", CHALLENGE)
            + struct.pack("<HHI", len(target_name), len(target_name), name_off)
            + struct.pack("<I", self._flags)
            + self._server_challenge
            + b"\x00" * 8
            + struct.pack("<HHI", len(target_info), len(target_info), info_off)
            + _VERSION
            + target_name
            + target_info
        )
        self.negotiate_message = negotiate_msg
        self.challenge_message = msg
        return msg

    def authenticate(self, auth_msg: bytes) -> NtlmResult:
        if not self.challenge_message:
            raise NtlmAuthError("AUTHENTICATE before CHALLENGE")
        if len(auth_msg) < 64 or auth_msg[:8] != SIGNATURE:
            raise NtlmAuthError("not an NTLMSSP message")
        (msg_type,) = struct.unpack_from("<I", auth_msg, 8)
        if msg_type != AUTHENTICATE:
            raise NtlmAuthError(f"expected NTLM AUTHENTICATE, got message type {msg_type}")
        lm_response = _field(auth_msg, 12)
        nt_response = _field(auth_msg, 20)
        domain = _decode(_field(auth_msg, 28), True)
        user = _decode(_field(auth_msg, 36), True)
        workstation = _decode(_field(auth_msg, 44), True)
        encrypted_key = _field(auth_msg, 52)
        (flags,) = struct.unpack_from("<I", auth_msg, 60)

        if not user and not nt_response and lm_response in (b"", b"\x00"):
            # Anonymous: no key material; the caller decides whether it is allowed.
            return NtlmResult("", domain, workstation, b"", b"", flags, anonymous=True)
        if len(nt_response) <= 24:
            raise NtlmAuthError("NTLMv1/LM responses are refused; NTLMv2 required")
        password = self._users.get(user.lower())
        if password is None:
            raise NtlmAuthError(f"unknown user {user!r}")

        nt_proof, blob = nt_response[:16], nt_response[16:]
        session_base_key = b""
        # The client keyed NTOWFv2 with the domain it sent; some clients leave it
        # empty or use ours, so those are tried too (as Windows does).
        for candidate_domain in dict.fromkeys((domain, "", self._netbios_name, self._domain)):
            key = nt_owf_v2(password, user, candidate_domain)
            expected = hmac.new(key, self._server_challenge + blob, hashlib.md5).digest()
            if hmac.compare_digest(expected, nt_proof):
                session_base_key = hmac.new(key, nt_proof, hashlib.md5).digest()
                break
        else:
            raise NtlmAuthError(f"wrong password for user {user!r}")

        # MS-NLMP 3.4.5.1: with NTLMv2 the key exchange key is the session base key.
        exported = session_base_key
        if flags & NegotiateFlags.KEY_EXCH and len(encrypted_key) == 16:
            exported = rc4(session_base_key, encrypted_key)

        has_mic = False
        av = parse_av_pairs(blob[28:]) if len(blob) > 28 else {}
        av_flags = (
            struct.unpack("<I", av[AvId.FLAGS])[0] if len(av.get(AvId.FLAGS, b"")) == 4 else 0
        )
        if av_flags & _MIC_FLAG:
            if len(auth_msg) < 88:
                raise NtlmAuthError("MIC announced but message too short")
            mic = auth_msg[72:88]
            zeroed = auth_msg[:72] + b"\x00" * 16 + auth_msg[88:]
            expected_mic = hmac.new(
                exported,
                self.negotiate_message + self.challenge_message + zeroed,
                hashlib.md5,
            ).digest()
            if not hmac.compare_digest(mic, expected_mic):
                raise NtlmAuthError("NTLM MIC mismatch")
            has_mic = True
        return NtlmResult(
            user=user,
            domain=domain,
            workstation=workstation,
            session_base_key=session_base_key,
            exported_session_key=exported,
            negotiate_flags=flags,
            anonymous=False,
            has_mic=has_mic,
        )
