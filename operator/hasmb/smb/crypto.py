"""SMB2/3 key derivation, message signing and encryption (MS-SMB2 3.1.4).

Every primitive comes from `cryptography`; this module only arranges labels,
contexts, nonces and which bytes are authenticated.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM

from hasmb.smb.constants import (
    CIPHER_AES_128_CCM,
    CIPHER_AES_128_GCM,
    CIPHER_AES_256_CCM,
    CIPHER_AES_256_GCM,
    DIALECT_300,
    DIALECT_311,
    FLAGS_SERVER_TO_REDIR,
    SIGNING_AES_CMAC,
    SIGNING_AES_GMAC,
    SIGNING_HMAC_SHA256,
    Command,
)
from hasmb.smb.header import TRANSFORM_SIZE, MalformedPacket, TransformHeader

_SIG_OFFSET = 48
_ZERO_SIG = b"\x00" * 16


def kdf(key: bytes, label: bytes, context: bytes, length_bits: int = 128) -> bytes:
    """SP800-108 counter mode with HMAC-SHA256, one iteration (MS-SMB2 3.1.4.2)."""
    data = struct.pack(">I", 1) + label + b"\x00" + context + struct.pack(">I", length_bits)
    return hmac.new(key, data, hashlib.sha256).digest()[: length_bits // 8]


@dataclass(slots=True)
class SessionKeys:
    signing: bytes
    application: bytes
    encrypt: bytes  # server -> client
    decrypt: bytes  # client -> server


def derive_keys(session_key: bytes, dialect: int, preauth_hash: bytes, cipher: int) -> SessionKeys:
    """MS-SMB2 3.3.5.5.3: the keys a session uses once authenticated."""
    key = session_key[:16].ljust(16, b"\x00")
    if dialect < DIALECT_300:
        return SessionKeys(key, key, b"", b"")
    cipher_bits = 256 if cipher in (CIPHER_AES_256_CCM, CIPHER_AES_256_GCM) else 128
    if dialect == DIALECT_311:
        return SessionKeys(
            signing=kdf(key, b"SMBSigningKey\x00", preauth_hash),
            application=kdf(key, b"SMBAppKey\x00", preauth_hash),
            encrypt=kdf(key, b"SMBS2CCipherKey\x00", preauth_hash, cipher_bits),
            decrypt=kdf(key, b"SMBC2SCipherKey\x00", preauth_hash, cipher_bits),
        )
    return SessionKeys(
        signing=kdf(key, b"SMB2AESCMAC\x00", b"SmbSign\x00"),
        application=kdf(key, b"SMB2APP\x00", b"SmbRpc\x00"),
        encrypt=kdf(key, b"SMB2AESCCM\x00", b"ServerOut\x00"),
        decrypt=kdf(key, b"SMB2AESCCM\x00", b"ServerIn \x00"),
    )


def _gmac_nonce(message: bytes | bytearray | memoryview) -> bytes:
    message_id = bytes(message[24:32])
    flags = int.from_bytes(message[16:20], "little")
    command = int.from_bytes(message[12:14], "little")
    role = 1 if flags & FLAGS_SERVER_TO_REDIR else 0
    if command == Command.CANCEL:
        role |= 2
    return message_id + struct.pack("<I", role)


def compute_signature(algorithm: int, key: bytes, message: bytes | bytearray | memoryview) -> bytes:
    """Signature of one SMB2 message (its signature field is treated as zero)."""
    data = bytes(message[:_SIG_OFFSET]) + _ZERO_SIG + bytes(message[_SIG_OFFSET + 16 :])
    if algorithm == SIGNING_HMAC_SHA256:
        return hmac.new(key, data, hashlib.sha256).digest()[:16]
    if algorithm == SIGNING_AES_CMAC:
        c = cmac.CMAC(algorithms.AES(key))
        c.update(data)
        return c.finalize()
    if algorithm == SIGNING_AES_GMAC:
        return AESGCM(key).encrypt(_gmac_nonce(message), b"", data)
    raise ValueError(f"unknown signing algorithm {algorithm}")


def sign(algorithm: int, key: bytes, message: bytearray) -> None:
    message[_SIG_OFFSET : _SIG_OFFSET + 16] = compute_signature(algorithm, key, message)


def verify(algorithm: int, key: bytes, message: bytes | bytearray | memoryview) -> bool:
    expected = compute_signature(algorithm, key, message)
    return hmac.compare_digest(expected, bytes(message[_SIG_OFFSET : _SIG_OFFSET + 16]))


def _aead(cipher: int, key: bytes) -> AESCCM | AESGCM:
    if cipher in (CIPHER_AES_128_CCM, CIPHER_AES_256_CCM):
        return AESCCM(key, tag_length=16)
    if cipher in (CIPHER_AES_128_GCM, CIPHER_AES_256_GCM):
        return AESGCM(key)
    raise ValueError(f"unknown cipher {cipher}")


def _nonce_len(cipher: int) -> int:
    return 11 if cipher in (CIPHER_AES_128_CCM, CIPHER_AES_256_CCM) else 12


def encrypt(cipher: int, key: bytes, session_id: int, message: bytes) -> bytes:
    """Wrap a message (or compound chain) in a transform header (MS-SMB2 3.1.4.3)."""
    nlen = _nonce_len(cipher)
    nonce = os.urandom(nlen)
    th = TransformHeader(_ZERO_SIG, nonce.ljust(16, b"\x00"), len(message), 1, session_id)
    sealed = _aead(cipher, key).encrypt(nonce, message, th.aad())
    th.signature = sealed[-16:]
    return th.pack() + sealed[:-16]


def decrypt(cipher: int, key: bytes, packet: bytes | bytearray | memoryview) -> bytes:
    th = TransformHeader.parse(packet)
    body = bytes(packet[TRANSFORM_SIZE:])
    if len(body) != th.original_size:
        raise MalformedPacket("transform size mismatch")
    nonce = th.nonce[: _nonce_len(cipher)]
    return _aead(cipher, key).decrypt(nonce, body + th.signature, th.aad())


def preauth_update(current: bytes, message: bytes | bytearray | memoryview) -> bytes:
    return hashlib.sha512(current + bytes(message)).digest()
