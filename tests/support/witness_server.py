"""Helpers for witness protocol tests: an in-process WitnessService on its own
loopback address (so its endpoint mapper can own port 135 there, which
Samba's rpcclient insists on) and an interactive rpcclient driver."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from hasmb.witness.config import WitnessConfig, WitnessInterfaceConfig
from hasmb.witness.service import WitnessService

USER = "alice"
PASSWORD = "Secret-pw1"
NETNAME = "SVM1"
SHARE = "data"


def free_loopback_address() -> str:
    """A random 127.x.y.z unlikely to collide with other tests (all of 127/8 is loopback)."""
    rnd = random.Random(os.getpid() ^ time.monotonic_ns())
    return f"127.{rnd.randint(100, 250)}.{rnd.randint(1, 250)}.{rnd.randint(2, 250)}"


@dataclass
class WitnessEnv:
    service: WitnessService
    ip: str  # node A's LIF: where the witness listens
    partner_ip: str  # node B's LIF


@contextlib.asynccontextmanager
async def witness_env(
    epm: bool = True, registration_timeout: float = 120.0
) -> AsyncIterator[WitnessEnv]:
    for _attempt in range(5):
        ip = free_loopback_address()
        partner = ip.rsplit(".", 1)[0] + "." + str(int(ip.rsplit(".", 1)[1]) + 1)
        cfg = WitnessConfig(
            listen=f"{ip}:0",
            endpoint_mapper_port=135 if epm else 0,
            interfaces=[
                WitnessInterfaceConfig(NETNAME, ipv4=ip, node="node-a"),
                WitnessInterfaceConfig(NETNAME, ipv4=partner, node="node-b"),
            ],
            registration_timeout=registration_timeout,
        )
        svc = WitnessService(
            cfg, {USER: PASSWORD}, NETNAME, share_exists=lambda s: s.lower() == SHARE
        )
        try:
            await svc.start()
        except OSError:
            continue
        try:
            yield WitnessEnv(svc, ip, partner)
        finally:
            await svc.stop()
        return
    raise RuntimeError("no free loopback address for the witness")


class Rpcclient:
    """One rpcclient process fed commands on stdin (context handles survive)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    @classmethod
    async def start(
        cls, ip: str, level: str, user: str = USER, password: str = PASSWORD
    ) -> Rpcclient:
        proc = await asyncio.create_subprocess_exec(
            "stdbuf",
            "-oL",
            "rpcclient",
            f"ncacn_ip_tcp:{ip}[{level}]",
            "-U",
            f"{user}%{password}",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        return cls(proc)

    def send(self, line: str) -> None:
        """One command; wait for its effect before the next (rpcclient polls
        stdin before reading an already-buffered line, delaying it ~5 s)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")

    async def expect(self, needle: str, deadline: float = 10.0) -> str:
        """Read output lines until one contains `needle`; returns it."""
        assert self.proc.stdout is not None
        end = time.monotonic() + deadline
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{needle!r} not seen; output so far: {self.lines}")
            raw = await asyncio.wait_for(self.proc.stdout.readline(), left)
            if not raw:
                raise EOFError(f"rpcclient exited; output: {self.lines}")
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            if needle in line:
                return line

    async def close(self) -> int:
        """Close stdin, collect the remaining output into `lines`, return the exit code."""
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        assert self.proc.stdout is not None
        try:
            rest = await asyncio.wait_for(self.proc.stdout.read(), 10)
            self.lines += rest.decode(errors="replace").splitlines()
            return await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            return await self.proc.wait()
