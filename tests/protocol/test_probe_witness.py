"""hasmb-probe registers with the witness and obeys it, against real processes.

Node A: hasmb-smbd owning the CA share at address A, with its witness (endpoint
mapper on A:135). Node B: a forwarding standby hasmb-smbd at address B (same
port) and node B's witness (`python -m hasmb.witness`, endpoint mapper on
B:135, driven on stdin). The probe writes through A; it asks A's witness for
the interface list and registers on B's witness (the other node, MS-SWN
3.2.4.1) for A.

Standalone hasmb-smbd does not feed its witness from its own takeovers (in a
cluster hasmb.podrt does: CLIENT_MOVE to the new holder's addresses on a
planned Lease move), so the test plays that part: it asks the standby to take
over (planned) and tells B's witness `client_move B`, as PodRuntime._notify_move
does. The probe must move both handles to B (new connection, DH2C reclaim) with
no error and no lost write, and report the notification and what it did.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from hasmb.probe.ca_client import CaTarget
from hasmb.probe.runner import ProbeReport, ProbeRun, ProbeSettings
from hasmb.probe.witness_agent import WitnessSettings
from tests.protocol.test_ca_forwarding import admin, wait_until
from tests.support.net import free_port
from tests.support.smbd import PASSWORD, USER, SmbdProcess, start_smbd
from tests.support.witness_server import free_loopback_address


def port_free_on(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class WitnessProcess:
    """Node B's witness: `python -m hasmb.witness`, events fed on stdin."""

    def __init__(self, ip: str, partner: str, log: Path) -> None:
        self.log = log
        log_file = open(log, "wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hasmb.witness",
                "--netname",
                "SVM1",
                "--listen",
                f"{ip}:0",
                "--epm-port",
                "135",
                "--user",
                f"{USER}:{PASSWORD}",
                "--interface",
                f"SVM1={partner}@node-a",
                "--interface",
                f"SVM1={ip}@node-b",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
        )
        log_file.close()
        self.started = (self._line() or "").startswith("listening")

    def _line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def command(self, line: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self._line()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@dataclass
class TwoNodes:
    a: str
    b: str
    port: int
    admin_port: int
    owner: SmbdProcess
    standby: SmbdProcess
    witness_b: WitnessProcess


def _start(tmp: Path, procs: list[SmbdProcess], witnesses: list[WitnessProcess]) -> TwoNodes:
    for attempt in range(5):
        a = free_loopback_address()
        b = a.rsplit(".", 1)[0] + "." + str(int(a.rsplit(".", 1)[1]) + 1)
        if not (port_free_on(a, 135) and port_free_on(b, 135)):
            continue
        port = free_port(a)
        if not port_free_on(b, port):
            continue
        shared = tmp / f"shared-{attempt}"
        shared.mkdir()
        config = tmp / f"owner-{attempt}.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "netname": "SVM1",
                    "witness": {
                        "endpointMapperPort": 135,
                        "interfaces": [
                            {"name": "SVM1", "ipv4": a, "node": "node-a"},
                            {"name": "SVM1", "ipv4": b, "node": "node-b"},
                        ],
                    },
                }
            )
        )
        common = ["--share", f"ca={shared}:ca", "--state", f"file:{shared}/.hasmb-state"]
        common += ["--netname", "SVM1"]
        owner = start_smbd(
            tmp / f"owner-{attempt}",
            {"ca": ":ca"},
            extra=[
                *common,
                "--config",
                str(config),
                "--listen",
                f"{a}:{port}",
                "--witness-listen",
                f"{a}:0",
            ],
        )
        procs.append(owner)
        admin_port = free_port()
        standby = start_smbd(
            tmp / f"standby-{attempt}",
            {"ca": ":ca"},
            extra=[
                *common,
                "--listen",
                f"{b}:{port}",
                "--forward-to",
                f"{a}:{port}",
                "--admin-listen",
                f"127.0.0.1:{admin_port}",
                "--heartbeat-interval",
                "0.2",
            ],
        )
        procs.append(standby)
        witness_b = WitnessProcess(b, a, tmp / f"witness-b-{attempt}.log")
        witnesses.append(witness_b)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and owner.alive():
            if "endpoint mapper 135" in owner.log():
                break
            time.sleep(0.05)
        if witness_b.started and "endpoint mapper 135" in owner.log():
            return TwoNodes(a, b, port, admin_port, owner, standby, witness_b)
        for p in (owner, standby):
            p.stop()
        witness_b.stop()
    raise AssertionError("could not start two nodes with witnesses on free loopback addresses")


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[TwoNodes]:
    procs: list[SmbdProcess] = []
    witnesses: list[WitnessProcess] = []
    try:
        yield _start(tmp_path, procs, witnesses)
    finally:
        for w in witnesses:
            w.stop()
        for p in procs:
            if p.alive():
                p.proc.kill()
                p.proc.wait(10)


def probe_settings(
    host: str, port: int, mode: str = "auto", files: int = 1, **witness: Any
) -> ProbeSettings:
    """A probe writing 16 KiB blocks for as long as the test runs, witness `mode`
    with the WitnessSettings fields given (keep-alive 2 s, retry 0.2 s unless said)."""
    witness = {"keepalive": 2, "retry_interval": 0.2, **witness}
    return ProbeSettings(
        target=CaTarget(host, port, "ca", USER, PASSWORD),
        files=files,
        blocks=16,
        block_size=16 * 1024,
        duration=1e9,
        prefix=f"witness-{files}",
        reclaim_deadline=40,
        witness=WitnessSettings(mode=mode, **witness),
    )


def assert_clean(report: ProbeReport) -> dict[str, Any]:
    """No error surfaced, no acknowledged write lost; the witness part of the report."""
    assert report.errors == 0, [w.errors for w in report.workers]
    assert report.lost == 0, [w.lost for w in report.workers]
    assert report.witness is not None
    return report.witness


def moves(run: ProbeRun) -> int:
    return sum(len(w.file.moves) for w in run.workers)


@pytest.mark.parametrize("order", ["move-first", "takeover-first"])
def test_probe_follows_client_move_to_the_partner(nodes: TwoNodes, order: str) -> None:
    """move-first: the witness moves the client before the planned takeover (ONTAP's
    order): the handles leave A while A still serves and reach A through B's
    forwarder, then the takeover breaks the forwarded connections and they reclaim
    at B. takeover-first: the notification arrives once A has stepped down (the old
    path is gone; nothing serves A's address any more, so without the witness the
    probe would retry A until its reclaim deadline)."""
    run = ProbeRun(probe_settings(nodes.a, nodes.port, files=2, keepalive=5)).start()
    try:
        agent = run.witness
        wait_until(lambda: agent.status.state == "registered", "the witness registration", 20)
        # asked A's witness, registered on the other node's (B) for the address in use (A)
        assert (agent.status.witness, agent.status.registered_for) == (nodes.b, nodes.a)
        assert agent.status.net_name == "SVM1" and agent.status.version == "V2"
        assert all(w.report.persistent for w in run.workers)
        wait_until(lambda: run.writes() > 50, "writes through A", 20)
        wait_until(
            lambda: admin(nodes.admin_port, "/status")["mirroredOpens"] == 2, "mirrored handles", 20
        )

        # a RESOURCE_CHANGE for the address in use: drop and reconnect in place at once
        assert nodes.witness_b.command(f"interface_state {nodes.a} down") == "delivered 1"
        wait_until(lambda: moves(run) == 2, "the in-place reconnect", 20)
        assert all(w.file.target.host == nodes.a for w in run.workers)
        assert nodes.witness_b.command(f"interface_state {nodes.a} up") == "delivered 1"

        if order == "move-first":
            assert nodes.witness_b.command(f"client_move {nodes.b}") == "delivered 1"
            wait_until(lambda: moves(run) == 4, "both handles reclaimed through B", 20)
            assert admin(nodes.admin_port, "/status")["forwarded"] == 2
            assert nodes.owner.alive()
            writes = run.writes()
            wait_until(lambda: run.writes() > writes + 50, "writes through B's forwarder", 20)
            admin(nodes.admin_port, "/takeover", "POST")
            wait_until(
                lambda: admin(nodes.admin_port, "/status")["role"] == "owner", "takeover", 20
            )
        else:
            admin(nodes.admin_port, "/takeover", "POST")
            wait_until(
                lambda: admin(nodes.admin_port, "/status")["role"] == "owner", "takeover", 20
            )
            assert nodes.witness_b.command(f"client_move {nodes.b}") == "delivered 1"
            wait_until(lambda: moves(run) == 4, "both handles reclaimed at B", 20)
        assert all(w.file.target.host == nodes.b for w in run.workers)
        writes = run.writes()
        wait_until(lambda: run.writes() > writes + 50, "writes through B, now the owner", 20)
        assert all(w.file.connected_host == nodes.b for w in run.workers)
        # registered again, now for B
        wait_until(
            lambda: agent.status.registered_for == nodes.b and agent.status.state == "registered",
            "the registration for B",
            20,
        )
    finally:
        report = run.stop(timeout=60)
    w = assert_clean(report)
    types = [(e["type"], e["action"]) for e in w["events"]]
    assert types == [
        ("RESOURCE_CHANGE", f"reconnect to {nodes.a}"),
        ("RESOURCE_CHANGE", None),
        ("CLIENT_MOVE", f"move to {nodes.b}"),
    ], types
    assert w["received"] == 3 and w["acted_on"] == 2 and w["handles_moved"] == 4
    move = w["events"][2]
    assert len(move["handles_back"]) == 2 and max(move["handles_back"]) < 10, move
    assert w["registrations"] >= 2 and w["state"] == "registered"
    reasons = [s["reason"] for wr in report.workers for s in wr.stalls]
    if order == "move-first":
        # left A before it failed: the wait the move imposed on the I/O is a stall too
        assert sum("witness CLIENT_MOVE" in r for r in reasons) == 2, reasons
    assert "took over at epoch" in nodes.standby.log()
    print(
        f"\n{order}: notify->handle back (s) {move['handles_back']}, "
        f"in-place reconnect {w['events'][0]['handles_back']}, stalls (s) {report.stall_seconds}"
    )


@pytest.mark.parametrize("how", ["exit", "freeze"])
def test_probe_registers_again_when_its_witness_dies(nodes: TwoNodes, how: str) -> None:
    """exit: the witness connection closes; freeze (SIGSTOP, a node cut off): no
    keep-alive answer within 2 x 2 s + 1 s."""
    run = ProbeRun(probe_settings(nodes.a, nodes.port)).start()
    try:
        agent = run.witness
        wait_until(lambda: agent.status.witness == nodes.b, "registration on B", 20)
        wait_until(lambda: run.writes() > 20, "writes", 20)
        lost_at = time.monotonic()
        if how == "exit":
            nodes.witness_b.stop()
        else:
            nodes.witness_b.proc.send_signal(signal.SIGSTOP)
        # no other node is left: the witness that listed the interfaces (A) takes it
        wait_until(
            lambda: agent.status.state == "registered" and agent.status.witness == nodes.a,
            "registration on A",
            20,
        )
        print(f"\nwitness {how}: registered again in {time.monotonic() - lost_at:.2f} s")
        writes = run.writes()
        wait_until(lambda: run.writes() > writes + 20, "writes after the witness loss", 20)
    finally:
        report = run.stop(timeout=60)
        nodes.witness_b.proc.send_signal(signal.SIGCONT)
    w = assert_clean(report)
    assert w["registrations"] == 2 and w["failures"] >= 1
    assert any(f"witness {nodes.b} lost" in e for e in w["errors"]), w
    assert not any(s["reason"] for w in report.workers for s in w.stalls), "I/O was disturbed"


def test_probe_without_a_witness_keeps_working_and_says_so(tmp_path: Path) -> None:
    ip = free_loopback_address()
    smbd = start_smbd(tmp_path / "nowitness", {"ca": ":ca"}, extra=["--listen", f"{ip}:0"])
    try:
        run = ProbeRun(probe_settings(ip, smbd.port, mode="on")).start()
        try:
            wait_until(lambda: run.witness.status.failures >= 2, "failed registrations", 20)
            writes = run.writes()
            wait_until(lambda: run.writes() > writes + 20, "writes without a witness", 20)
            assert run.witness.status.state in ("unreachable", "registering")
        finally:
            report = run.stop(timeout=60)
    finally:
        smbd.stop()
    w = assert_clean(report)
    assert w["registrations"] == 0 and w["received"] == 0
    assert "registration for" in w["errors"][0]
    assert all(w.persistent for w in report.workers)


def test_the_witness_cuts_short_a_request_hung_on_a_frozen_owner(nodes: TwoNodes) -> None:
    """Node A hangs (SIGSTOP: its kernel still completes TCP handshakes, nothing
    answers). Without a witness the probe's write would wait its request timeout
    (5 s) and each reconnection to A would hang as long. B takes over (as the
    operator decides), B's witness reports A unavailable and, since nothing will
    serve A's address here (in a cluster the LIF moves), where to go: the probe
    drops the hung request and the hung reconnection at once and reclaims at B."""
    settings = probe_settings(nodes.a, nodes.port, files=2, keepalive=5)
    run = ProbeRun(settings).start()
    try:
        agent = run.witness
        wait_until(lambda: agent.status.witness == nodes.b, "registration on B", 20)
        wait_until(lambda: run.writes() > 50, "writes through A", 20)
        wait_until(
            lambda: admin(nodes.admin_port, "/status")["mirroredOpens"] == 2, "mirrored handles", 20
        )
        nodes.owner.proc.send_signal(signal.SIGSTOP)
        frozen = time.monotonic()
        wait_until(lambda: run.current_stall() > 0.5, "the probe's I/O to hang", 10)
        admin(nodes.admin_port, "/takeover", "POST")
        wait_until(lambda: admin(nodes.admin_port, "/status")["role"] == "owner", "takeover", 20)
        assert nodes.witness_b.command(f"interface_state {nodes.a} down") == "delivered 1"
        assert nodes.witness_b.command(f"client_move {nodes.b}") == "delivered 1"
        notified = time.monotonic()
        wait_until(
            lambda: all(w.file.connected_host == nodes.b for w in run.workers),
            "both handles at B",
            20,
        )
        back = time.monotonic()
        writes = run.writes()
        wait_until(lambda: run.writes() > writes + 50, "writes through B", 20)
    finally:
        report = run.stop(timeout=60)
        nodes.owner.proc.send_signal(signal.SIGCONT)
    assert assert_clean(report)["acted_on"] == 2
    worst = max(report.stall_seconds)
    # the hung write gave up long before its own timeout would have fired
    assert worst < settings.request_timeout, report.stall_seconds
    assert back - notified < 2.0, back - notified
    print(
        f"\nfrozen owner: hung {notified - frozen:.2f} s until the notifications, handles at B "
        f"{back - notified:.3f} s after them; worst stall {worst:.2f} s "
        f"(request timeout {settings.request_timeout:.0f} s)"
    )
