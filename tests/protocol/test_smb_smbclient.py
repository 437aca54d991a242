"""hasmb-smbd against Samba's smbclient: the file operations users do, -m SMB2 and -m SMB3."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.smbd import SmbdProcess


def smbclient(
    smbd: SmbdProcess,
    share: str,
    commands: str,
    cwd: Path,
    proto: str = "SMB3",
    extra: list[str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "smbclient",
            f"//127.0.0.1/{share}",
            "-p",
            str(smbd.port),
            "-U",
            f"{smbd.user}%{smbd.password}",
            "-m",
            proto,
            *(extra or []),
            "-c",
            commands,
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * 1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


@pytest.mark.parametrize("proto", ["SMB2", "SMB3"])
def test_put_get_ls_mkdir_rename_rm(smbd: SmbdProcess, tmp_path: Path, proto: str) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(200_000))
    d = f"dir{proto}"
    r = smbclient(
        smbd,
        "data",
        f"mkdir {d}; put src.bin {d}\\a.bin; ls {d}\\*; "
        f"rename {d}\\a.bin {d}\\b.bin; get {d}\\b.bin back.bin",
        tmp_path,
        proto,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "a.bin" in r.stdout
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()
    server_dir = smbd.shares["data"] / d
    assert sorted(os.listdir(server_dir)) == ["b.bin"]
    r = smbclient(smbd, "data", f"rm {d}\\b.bin; rmdir {d}; ls", tmp_path, proto)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not server_dir.exists()
    assert d not in r.stdout


def test_missing_file_reports_not_found(smbd: SmbdProcess, tmp_path: Path) -> None:
    r = smbclient(smbd, "data", "get nothing-here.txt x", tmp_path)
    assert "NT_STATUS_OBJECT_NAME_NOT_FOUND" in r.stdout + r.stderr


def test_wrong_password_refused(smbd: SmbdProcess, tmp_path: Path) -> None:
    r = subprocess.run(
        [
            "smbclient",
            "//127.0.0.1/data",
            "-p",
            str(smbd.port),
            "-U",
            f"{smbd.user}%wrong",
            "-m",
            "SMB3",
            "-c",
            "ls",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode != 0
    assert "NT_STATUS_LOGON_FAILURE" in r.stdout + r.stderr


def test_encrypted_share_needs_smb3_encryption(smbd: SmbdProcess, tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("sealed\n")
    r = smbclient(smbd, "enc", "put f.txt f.txt; get f.txt g.txt", tmp_path, "SMB3")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "g.txt").read_text() == "sealed\n"
    r = smbclient(smbd, "enc", "ls", tmp_path, "SMB2")
    assert r.returncode != 0
    assert "NT_STATUS_ACCESS_DENIED" in r.stdout + r.stderr


@pytest.mark.parametrize("proto", ["SMB2", "SMB3"])
def test_one_gib_round_trip(smbd: SmbdProcess, tmp_path: Path, proto: str) -> None:
    src = tmp_path / "big.bin"
    block = os.urandom(1024 * 1024)
    with open(src, "wb") as f:
        for i in range(1024):
            f.write(block[i:] + block[:i])  # every MiB differs, cheap to generate
    r = smbclient(
        smbd,
        "data",
        f"put big.bin big{proto}.bin; get big{proto}.bin back.bin",
        tmp_path,
        proto,
        timeout=500,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    want = _sha256(src)
    assert _sha256(smbd.shares["data"] / f"big{proto}.bin") == want
    assert _sha256(tmp_path / "back.bin") == want
    (smbd.shares["data"] / f"big{proto}.bin").unlink()


@pytest.mark.parametrize("proto", ["SMB2", "SMB3"])
def test_list_shares_through_srvsvc(smbd: SmbdProcess, tmp_path: Path, proto: str) -> None:
    r = subprocess.run(
        [
            "smbclient",
            "-L",
            "//127.0.0.1",
            "-p",
            str(smbd.port),
            "-U",
            f"{smbd.user}%{smbd.password}",
            "-m",
            proto,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = {tuple(line.split()[:2]) for line in r.stdout.splitlines() if line.strip()}
    assert ("data", "Disk") in lines, r.stdout + r.stderr
    assert ("ca", "Disk") in lines
    assert ("IPC$", "IPC") in lines


def test_anonymous_cannot_reach_a_disk_share(smbd: SmbdProcess, tmp_path: Path) -> None:
    r = subprocess.run(
        ["smbclient", "//127.0.0.1/data", "-p", str(smbd.port), "-N", "-m", "SMB3", "-c", "ls"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode != 0
    assert (
        "NT_STATUS_ACCESS_DENIED" in r.stdout + r.stderr or "LOGON_FAILURE" in r.stdout + r.stderr
    )
