"""hasmb's NTLMv2 initiator against the lead's NtlmServer acceptor."""

from __future__ import annotations

import pytest

from hasmb.auth.ntlm import NtlmAuthError, NtlmServer
from hasmb.auth.ntlm_session import NtlmSession
from hasmb.rpc.ntlm_client import NtlmClientError, authenticate_message, negotiate_message


def test_round_trip_and_keys_agree() -> None:
    server = NtlmServer({"alice": "pw"}, "SVM1", "svm1")
    challenge = server.challenge(negotiate_message())
    auth = authenticate_message(challenge, "ALICE", "pw")
    result = server.authenticate(auth.authenticate)
    assert result.user == "ALICE" and not result.anonymous
    assert result.exported_session_key == auth.exported_session_key
    c = NtlmSession(auth.exported_session_key, auth.flags, server=False)
    s = NtlmSession(result.exported_session_key, result.negotiate_flags, server=True)
    s.verify(b"msg", c.sign(b"msg"))


def test_wrong_password_and_garbage() -> None:
    server = NtlmServer({"alice": "pw"}, "SVM1", "svm1")
    challenge = server.challenge(negotiate_message())
    with pytest.raises(NtlmAuthError):
        server.authenticate(authenticate_message(challenge, "alice", "nope").authenticate)
    with pytest.raises(NtlmClientError):
        authenticate_message(b"NTLMSSP\x00" + b"\x01" + b"\x00" * 60, "a", "b")
