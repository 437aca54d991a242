"""The share jail and directory pattern matching."""

from __future__ import annotations

from pathlib import Path

import pytest

from hasmb.smb.constants import Status
from hasmb.smb.directory import pattern_matcher
from hasmb.smb.errors import SmbError
from hasmb.smb.paths import resolve, split_smb_path


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("..", Status.OBJECT_PATH_SYNTAX_BAD),
        ("a\\..\\b", Status.OBJECT_PATH_SYNTAX_BAD),
        ("a\\.\\b", Status.OBJECT_PATH_SYNTAX_BAD),
        ("\\etc\\passwd", Status.INVALID_PARAMETER),
        ("a:b", Status.OBJECT_NAME_INVALID),
        ("file.txt:secret:$DATA", Status.OBJECT_NAME_INVALID),
        ("CON", Status.OBJECT_NAME_INVALID),
        ("dir\\lpt1.txt", Status.OBJECT_NAME_INVALID),
        ("a/b", Status.OBJECT_NAME_INVALID),
        ("a\x01", Status.OBJECT_NAME_INVALID),
        ("a\\\\b", Status.OBJECT_NAME_INVALID),
        ("x" * 256, Status.OBJECT_NAME_INVALID),
    ],
)
def test_hostile_names(name: str, status: int) -> None:
    with pytest.raises(SmbError) as exc:
        split_smb_path(name)
    assert exc.value.status == status


def test_good_names() -> None:
    assert split_smb_path("") == []
    assert split_smb_path("dir\\sub\\file.txt") == ["dir", "sub", "file.txt"]
    assert split_smb_path("file.txt::$DATA") == ["file.txt"]
    assert split_smb_path("dir\\") == ["dir"]
    assert split_smb_path("CONSOLE.txt") == ["CONSOLE.txt"]


def test_symlinks_leaving_the_share_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "share"
    (root / "inside").mkdir(parents=True)
    (root / "up").symlink_to(tmp_path)
    (root / "ok").symlink_to(root / "inside")
    (root / "dangling").symlink_to(tmp_path / "nothing")
    real = str(root.resolve())
    assert resolve(real, ["ok", "f"]) == str(root / "inside" / "f")
    for parts in (["up"], ["up", "x"], ["dangling"]):
        with pytest.raises(SmbError) as exc:
            resolve(real, parts)
        assert exc.value.status == Status.ACCESS_DENIED


@pytest.mark.parametrize(
    ("pattern", "name", "match"),
    [
        ("*", "anything", True),
        ("*.txt", "A.TXT", True),
        ("*.txt", "a.txt.bak", False),
        ("a?c", "abc", True),
        ("a?c", "ac", False),
        ("exact", "EXACT", True),
        ("<.txt", "x.txt", True),
    ],
)
def test_pattern_matcher(pattern: str, name: str, match: bool) -> None:
    assert pattern_matcher(pattern)(name) is match


def test_lookups_fold_case_like_windows(tmp_path: Path) -> None:
    root = tmp_path / "share"
    (root / "Docs").mkdir(parents=True)
    (root / "Docs" / "Report.TXT").write_text("x")
    real = str(root.resolve())
    assert resolve(real, ["docs", "report.txt"]) == str(root / "Docs" / "Report.TXT")
    # a new name keeps the case the client gave, inside the existing directory
    assert resolve(real, ["DOCS", "New.txt"]) == str(root / "Docs" / "New.txt")
    assert resolve(real, ["missing", "x"]) == str(root / "missing" / "x")
