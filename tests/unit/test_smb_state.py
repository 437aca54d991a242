"""Pure logic of opens: share-mode conflicts, byte-range overlap, config loading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hasmb.smb.config import ConfigError, load_file, parse_share_flag, parse_user_flag
from hasmb.smb.create import map_generic, share_conflict
from hasmb.smb.state import ByteRangeLock

READ, WRITE, DELETE = 0x1, 0x2, 0x10000
SR, SW, SD = 1, 2, 4


class _Open:
    def __init__(self, access: int, share: int) -> None:
        self.granted_access = access
        self.share_access = share


def _conflict(existing: tuple[int, int], new: tuple[int, int]) -> bool:
    op: Any = _Open(*existing)
    return share_conflict(op, new[0], new[1])


def test_share_modes() -> None:
    assert not _conflict((READ, SR), (READ, SR))
    assert _conflict((READ, SR), (WRITE, SR | SW))  # existing does not share write
    assert _conflict((WRITE, SR | SW), (READ, SR))  # new does not share write
    assert not _conflict((READ | WRITE, SR | SW), (READ | WRITE, SR | SW))
    assert _conflict((READ, SR | SW), (DELETE, SR | SW | SD))
    assert not _conflict((0x80, 0), (READ | WRITE, 0))  # attribute-only opens never conflict


def test_generic_mapping() -> None:
    assert map_generic(0x80000000) & 0x1
    assert map_generic(0x10000000) == 0x001F01FF


def test_byte_range_overlap() -> None:
    lk = ByteRangeLock(open=None, offset=10, length=10, exclusive=True)  # type: ignore[arg-type]
    assert lk.overlaps(15, 1)
    assert lk.overlaps(0, 11)
    assert not lk.overlaps(20, 5)
    assert not lk.overlaps(0, 10)
    assert lk.overlaps(12, 0)  # zero length inside another range
    assert not lk.overlaps(10, 0)


def test_config_file_and_flags(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.mkdir()
    (users / "bob").write_text("pw-bob\n")
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(
        "netname: SVM1\nlisten: '127.0.0.1:4450'\n"
        f"shares:\n  - {{name: data, path: {tmp_path}, continuouslyAvailable: true, "
        "encrypt: true}\n"
        f"users: [{{name: alice, password: secret}}]\nusersDir: {users}\n"
        "state: file:/x\nwitness: {listen: '0.0.0.0:5050', interfaces: [{name: SVM1, "
        "ipv4: 10.0.0.1}]}\n"
    )
    cfg = load_file(cfg_path)
    assert cfg.netname == "SVM1"
    assert cfg.listen_host_port() == ("127.0.0.1", 4450)
    assert cfg.shares[0].continuously_available and cfg.shares[0].encrypt
    assert cfg.all_users() == {"alice": "secret", "bob": "pw-bob"}
    assert cfg.witness.interfaces[0].ipv4 == "10.0.0.1"
    assert parse_share_flag("x=/srv/x:ca").continuously_available
    assert parse_share_flag("x=/srv/x").path == "/srv/x"
    assert parse_user_flag("u:p:q") == ("u", "p:q")
    with pytest.raises(ConfigError):
        parse_share_flag("nopath")


def test_attribute_only_opens_ignore_share_modes() -> None:
    assert not _conflict((READ | WRITE, 0), (0x80 | 0x100 | 0x100000, 0))
