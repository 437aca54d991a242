"""hasmb-smbd against smbprotocol: signing, every cipher, share modes, the path jail."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from smbprotocol.connection import Ciphers, Dialects, SigningAlgorithms
from smbprotocol.exceptions import SMBResponseException
from smbprotocol.open import CreateDisposition, CreateOptions, ShareAccess

from tests.support.smbd import SmbdProcess
from tests.support.smbproto import connect

NT_STATUS = {
    "SHARING_VIOLATION": 0xC0000043,
    "OBJECT_NAME_INVALID": 0xC0000033,
    "OBJECT_PATH_SYNTAX_BAD": 0xC000003B,
    "ACCESS_DENIED": 0xC0000022,
    "INVALID_PARAMETER": 0xC000000D,
    "OBJECT_NAME_NOT_FOUND": 0xC0000034,
}


def _roundtrip(client: object, name: str, payload: bytes) -> bytes:
    from tests.support.smbproto import Client

    assert isinstance(client, Client)
    op = client.open(name, disposition=CreateDisposition.FILE_OVERWRITE_IF)
    try:
        op.write(payload, 0)
        return bytes(op.read(0, len(payload)))
    finally:
        op.close()


@pytest.mark.parametrize(
    ("dialect", "algo"),
    [
        (Dialects.SMB_2_0_2, None),
        (Dialects.SMB_2_1_0, None),
        (Dialects.SMB_3_0_0, None),
        (Dialects.SMB_3_0_2, None),
        (Dialects.SMB_3_1_1, SigningAlgorithms.HMAC_SHA256),
        (Dialects.SMB_3_1_1, SigningAlgorithms.AES_CMAC),
        (Dialects.SMB_3_1_1, SigningAlgorithms.AES_GMAC),
    ],
)
def test_signing(smbd: SmbdProcess, dialect: int, algo: int | None) -> None:
    payload = os.urandom(60_000)
    with connect(
        smbd,
        dialect=dialect,
        require_signing=True,
        signing_algos=[algo] if algo is not None else None,
    ) as c:
        assert c.session.signing_required
        assert _roundtrip(c, f"signed-{dialect:x}-{algo}.bin", payload) == payload


@pytest.mark.parametrize(
    "cipher",
    [Ciphers.AES_128_CCM, Ciphers.AES_128_GCM, Ciphers.AES_256_CCM, Ciphers.AES_256_GCM],
)
def test_encryption_each_cipher(smbd: SmbdProcess, cipher: int) -> None:
    payload = os.urandom(300_000)
    with connect(smbd, encrypt=True, ciphers=[cipher]) as c:
        assert c.connection.cipher_id == cipher
        assert c.session.encrypt_data
        assert _roundtrip(c, f"sealed-{cipher}.bin", payload) == payload


def test_encryption_smb30(smbd: SmbdProcess) -> None:
    payload = os.urandom(10_000)
    with connect(smbd, dialect=Dialects.SMB_3_0_0, encrypt=True) as c:
        assert _roundtrip(c, "sealed-30.bin", payload) == payload


def test_encrypted_share_refuses_plain_requests(smbd: SmbdProcess) -> None:
    with connect(smbd, "enc") as c:
        # smbprotocol honours SMB2_SHAREFLAG_ENCRYPT_DATA and encrypts for this tree
        assert c.tree.encrypt_data
        assert _roundtrip(c, "x.bin", b"abc") == b"abc"
    with (
        pytest.raises(SMBResponseException) as exc,
        connect(smbd, "enc", dialect=Dialects.SMB_2_1_0),
    ):
        pass
    assert exc.value.status == NT_STATUS["ACCESS_DENIED"]


def test_share_mode_conflict_between_clients(smbd: SmbdProcess) -> None:
    with connect(smbd) as a, connect(smbd) as b:
        op = a.open("locked.txt", share=ShareAccess.FILE_SHARE_READ)
        try:
            with pytest.raises(SMBResponseException) as exc:
                b.open(
                    "locked.txt", share=ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE
                )
            assert exc.value.status == NT_STATUS["SHARING_VIOLATION"]
            # a reader that shares read+write with a writer that shares read: still refused
            # because the first open writes and the second does not share write... but a
            # pure reader that shares everything is fine.
            reader = b.open(
                "locked.txt",
                access=0x00120089,
                share=ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE,
            )
            reader.close()
        finally:
            op.close()
        again = b.open("locked.txt", share=0)
        again.close()


def test_delete_on_close(smbd: SmbdProcess) -> None:
    with connect(smbd) as c:
        op = c.open(
            "doomed.txt",
            access=0x0012019F | 0x00010000,
            options=CreateOptions.FILE_NON_DIRECTORY_FILE | CreateOptions.FILE_DELETE_ON_CLOSE,
            share=7,
        )
        assert (smbd.shares["data"] / "doomed.txt").exists()
        op.close()
        assert not (smbd.shares["data"] / "doomed.txt").exists()


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("..\\outside.txt", "OBJECT_PATH_SYNTAX_BAD"),
        ("a\\..\\..\\outside.txt", "OBJECT_PATH_SYNTAX_BAD"),
        ("\\abs.txt", "INVALID_PARAMETER"),
        ("file.txt:stream", "OBJECT_NAME_INVALID"),
        ("CON", "OBJECT_NAME_INVALID"),
        ("nul.txt", "OBJECT_NAME_INVALID"),
        ("bad<name", "OBJECT_NAME_INVALID"),
        ("escape\\passwd", "ACCESS_DENIED"),
        ("escape", "ACCESS_DENIED"),
    ],
)
def test_hostile_paths(smbd: SmbdProcess, tmp_path: Path, name: str, status: str) -> None:
    link = smbd.shares["data"] / "escape"
    if not link.is_symlink():
        link.symlink_to("/etc")
    with connect(smbd) as c:
        with pytest.raises(SMBResponseException) as exc:
            c.open(name, access=0x00120089, disposition=CreateDisposition.FILE_OPEN, options=0)
        assert exc.value.status == NT_STATUS[status], hex(exc.value.status)
        # the session survives a refused path
        assert _roundtrip(c, "after-hostile.txt", b"ok") == b"ok"
    assert not (tmp_path.parent / "outside.txt").exists()
