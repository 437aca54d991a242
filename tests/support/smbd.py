"""Start and stop hasmb-smbd for protocol tests (a real process on a free loopback port)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

USER = "alice"
PASSWORD = "Secret-pw1"


@dataclass
class SmbdProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    shares: dict[str, Path] = field(default_factory=dict)
    user: str = USER
    password: str = PASSWORD

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def start_smbd(
    workdir: Path,
    shares: dict[str, str],
    *,
    extra: list[str] | None = None,
    users: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> SmbdProcess:
    """`shares` maps NAME to a flag value suffix: "" for a plain share, ":ca" for CA."""
    workdir.mkdir(parents=True, exist_ok=True)
    args = [
        sys.executable,
        "-m",
        "hasmb.cli.smbd",
        "--listen",
        "127.0.0.1:0",
        "--netname",
        "HASMBTEST",
        "--log-level",
        "info",
    ]
    paths: dict[str, Path] = {}
    for name, suffix in shares.items():
        p = workdir / name
        p.mkdir(exist_ok=True)
        paths[name] = p
        args += ["--share", f"{name}={p}{suffix}"]
    for u, pw in (users or {USER: PASSWORD}).items():
        args += ["--user", f"{u}:{pw}"]
    args += extra or []
    log_path = workdir / "smbd.log"
    log_file = open(log_path, "wb")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        args, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    log_file.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(r"listening on [\d.]+:(\d+)", log_path.read_text(errors="replace"))
        if m:
            return SmbdProcess(proc, int(m.group(1)), log_path, paths)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait(5)
    raise RuntimeError(f"hasmb-smbd did not start:\n{log_path.read_text(errors='replace')}")
