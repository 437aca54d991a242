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


def _signature_of_zeroed(
    algorithm: int, key: bytes, message: bytes | bytearray | memoryview
) -> bytes:
    """Signature of a message whose signature field already holds zeros."""
    if algorithm == SIGNING_HMAC_SHA256:
        return hmac.new(key, message, hashlib.sha256).digest()[:16]
    if algorithm == SIGNING_AES_CMAC:
        c = cmac.CMAC(algorithms.AES(key))
        c.update(message)  # type: ignore[arg-type]  # any buffer works (stub says bytes)
        return c.finalize()
    if algorithm == SIGNING_AES_GMAC:
        return AESGCM(key).encrypt(_gmac_nonce(message), b"", message)
    raise ValueError(f"unknown signing algorithm {algorithm}")


def compute_signature(algorithm: int, key: bytes, message: bytes | bytearray | memoryview) -> bytes:
    """Signature of one SMB2 message (its signature field is treated as zero)."""
    mv = memoryview(message)
    if mv[_SIG_OFFSET : _SIG_OFFSET + 16] == _ZERO_SIG:
        return _signature_of_zeroed(algorithm, key, mv)
    # one copy of a (possibly 8 MiB) message rather than three
    data = b"".join((mv[:_SIG_OFFSET], _ZERO_SIG, mv[_SIG_OFFSET + 16 :]))
    return _signature_of_zeroed(algorithm, key, data)


def sign(algorithm: int, key: bytes, message: bytearray | memoryview) -> None:
    message[_SIG_OFFSET : _SIG_OFFSET + 16] = _ZERO_SIG
    message[_SIG_OFFSET : _SIG_OFFSET + 16] = _signature_of_zeroed(algorithm, key, message)


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


def seal_in_place(
    cipher: int, key: bytes, session_id: int, buf: bytearray, start: int, size: int
) -> None:
    """Encrypt the `size`-byte message at buf[start + TRANSFORM_SIZE:] where it lies and
    write its transform header at buf[start:] (MS-SMB2 3.1.4.3). The 16 bytes after the
    message are scratch space (the AEAD tag lands there before moving into the header)."""
    nlen = _nonce_len(cipher)
    nonce = os.urandom(nlen)
    th = TransformHeader(_ZERO_SIG, nonce.ljust(16, b"\x00"), size, 1, session_id)
    body = start + TRANSFORM_SIZE
    with memoryview(buf) as mv:
        _aead(cipher, key).encrypt_into(
            nonce, mv[body : body + size], th.aad(), mv[body : body + size + 16]
        )
        th.signature = bytes(mv[body + size : body + size + 16])
    buf[start:body] = th.pack()


def encrypt(cipher: int, key: bytes, session_id: int, message: bytes | bytearray) -> bytearray:
    """Wrap a message (or compound chain) in a transform header (MS-SMB2 3.1.4.3)."""
    size = len(message)
    buf = bytearray(TRANSFORM_SIZE + size + 16)
    buf[TRANSFORM_SIZE : TRANSFORM_SIZE + size] = message
    seal_in_place(cipher, key, session_id, buf, 0, size)
    del buf[TRANSFORM_SIZE + size :]
    return buf


def decrypt(cipher: int, key: bytes, packet: bytes | bytearray | memoryview) -> bytes:
    th = TransformHeader.parse(packet)
    size = len(packet) - TRANSFORM_SIZE
    if size != th.original_size:
        raise MalformedPacket("transform size mismatch")
    # the AEAD wants ciphertext || tag: one copy of the body instead of three
    sealed = bytearray(size + 16)
    with memoryview(packet) as mv:
        sealed[:size] = mv[TRANSFORM_SIZE:]
    sealed[size:] = th.signature
    nonce = th.nonce[: _nonce_len(cipher)]
    return _aead(cipher, key).decrypt(nonce, sealed, th.aad())


def preauth_update(current: bytes, message: bytes | bytearray | memoryview) -> bytes:
    return hashlib.sha512(current + bytes(message)).digest()
