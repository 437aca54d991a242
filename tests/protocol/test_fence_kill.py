"""The kernel's end of the fence's window (hasmb.smb.fence.KillSwitch).

A child process holds a fence, passes the check of a mutation and is frozen by
SIGSTOP before it makes the system call -- the one window the check cannot close.
Thawed after the deadline, it must die of SIGALRM before the call: the marker file
it would write stays absent. Thawed before the deadline, it writes and lives on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import os, sys, time
from hasmb.smb.fence import Fence, KillSwitch, now
marker, valid = sys.argv[1], float(sys.argv[2])
fence = Fence(kill_switch=KillSwitch.for_this_process())
fence.hold(now() + valid, "test")
with fence.mutation("WRITE"):
    print("checked", flush=True)   # the parent freezes us here, inside the window
    sys.stdin.readline()           # ... and thaws us; then the 'system call':
    fd = os.open(marker, os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b"stale block")
    os.close(fd)
print("wrote", flush=True)
time.sleep(0.5)  # the timer was disarmed: nothing fires now
print("alive", flush=True)
"""


def run_child(tmp: Path, valid: float, frozen_for: float) -> tuple[int, str, bool]:
    marker = tmp / "marker"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(marker), str(valid)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline().strip() == "checked"
    os.kill(proc.pid, signal.SIGSTOP)
    time.sleep(frozen_for)  # the length of the freeze is what is tested
    proc.stdin.write("go\n")
    proc.stdin.flush()
    os.kill(proc.pid, signal.SIGCONT)
    out, _ = proc.communicate(timeout=30)
    return proc.returncode, out, marker.exists()


def test_a_thread_frozen_between_check_and_call_dies_before_the_call(tmp_path: Path) -> None:
    code, out, wrote = run_child(tmp_path, valid=0.3, frozen_for=1.0)
    assert code == -signal.SIGALRM, (code, out)
    assert not wrote, "the frozen mutation reached the volume after its deadline"


def test_a_freeze_shorter_than_the_authority_costs_nothing(tmp_path: Path) -> None:
    code, out, wrote = run_child(tmp_path, valid=5.0, frozen_for=0.2)
    assert code == 0 and out.split() == ["wrote", "alive"], (code, out)
    assert wrote


# The same child, started as its PID namespace's init the way a container starts
# hasmb-smbd: the kernel drops a default-action signal sent to an init from inside
# its namespace, so the kill switch must refuse to run there, and hasmb.cli.pid1 must
# put the server in a process where it works.
AS_INIT = r"""
import sys
from hasmb.smb.fence import KillSwitch, KillSwitchUnavailable
try:
    KillSwitch.for_this_process()
except KillSwitchUnavailable as exc:
    print("refused:", exc, flush=True)
    sys.exit(0)
print("armed as PID 1", flush=True)
"""

STEPPED_ASIDE = "from hasmb.cli.pid1 import step_aside\nstep_aside()\n" + CHILD


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as f:
            for child in f.read().split():
                out += [int(child), *descendants(int(child))]
    return out


def test_the_kill_switch_refuses_to_run_as_pid_1() -> None:
    proc = subprocess.run(
        ["unshare", "--pid", "--fork", sys.executable, "-c", AS_INIT],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    refusal = "refused: the fence's kill switch cannot work in PID 1"
    assert proc.stdout.startswith(refusal), proc.stdout


def test_as_pid_1_the_server_steps_aside_and_the_frozen_mutation_dies(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    proc = subprocess.Popen(
        ["unshare", "--pid", "--fork", sys.executable, "-c", STEPPED_ASIDE, str(marker), "0.3"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline().strip() == "checked"
    # unshare -> the namespace's init (pid1's relay) -> the server, frozen in the window
    chain = descendants(proc.pid)
    assert len(chain) == 2, chain
    server = chain[1]
    os.kill(server, signal.SIGSTOP)
    time.sleep(1.0)  # the length of the freeze is what is tested
    proc.stdin.write("go\n")
    proc.stdin.flush()
    os.kill(server, signal.SIGCONT)
    out, _ = proc.communicate(timeout=30)
    # unshare exits as its child, the relay, did: 128 + SIGALRM, as the server died
    assert proc.returncode == 128 + signal.SIGALRM, (proc.returncode, out)
    assert not marker.exists(), "the frozen mutation reached the volume after its deadline"
