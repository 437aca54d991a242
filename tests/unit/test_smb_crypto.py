"""SMB2/3 key derivation, signing and encryption against independent implementations."""

from __future__ import annotations

import os
import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFHMAC, CounterLocation, Mode

from hasmb.smb import crypto
from hasmb.smb.constants import (
    CIPHER_AES_128_CCM,
    CIPHER_AES_128_GCM,
    CIPHER_AES_256_CCM,
    CIPHER_AES_256_GCM,
    DIALECT_300,
    DIALECT_311,
    SIGNING_AES_CMAC,
    SIGNING_AES_GMAC,
    SIGNING_HMAC_SHA256,
)
from hasmb.smb.header import Header, MalformedPacket


def _reference_kdf(key: bytes, label: bytes, context: bytes, length: int) -> bytes:
    return KBKDFHMAC(
        algorithm=hashes.SHA256(),
        mode=Mode.CounterMode,
        length=length // 8,
        rlen=4,
        llen=4,
        location=CounterLocation.BeforeFixed,
        label=label,
        context=context,
        fixed=None,
    ).derive(key)


@pytest.mark.parametrize("bits", [128, 256])
def test_kdf_matches_sp800_108(bits: int) -> None:
    key = os.urandom(16)
    ctx = os.urandom(64)
    assert crypto.kdf(key, b"SMBSigningKey\x00", ctx, bits) == _reference_kdf(
        key, b"SMBSigningKey\x00", ctx, bits
    )


def test_derive_keys_direction_and_lengths() -> None:
    keys = crypto.derive_keys(b"k" * 16, DIALECT_311, b"h" * 64, CIPHER_AES_256_GCM)
    assert len(keys.signing) == 16 and len(keys.encrypt) == 32 and len(keys.decrypt) == 32
    assert keys.encrypt != keys.decrypt
    assert keys.decrypt == _reference_kdf(b"k" * 16, b"SMBC2SCipherKey\x00", b"h" * 64, 256)
    k30 = crypto.derive_keys(b"k" * 16, DIALECT_300, b"", CIPHER_AES_128_CCM)
    assert k30.signing == _reference_kdf(b"k" * 16, b"SMB2AESCMAC\x00", b"SmbSign\x00", 128)


def _message() -> bytearray:
    h = Header(command=8, message_id=7, flags=1, session_id=0x1234, tree_id=5)
    return bytearray(h.pack() + b"payload" * 10)


@pytest.mark.parametrize("alg", [SIGNING_HMAC_SHA256, SIGNING_AES_CMAC, SIGNING_AES_GMAC])
def test_sign_verify_and_tamper(alg: int) -> None:
    key = os.urandom(16)
    msg = _message()
    crypto.sign(alg, key, msg)
    assert crypto.verify(alg, key, msg)
    msg[70] ^= 1
    assert not crypto.verify(alg, key, msg)


def test_rfc4493_cmac_vector() -> None:
    # RFC 4493 example 2 shows AES-CMAC; compute it through a 64-byte "message" whose
    # signature field is zero, which is exactly what SMB signs.
    key = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
    msg = bytearray(64)
    expected = crypto.compute_signature(SIGNING_AES_CMAC, key, msg)
    from cryptography.hazmat.primitives import cmac
    from cryptography.hazmat.primitives.ciphers import algorithms

    c = cmac.CMAC(algorithms.AES(key))
    c.update(bytes(64))
    assert expected == c.finalize()


@pytest.mark.parametrize(
    "cipher", [CIPHER_AES_128_CCM, CIPHER_AES_128_GCM, CIPHER_AES_256_CCM, CIPHER_AES_256_GCM]
)
def test_encrypt_roundtrip_and_tamper(cipher: int) -> None:
    key = os.urandom(32 if cipher in (CIPHER_AES_256_CCM, CIPHER_AES_256_GCM) else 16)
    msg = bytes(_message())
    sealed = crypto.encrypt(cipher, key, 0x1234, msg)
    assert sealed[:4] == b"\xfdSMB"
    assert struct.unpack_from("<Q", sealed, 44)[0] == 0x1234
    assert crypto.decrypt(cipher, key, sealed) == msg
    bad = bytearray(sealed)
    bad[-1] ^= 1
    with pytest.raises(Exception):  # noqa: B017 - cryptography's InvalidTag
        crypto.decrypt(cipher, key, bytes(bad))


def test_header_roundtrip_and_rejects_garbage() -> None:
    h = Header(
        command=5, message_id=99, credits=3, flags=0x8, tree_id=7, session_id=11, process_id=0xFEFF
    )
    back = Header.parse(h.pack())
    assert (back.command, back.message_id, back.tree_id, back.session_id) == (5, 99, 7, 11)
    with pytest.raises(MalformedPacket):
        Header.parse(b"\xfeSMB" + b"\x00" * 10)
    with pytest.raises(MalformedPacket):
        Header.parse(b"\xffSMB" + b"\x00" * 60)
