"""Volume move logic: copy passes (hasmb.smb.volume_move.sync_tree) and the operator's
decision per Share (hasmb.controller.volume_move.next_step)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hasmb.controller.model import SVM, Share
from hasmb.controller.volume_move import next_step
from hasmb.smb.volume_move import _Dirty, _merge, sync_tree


def tree(root: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


def test_passes_follow_changes(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "d" / "e").mkdir(parents=True)
    (src / "a").write_bytes(b"1" * 1000)
    (src / "d" / "b").write_bytes(b"2" * 10)
    (src / "d" / "e" / "gone").write_bytes(b"3")
    os.setxattr(src / "a", "user.DOSATTRIB", b"\x20\x00\x00\x00")
    (src / ".hasmb-state").mkdir()
    dst.mkdir()
    copied: dict[str, Any] = {}
    nbytes, nfiles = sync_tree(str(src), str(dst), copied, {})
    assert (nbytes, nfiles) == (1011, 3)
    assert tree(dst) == tree(src)
    assert os.getxattr(dst / "a", "user.DOSATTRIB") == b"\x20\x00\x00\x00"
    assert not (dst / ".hasmb-state").exists()  # the file store stays with the source

    # nothing changed: nothing copied
    assert sync_tree(str(src), str(dst), copied, {}) == (0, 0)

    # a write inside the same timestamp tick is found through the dirty ranges only
    st = os.stat(src / "a")
    with open(src / "a", "r+b") as f:
        f.seek(100)
        f.write(b"X" * 5)
    os.utime(src / "a", ns=(st.st_atime_ns, st.st_mtime_ns))
    nbytes, _ = sync_tree(str(src), str(dst), copied, {"a": _Dirty(ranges=[(100, 5)])})
    assert nbytes == 5
    assert (dst / "a").read_bytes() == (src / "a").read_bytes()

    # rename, delete, truncate, new directory
    os.rename(src / "d" / "b", src / "d" / "c")
    (src / "d" / "e" / "gone").unlink()
    os.truncate(src / "a", 7)
    (src / "new").mkdir()
    (src / "new" / "f").write_bytes(b"new")
    sync_tree(str(src), str(dst), copied, {"a": _Dirty(whole=True)})
    assert tree(dst) == tree(src)
    assert not (dst / "d" / "b").exists()
    assert sorted(copied) == sorted(tree(src))


def test_ranges_merge() -> None:
    assert _merge([(10, 5), (0, 4), (12, 10), (40, 1)]) == [(0, 4), (10, 12), (40, 1)]
    assert _merge([(0, 4), (4, 4)]) == [(0, 8)]


def svm_body() -> dict[str, Any]:
    return {
        "metadata": {"name": "svm1", "namespace": "ns"},
        "spec": {
            "haPair": "p",
            "homeNode": "a",
            "volume": {"hostPath": "/v"},
            "volumes": [{"name": "fast", "hostPath": "/f"}],
        },
    }


def share_body(volume: str, current: str | None, move: dict[str, Any] | None = None) -> Share:
    status: dict[str, Any] = {}
    if current is not None:
        status["volume"] = current
    if move is not None:
        status["volumeMove"] = move
    return Share.from_body(
        {
            "metadata": {"name": "data", "namespace": "ns", "generation": 2},
            "spec": {"svm": "svm1", "path": "/data", "volume": volume},
            "status": status,
        }
    )


def test_operator_steps() -> None:
    svm = SVM.from_body(svm_body())
    assert svm.volume_names() == {"root", "fast"}
    # not recorded yet, or nothing to do
    assert next_step(share_body("fast", None), svm, {}, None).action == "none"
    assert next_step(share_body("fast", "fast"), svm, {}, None).action == "none"
    # the config serves where the data is, not where it should go
    moving = share_body("fast", "root")
    assert moving.export_path == "/export/data"
    assert moving.path_on("fast") == "/volumes/fast/data"
    start = next_step(moving, svm, {}, None)
    assert start.action == "start" and start.event is not None
    assert start.status["volumeMove"]["phase"] == "Starting"
    # another destination known to the pod (an earlier move) -> start this one
    other = {"destination": "/volumes/other/data", "phase": "Completed"}
    assert next_step(moving, svm, {}, other).action == "start"
    copying = {"destination": "/volumes/fast/data", "phase": "Copying", "bytesCopied": 5}
    step = next_step(moving, svm, {}, copying)
    assert step.action == "progress" and step.status["volumeMove"]["bytesCopied"] == 5
    done = dict(copying, phase="Completed", pauseSeconds=0.01, passes=3)
    step = next_step(moving, svm, {}, done)
    assert step.action == "complete" and step.status["volume"] == "fast"
    assert step.status["exportPath"] == "/volumes/fast/data"
    assert step.status["volumeMove"]["pauseSeconds"] == 0.01
    failed = dict(copying, phase="Failed", error="EIO")
    step = next_step(moving, svm, {}, failed)
    assert step.action == "fail" and step.status["volumeMove"]["message"] == "EIO"
    # reported once, then left alone until spec.volume changes
    last = {"volumeMove": step.status["volumeMove"]}
    assert next_step(moving, svm, last, failed).action == "none"
    # an unknown volume is reported, not attempted
    nowhere = share_body("slow", "root")
    step = next_step(nowhere, svm, {}, None)
    assert step.action == "invalid" and step.event is not None
    assert "not a volume of SVM svm1" in step.status["volumeMove"]["message"]
    assert next_step(nowhere, svm, {"volumeMove": step.status["volumeMove"]}, None).action == (
        "none"
    )
