"""Samba's smbd as a reference server on a loopback port (tests and benchmarks).

Each instance gets its own private/lock/state/cache/pid directories, so several
can run beside each other and beside a system smbd. smbd is started in its own
session (setsid) so its shutdown cannot signal the test's process group.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.net import free_port


def wait_for_port(port: int, deadline: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {deadline}s")


@dataclass
class SambaServer:
    root: Path
    shares: dict[str, Path]
    user: str = "hasmbtest"
    password: str = "Hasmb-test-1"
    port: int = field(default_factory=free_port)
    extra_global: str = ""
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def log_path(self) -> Path:
        return self.root / "log.smbd"

    def _config(self) -> str:
        dirs = {
            name: self.root / name
            for name in ("private", "lock", "state", "cache", "pid", "ncalrpc")
        }
        for path in dirs.values():
            path.mkdir(parents=True, exist_ok=True)
        lines = [
            "[global]",
            "  workgroup = WORKGROUP",
            "  netbios name = SAMBAREF",
            "  server role = standalone server",
            f"  smb ports = {self.port}",
            "  interfaces = lo",
            "  bind interfaces only = no",
            "  disable netbios = yes",
            "  passdb backend = tdbsam",
            "  map to guest = never",
            "  server min protocol = SMB2_02",
            "  load printers = no",
            "  printing = bsd",
            "  printcap name = /dev/null",
            "  disable spoolss = yes",
            "  log level = 1",
            f"  log file = {self.log_path}",
            "  kernel oplocks = no",
            "  kernel share modes = no",
            "  posix locking = no",
            "  durable handles = yes",
            f"  private dir = {dirs['private']}",
            f"  lock directory = {dirs['lock']}",
            f"  state directory = {dirs['state']}",
            f"  cache directory = {dirs['cache']}",
            f"  pid directory = {dirs['pid']}",
            f"  ncalrpc dir = {dirs['ncalrpc']}",
            self.extra_global,
        ]
        for name, path in self.shares.items():
            # Files are accessed as root, like hasmb-smbd in its pod: pytest temp dirs are 0700.
            lines += [
                f"[{name}]",
                f"  path = {path}",
                "  read only = no",
                f"  valid users = {self.user}",
                "  force user = root",
            ]
        return "\n".join(lines) + "\n"

    def start(self, deadline: float = 30.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        conf = self.root / "smb.conf"
        conf.write_text(self._config())
        # tdbsam accounts must map to a Unix account.
        if subprocess.run(["id", self.user], capture_output=True).returncode != 0:
            subprocess.run(
                ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", self.user],
                check=True,
                capture_output=True,
            )
        subprocess.run(
            ["smbpasswd", "-c", str(conf), "-s", "-a", self.user],
            input=f"{self.password}\n{self.password}\n".encode(),
            check=True,
            capture_output=True,
            env={**os.environ, "USER": "root"},
        )
        smbd = shutil.which("smbd") or "/usr/sbin/smbd"
        self.proc = subprocess.Popen(
            [smbd, "--foreground", "--no-process-group", f"--configfile={conf}", "--debug-stdout"],
            stdout=(self.root / "smbd.out").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for_port(self.port, deadline, self.proc)
        except Exception as exc:
            self.stop()
            raise RuntimeError(
                f"smbd did not start; see {self.root / 'smbd.out'} and {self.log_path}"
            ) from exc

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            # smbd forks a child per connection into its own session; kill the group.
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None
