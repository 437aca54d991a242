"""NTLMv2/SPNEGO acceptor against real client implementations (pyspnego, impacket)."""

from __future__ import annotations

import pytest
import spnego
from impacket import ntlm as impacket_ntlm

from hasmb.auth.md4 import md4
from hasmb.auth.ntlm import NtlmAuthError, NtlmServer
from hasmb.auth.spnego import SpnegoNtlmAcceptor, neg_token_init_ntlm

USERS = {"Alice": "S3cret-pass"}


def _acceptor() -> SpnegoNtlmAcceptor:
    return SpnegoNtlmAcceptor(NtlmServer(USERS, "SVM1", "svm1.example.test"))


def test_md4_rfc1320_vectors() -> None:
    assert md4(b"").hex() == "31d6cfe0d16ae931b73c59d7e0c089c0"
    assert md4(b"abc").hex() == "a448017aaf21d8525fc10ae87aa6729d"
    assert md4(b"a" * 100).hex() == md4(b"a" * 100).hex()
    assert (
        md4(
            b"12345678901234567890123456789012345678901234567890123456789012345678901234567890"
        ).hex()
        == "e33b4ddc9c38f2199c3e7b164fcc0536"
    )


@pytest.mark.parametrize("protocol", ["negotiate", "ntlm"])
def test_pyspnego_client_authenticates_and_keys_match(protocol: str) -> None:
    client = spnego.client("alice", "S3cret-pass", hostname="svm1", protocol=protocol)
    acceptor = _acceptor()
    token = client.step(neg_token_init_ntlm() if protocol == "negotiate" else None)
    result = None
    for _ in range(4):
        assert token is not None
        step = acceptor.step(token)
        if step.complete:
            result = step.result
            # The client verifies our mechListMIC here; a wrong one raises.
            if step.out_token:
                client.step(step.out_token)
            break
        token = client.step(step.out_token)
    assert result is not None and not result.anonymous
    assert result.user.lower() == "alice"
    assert client.complete
    assert result.exported_session_key == client.session_key


def test_wrong_password_is_refused() -> None:
    client = spnego.client("alice", "wrong", hostname="svm1", protocol="ntlm")
    acceptor = _acceptor()
    negotiate = client.step()
    assert negotiate is not None
    step = acceptor.step(negotiate)
    authenticate = client.step(step.out_token)
    assert authenticate is not None
    with pytest.raises(NtlmAuthError, match="wrong password"):
        acceptor.step(authenticate)


def test_unknown_user_is_refused() -> None:
    client = spnego.client("mallory", "x", hostname="svm1", protocol="ntlm")
    acceptor = _acceptor()
    negotiate = client.step()
    assert negotiate is not None
    step = acceptor.step(negotiate)
    authenticate = client.step(step.out_token)
    assert authenticate is not None
    with pytest.raises(NtlmAuthError, match="unknown user"):
        acceptor.step(authenticate)


def test_impacket_ntlmv2_client() -> None:
    server = NtlmServer(USERS, "SVM1", "svm1.example.test")
    negotiate = impacket_ntlm.getNTLMSSPType1("", "", signingRequired=True)
    challenge = server.challenge(negotiate.getData())
    auth, exported = impacket_ntlm.getNTLMSSPType3(
        negotiate, challenge, "alice", "S3cret-pass", "", "", ""
    )
    result = server.authenticate(auth.getData())
    assert result.exported_session_key == exported


@pytest.mark.parametrize(
    "token",
    [
        b"",
        b"\x60",
        b"\x60\x84\xff\xff\xff\xff",
        b"\xa1\x03\x30\x01\x00",
        b"NTLMSSP\x00\x03",
        b"\x00" * 40,
    ],
)
def test_malformed_tokens_raise_clean_error(token: bytes) -> None:
    with pytest.raises(NtlmAuthError):
        _acceptor().step(token)


def test_ntlmv1_is_refused() -> None:
    server = NtlmServer(USERS, "SVM1", "svm1")
    negotiate = impacket_ntlm.getNTLMSSPType1("", "", signingRequired=True)
    challenge = server.challenge(negotiate.getData())
    auth, _ = impacket_ntlm.getNTLMSSPType3(
        negotiate, challenge, "alice", "S3cret-pass", "", "", "", use_ntlmv2=False
    )
    with pytest.raises(NtlmAuthError, match="NTLMv2 required"):
        server.authenticate(auth.getData())
