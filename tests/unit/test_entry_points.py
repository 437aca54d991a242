"""Every console script declared in pyproject.toml is a real, importable entry point."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from importlib import import_module
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _scripts() -> dict[str, str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    scripts: dict[str, str] = data["project"]["scripts"]
    return scripts


def test_declared_scripts() -> None:
    assert set(_scripts()) == {"hasmb-operator", "hasmb-smbd", "kubectl-hasmb", "hasmb-probe"}


def test_entry_points_resolve_to_callables() -> None:
    for target in _scripts().values():
        module, _, func = target.partition(":")
        assert callable(getattr(import_module(module), func)), target


def test_scripts_installed_in_venv() -> None:
    bindir = Path(sys.executable).parent
    for name in _scripts():
        path = bindir / name
        assert path.exists() or shutil.which(name), f"{name} not installed next to {sys.executable}"
        proc = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=60)
        # --help must never crash with a traceback, implemented or not.
        assert "Traceback" not in proc.stderr, proc.stderr
