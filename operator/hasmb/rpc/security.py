"""DCE/RPC security contexts: NTLMSSP (auth type 10) and SPNEGO-wrapped NTLMSSP
(auth type 9), with packet integrity and privacy (MS-RPCE 2.2.2.11, 3.3.1.5.2).

The auth legs travel in bind/bind_ack, then auth3 (NTLMSSP: three legs) or
alter_context/alter_context_resp (SPNEGO: the server's mechListMIC needs a
fourth leg).  Afterwards every request/response carries a sec_trailer and a
16-byte NTLM signature over the whole PDU; at privacy level the stub and its
padding are RC4-sealed.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

from hasmb.auth.ntlm import NtlmAuthError, NtlmResult, NtlmServer
from hasmb.auth.ntlm_session import (
    NTLMSSP_NEGOTIATE_SEAL,
    NTLMSSP_NEGOTIATE_SIGN,
    SIGNATURE_SIZE,
    NtlmSession,
    NtlmSignatureError,
)
from hasmb.auth.spnego import SpnegoNtlmAcceptor, _parse_resp
from hasmb.rpc.pdu import AuthLevel, AuthType


def _has_mech_list_mic(token: bytes) -> bool:
    try:
        return _parse_resp(token).mech_list_mic is not None
    except NtlmAuthError:
        return False


class RpcAuthError(Exception):
    """Authentication failed or a protected PDU did not verify."""


@dataclass
class AuthIdentity:
    users: Mapping[str, str]
    netbios_name: str
    dns_name: str


@dataclass
class SecurityContext:
    auth_type: int
    auth_level: int
    context_id: int
    identity: AuthIdentity
    acceptor: SpnegoNtlmAcceptor = field(init=False)
    result: NtlmResult | None = None
    session: NtlmSession | None = None
    failed: bool = False

    def __post_init__(self) -> None:
        if self.auth_type not in (AuthType.NTLMSSP, AuthType.SPNEGO):
            raise RpcAuthError(f"unsupported auth type {self.auth_type}")
        if self.auth_level not in (
            AuthLevel.CONNECT,
            AuthLevel.PKT,
            AuthLevel.INTEGRITY,
            AuthLevel.PRIVACY,
        ):
            raise RpcAuthError(f"unsupported auth level {self.auth_level}")
        ident = self.identity
        self.acceptor = SpnegoNtlmAcceptor(
            NtlmServer(ident.users, ident.netbios_name, ident.dns_name)
        )

    @property
    def complete(self) -> bool:
        return self.session is not None

    def step(self, token: bytes) -> tuple[bytes, bool]:
        """Feed one client token; returns (server token, complete)."""
        if self.failed:
            raise RpcAuthError("security context already failed")
        if self.complete:
            raise RpcAuthError("security context already established")
        if self.auth_type == AuthType.NTLMSSP and not token.startswith(b"NTLMSSP\x00"):
            raise RpcAuthError("auth type NTLMSSP needs a raw NTLMSSP token")
        try:
            step = self.acceptor.step(token)
        except NtlmAuthError as e:
            self.failed = True
            raise RpcAuthError(str(e)) from None
        except (ValueError, IndexError, struct.error, UnicodeError) as e:
            # Malformed tokens the acceptor did not classify are still auth failures.
            self.failed = True
            raise RpcAuthError(f"malformed security token: {e}") from None
        if step.complete:
            result = step.result
            if result is None or result.anonymous:
                self.failed = True
                raise RpcAuthError("anonymous authentication is not accepted")
            flags = result.negotiate_flags
            if self.auth_level >= AuthLevel.PKT and not flags & NTLMSSP_NEGOTIATE_SIGN:
                self.failed = True
                raise RpcAuthError("client did not negotiate NTLM signing")
            if self.auth_level == AuthLevel.PRIVACY and not flags & NTLMSSP_NEGOTIATE_SEAL:
                self.failed = True
                raise RpcAuthError("client did not negotiate NTLM sealing")
            self.result = result
            # A fresh session (RC4 handles reset).  When SPNEGO exchanged
            # mechListMICs they used sequence number 0 in each direction and
            # DCE/RPC continues at 1 (observed with Samba's clients); raw
            # NTLMSSP starts at 0.
            self.session = NtlmSession(result.exported_session_key, flags, server=True)
            if self.auth_type == AuthType.SPNEGO and _has_mech_list_mic(step.out_token):
                self.session.advance_sequence(1)
        return step.out_token, step.complete

    @property
    def user(self) -> str | None:
        return self.result.user if self.result else None

    # --- per-PDU protection ---------------------------------------------------

    def verifier_size(self) -> int:
        return SIGNATURE_SIZE if self.auth_level >= AuthLevel.PKT else 0

    def check(self, whole_without_sig: bytes, signature: bytes) -> None:
        assert self.session is not None
        try:
            self.session.verify(whole_without_sig, signature)
        except NtlmSignatureError as e:
            raise RpcAuthError(str(e)) from None

    def unseal(self, data: bytes) -> bytes:
        assert self.session is not None
        return self.session.unseal_data(data)

    def sign(self, whole_without_sig: bytes) -> bytes:
        assert self.session is not None
        return self.session.sign(whole_without_sig)

    def seal(self, data: bytes, whole_without_sig: bytes) -> tuple[bytes, bytes]:
        assert self.session is not None
        return self.session.seal(data, whole_without_sig)
