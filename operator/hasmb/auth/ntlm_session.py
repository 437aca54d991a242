"""NTLM session security: message signing and sealing (MS-NLMP 3.4).

Only the extended-session-security variant (NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY,
3.4.4.2 / 3.4.3) is implemented: every client this project talks to negotiates it and
the server refuses the legacy LM-key variant during authentication.

`NtlmSession(exported_session_key, negotiate_flags, server=True)` derives the four
directional keys (3.4.5.2, 3.4.5.3) and keeps one RC4 handle and sequence number per
direction.  DCE/RPC calls `sign()` / `verify()` for packet integrity and `seal()` /
`unseal()` for privacy; both take the stub (the part that is encrypted) and the whole
PDU (the part that is signed) separately, as MS-RPCE 2.2.2.11 defines.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass, field

from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext

NTLMSSP_NEGOTIATE_56 = 0x80000000
NTLMSSP_NEGOTIATE_KEY_EXCH = 0x40000000
NTLMSSP_NEGOTIATE_128 = 0x20000000
NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY = 0x00080000
NTLMSSP_NEGOTIATE_SEAL = 0x00000020
NTLMSSP_NEGOTIATE_SIGN = 0x00000010

SIGNATURE_SIZE = 16

_C2S_SIGN = b"session key to client-to-server signing key magic constant\x00"
_S2C_SIGN = b"session key to server-to-client signing key magic constant\x00"
_C2S_SEAL = b"session key to client-to-server sealing key magic constant\x00"
_S2C_SEAL = b"session key to server-to-client sealing key magic constant\x00"


class NtlmSignatureError(Exception):
    """A received message's NTLMSSP_MESSAGE_SIGNATURE does not verify."""


def _rc4(key: bytes) -> CipherContext:
    return Cipher(ARC4(key), mode=None).encryptor()


def sign_key(exported_session_key: bytes, magic: bytes) -> bytes:
    """SIGNKEY (MS-NLMP 3.4.5.2)."""
    return hashlib.md5(exported_session_key + magic).digest()


def seal_key(exported_session_key: bytes, flags: int, magic: bytes) -> bytes:
    """SEALKEY with extended session security (MS-NLMP 3.4.5.3)."""
    if flags & NTLMSSP_NEGOTIATE_128:
        base = exported_session_key
    elif flags & NTLMSSP_NEGOTIATE_56:
        base = exported_session_key[:7]
    else:
        base = exported_session_key[:5]
    return hashlib.md5(base + magic).digest()


@dataclass
class _Direction:
    sign_key: bytes
    seal: CipherContext
    seq: int = 0


@dataclass
class NtlmSession:
    """Per-security-context signing/sealing state for one side of a connection."""

    exported_session_key: bytes
    negotiate_flags: int
    server: bool = True
    _send: _Direction = field(init=False, repr=False)
    _recv: _Direction = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """(Re)initialise keys, RC4 handles and sequence numbers."""
        key, flags = self.exported_session_key, self.negotiate_flags
        c2s = _Direction(sign_key(key, _C2S_SIGN), _rc4(seal_key(key, flags, _C2S_SEAL)))
        s2c = _Direction(sign_key(key, _S2C_SIGN), _rc4(seal_key(key, flags, _S2C_SEAL)))
        self._send, self._recv = (s2c, c2s) if self.server else (c2s, s2c)

    def advance_sequence(self, n: int = 1) -> None:
        """Skip `n` sequence numbers in both directions without touching RC4.

        SPNEGO's mechListMIC exchange consumes sequence number 0 in each
        direction; Samba (and Windows) then reset the RC4 handles but carry on
        from sequence number 1.
        """
        self._send.seq += n
        self._recv.seq += n

    def _mac(self, d: _Direction, message: bytes) -> bytes:
        # MS-NLMP 3.4.4.2: HMAC_MD5 over SeqNum || Message, first 8 bytes, RC4'd
        # with the direction's sealing handle when keys were exchanged.
        seq = struct.pack("<I", d.seq)
        checksum = hmac.new(d.sign_key, seq + message, hashlib.md5).digest()[:8]
        if self.negotiate_flags & NTLMSSP_NEGOTIATE_KEY_EXCH:
            checksum = d.seal.update(checksum)
        d.seq = (d.seq + 1) & 0xFFFFFFFF
        return struct.pack("<I", 1) + checksum + seq

    def sign(self, message: bytes) -> bytes:
        """Signature for an outgoing message (integrity)."""
        return self._mac(self._send, message)

    def verify(self, message: bytes, signature: bytes) -> None:
        """Check an incoming message's signature; raises NtlmSignatureError."""
        expected = self._mac(self._recv, message)
        if not hmac.compare_digest(expected, signature[:SIGNATURE_SIZE]):
            raise NtlmSignatureError("NTLM message signature mismatch")

    def seal(self, data: bytes, whole: bytes) -> tuple[bytes, bytes]:
        """Encrypt `data`, sign `whole` (which contains `data` in plaintext).

        Returns (ciphertext, signature).  The order -- MAC computed over the
        plaintext, then data encrypted, then the checksum encrypted -- is the RC4
        stream order both peers must share (MS-NLMP 3.4.3).
        """
        d = self._send
        seq = struct.pack("<I", d.seq)
        checksum = hmac.new(d.sign_key, seq + whole, hashlib.md5).digest()[:8]
        sealed = d.seal.update(data)
        if self.negotiate_flags & NTLMSSP_NEGOTIATE_KEY_EXCH:
            checksum = d.seal.update(checksum)
        d.seq = (d.seq + 1) & 0xFFFFFFFF
        return sealed, struct.pack("<I", 1) + checksum + seq

    def unseal_data(self, data: bytes) -> bytes:
        """First half of unsealing: decrypt the stub.  Call `verify()` next with
        the PDU rebuilt around the plaintext."""
        return self._recv.seal.update(data)
