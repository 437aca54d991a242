"""NTLM session security (MS-NLMP 3.4) cross-checked against impacket's independent code."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4
from cryptography.hazmat.primitives.ciphers import Cipher
from impacket import ntlm

from hasmb.auth.ntlm_session import NtlmSession, NtlmSignatureError

FLAGS = (
    ntlm.NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY
    | ntlm.NTLMSSP_NEGOTIATE_KEY_EXCH
    | ntlm.NTLMSSP_NEGOTIATE_128
    | ntlm.NTLMSSP_NEGOTIATE_56
    | ntlm.NTLMSSP_NEGOTIATE_SIGN
    | ntlm.NTLMSSP_NEGOTIATE_SEAL
    | ntlm.NTLMSSP_NEGOTIATE_UNICODE
)


def _impacket_client(key: bytes, flags: int) -> tuple[bytes, bytes, object]:
    sign_key = ntlm.SIGNKEY(flags, key, "Client")
    seal_key = ntlm.SEALKEY(flags, key, "Client")
    handle = Cipher(ARC4(seal_key), mode=None).encryptor().update
    return sign_key, seal_key, handle


@pytest.mark.parametrize(
    "flags", [FLAGS, FLAGS & ~ntlm.NTLMSSP_NEGOTIATE_KEY_EXCH, FLAGS & ~ntlm.NTLMSSP_NEGOTIATE_128]
)
def test_server_verifies_impacket_client_signatures(flags: int) -> None:
    key = os.urandom(16)
    server = NtlmSession(key, flags, server=True)
    sign_key, _seal_key, handle = _impacket_client(key, flags)
    for seq in range(3):
        msg = os.urandom(50 + seq)
        sig = ntlm.SIGN(flags, sign_key, msg, seq, handle).getData()
        server.verify(msg, sig)


def test_server_unseals_impacket_client_sealed_data() -> None:
    key = os.urandom(16)
    server = NtlmSession(key, FLAGS, server=True)
    sign_key, seal_key, handle = _impacket_client(key, FLAGS)
    for seq in range(3):
        stub = os.urandom(64)
        whole = b"HDR" + stub + b"TRAILER"
        sealed, sig = ntlm.SEAL(FLAGS, sign_key, seal_key, whole, stub, seq, handle)
        plain = server.unseal_data(sealed)
        assert plain == stub
        server.verify(b"HDR" + plain + b"TRAILER", sig.getData())


def test_round_trip_and_tamper_detection() -> None:
    key = os.urandom(16)
    server = NtlmSession(key, FLAGS, server=True)
    client = NtlmSession(key, FLAGS, server=False)
    sealed, sig = server.seal(b"secret stub", b"head" + b"secret stub")
    assert sealed != b"secret stub"
    plain = client.unseal_data(sealed)
    client.verify(b"head" + plain, sig)
    # A replayed or altered message fails: the sequence number moved on.
    sig2 = client.sign(b"message")
    with pytest.raises(NtlmSignatureError):
        server.verify(b"messagE", sig2)


def test_advance_sequence_skips_numbers() -> None:
    key = os.urandom(16)
    server = NtlmSession(key, FLAGS, server=True)
    client = NtlmSession(key, FLAGS, server=False)
    client.advance_sequence(1)
    server.advance_sequence(1)
    sig = client.sign(b"x")
    assert sig[12:16] == (1).to_bytes(4, "little")
    server.verify(b"x", sig)
