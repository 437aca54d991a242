"""Fencing and control-plane outages in the operator's pods (issues 11 and 19).

Two hasmb-smbd processes with the env of two pods, as in test_smbd_pod_runtime.py
(the test plays the kubelet; no operator runs), each reaching the apiserver through
its own relay that the test can cut (bytes vanish: a partition, or a hung apiserver
as the pods see it).
"""

from __future__ import annotations

import os
import signal
import struct
import threading
import time
from pathlib import Path

import yaml

from hasmb.probe.ca_client import CaFile
from tests.cluster import test_smbd_pod_runtime as podrt
from tests.cluster.test_smbd_pod_runtime import LEASE_SECONDS, ApiProxy, PodPair, Smbd, wait_for

pair = podrt.pair  # the two pods' fixture, shared with test_smbd_pod_runtime.py

BLOCK = 4096


def proxied(p: PodPair, name: str) -> tuple[ApiProxy, Path]:
    kc = yaml.safe_load(p.credentials.read_text())
    server = kc["clusters"][0]["cluster"]["server"]
    host, port = server.split("//", 1)[1].rsplit(":", 1)
    proxy = ApiProxy((host, int(port)))
    kc["clusters"][0]["cluster"]["server"] = f"https://{host}:{proxy.port}"
    path = p.tmp / f"{name}-kubeconfig"
    path.write_text(yaml.safe_dump(kc))
    return proxy, path


def start_paired(
    p: PodPair, a_cfg: Path | None = None, b_cfg: Path | None = None
) -> tuple[Smbd, Smbd]:
    a = p.start("node-a", kubeconfig=a_cfg)
    b = p.start("node-b", kubeconfig=b_cfg)
    wait_for(lambda: a.role() == "owner", 30, "node-a to own the SVM")

    def confirmed() -> bool:
        st = b.status()
        fence = a.status()["fence"]
        return (
            st.get("forwardTo") == f"{p.ips['node-a']}:{p.port}"
            and st["pair"]["confirms"] > 0
            and fence["source"] == "partner confirms"
        )

    wait_for(confirmed, 30, "node-b to confirm node-a over the pair channel")
    # steady state: node-b has seen no lease-mode renewal for a duration, so only its
    # promise (2 s) protects a silent owner
    wait_for(lambda: b.status()["leaseGrantSeconds"] == 0, 3 * LEASE_SECONDS, "the steady state")
    return a, b


class Writer(threading.Thread):
    """Rewrites 8 blocks with rising generations; records the longest gap between acks."""

    def __init__(self, f: CaFile) -> None:
        super().__init__(daemon=True)
        self.f = f
        self.acked: dict[int, int] = {}
        self.gen = 0
        self.worst_gap = 0.0
        self.go = threading.Event()
        self.idle = threading.Event()
        self.stopping = False
        self.error: BaseException | None = None

    def run(self) -> None:
        last = time.monotonic()
        try:
            while not self.stopping:
                if not self.go.is_set():
                    self.idle.set()
                    self.go.wait(0.1)
                    last = time.monotonic()
                    continue
                self.idle.clear()
                self.gen += 1
                index = self.gen % 8
                data = struct.pack("<II", index, self.gen) + bytes(BLOCK - 8)
                assert self.f.write(index * BLOCK, data) == BLOCK
                self.acked[index] = self.gen
                t = time.monotonic()
                self.worst_gap = max(self.worst_gap, t - last)
                last = t
        except BaseException as exc:
            self.error = exc
            self.idle.set()

    def pause(self) -> None:
        self.go.clear()
        assert self.idle.wait(60), "the writer stayed busy"
        assert self.error is None, repr(self.error)

    def lost(self) -> list[str]:
        out = []
        for index, gen in self.acked.items():
            got_index, got = struct.unpack("<II", self.f.read(index * BLOCK, 8))
            if got_index != index or got < gen:
                out.append(f"block {index}: gen {got} < acked {gen}")
        return out


def writing(f: CaFile) -> Writer:
    assert f.open().persistent
    w = Writer(f)
    w.start()
    w.go.set()
    wait_for(lambda: w.gen > 20, 20, "the first writes")
    return w


def test_frozen_owner_is_taken_over_fast_and_never_writes_after(pair: PodPair) -> None:
    a, b = start_paired(pair)
    w = writing(pair.client("node-b", "frozen.vhdx"))  # through the forwarding standby
    epoch = int(pair.lease()["metadata"]["annotations"]["hasmb.io/epoch"])
    os.kill(a.proc.pid, signal.SIGSTOP)
    frozen = time.monotonic()
    try:
        wait_for(lambda: b.role() == "owner", 15, "the takeover")
        took = time.monotonic() - frozen
        start_gen = w.gen
        wait_for(lambda: w.gen > start_gen + 50, 30, "newer writes through the new owner")
        w.pause()
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    # the thawed owner finds its fence lapsed: it self-fences, writes nothing, and stays
    # on as a standby (no exit into the kubelet's crash-loop back-off)
    wait_for(lambda: a.proc.poll() is not None or a.role() == "standby", 20, "node-a to stop")
    time.sleep(0.5)  # what a thawed process would do with a buffered WRITE, it does now
    assert not w.lost(), w.lost()
    assert "after this server's authority ended" not in a.log(), a.log()[-4000:]
    assert "fence lapsed" in a.log() or "fence revoked" in a.log(), a.log()[-4000:]
    assert a.proc.poll() is None and a.role() == "standby", a.log()[-4000:]
    assert "a standby again, no exit" in a.log(), a.log()[-4000:]
    # ... and confirms the new owner, as a standby should
    wait_for(lambda: b.status()["fence"]["source"] == "partner confirms", 15, "b confirmed")
    lease = pair.lease()
    assert lease["metadata"]["annotations"]["hasmb.io/reason"] == "PartnerFailover", lease
    assert int(lease["metadata"]["annotations"]["hasmb.io/epoch"]) == epoch + 1
    print(f"frozen owner: the partner served {took:.2f} s after the freeze")
    # the promise (2 s) plus a heartbeat, the CAS and the warm takeover; slack for the
    # shared machine
    assert took < 3.5, took


def test_owner_serves_through_an_api_outage_while_its_partner_confirms(pair: PodPair) -> None:
    pa, a_cfg = proxied(pair, "a")
    pb, b_cfg = proxied(pair, "b")
    try:
        a, b = start_paired(pair, a_cfg, b_cfg)
        w = writing(pair.client("node-a", "outage.mdf"))
        before = pair.lease()
        w.worst_gap = 0.0
        pa.cut.set()
        pb.cut.set()
        cut = time.monotonic()
        # three lease durations without the apiserver: without the partner's
        # confirmations the owner would have fenced itself 4 s in
        while time.monotonic() - cut < 3 * LEASE_SECONDS:
            assert a.role() == "owner" and b.role() == "standby"
            time.sleep(0.5)
        gap_during = w.worst_gap
        pa.cut.clear()
        pb.cut.clear()
        gen = w.gen
        wait_for(lambda: w.gen > gen + 20, 20, "writes after the outage")
        w.pause()
        assert not w.lost(), w.lost()
        after = pair.lease()
        assert after["spec"]["holderIdentity"] == "node-a"
        assert (
            after["metadata"]["annotations"]["hasmb.io/epoch"]
            == (before["metadata"]["annotations"]["hasmb.io/epoch"])
        )
        assert a.proc.poll() is None and "self-fencing" not in a.log()
        print(f"API outage of {3 * LEASE_SECONDS} s: worst gap between writes {gap_during:.3f} s")
        assert gap_during < 1.0, gap_during
    finally:
        pa.close()
        pb.close()


def test_owner_cut_from_the_api_alone_keeps_serving_and_nobody_takes_over(
    pair: PodPair,
) -> None:
    pa, a_cfg = proxied(pair, "a")
    try:
        a, b = start_paired(pair, a_cfg)
        w = writing(pair.client("node-b", "cut.vhdx"))
        w.worst_gap = 0.0
        pa.cut.set()
        cut = time.monotonic()
        while time.monotonic() - cut < 2 * LEASE_SECONDS:
            assert a.role() == "owner" and b.role() == "standby"
            time.sleep(0.5)
        assert pair.lease()["spec"]["holderIdentity"] == "node-a"
        pa.cut.clear()
        w.pause()
        assert not w.lost(), w.lost()
        print(f"owner cut from the API alone: worst gap {w.worst_gap:.3f} s")
        assert w.worst_gap < 1.0, w.worst_gap
    finally:
        pa.close()


def test_api_and_partner_both_lost_the_owner_fences_within_the_promise(pair: PodPair) -> None:
    pa, a_cfg = proxied(pair, "a")
    try:
        a, b = start_paired(pair, a_cfg)
        pa.cut.set()
        b.proc.kill()
        gone = time.monotonic()
        wait_for(lambda: "fence lapsed" in a.log(), 15, "node-a's fence to lapse")
        fenced = time.monotonic() - gone
        # then it tries the Lease once (1 s: is someone else the owner?) and exits
        wait_for(lambda: a.proc.poll() is not None, 15, "node-a to exit")
        exited = time.monotonic() - gone
        assert a.proc.returncode == 3, a.log()[-3000:]
        print(
            f"API and partner lost: the owner stopped mutating {fenced:.2f} s after the "
            f"partner died, exited after {exited:.2f} s"
        )
        # the last confirmation's grant (1.95 s); never the lease's 4 s
        assert fenced < 3.5, fenced
    finally:
        pa.close()


def test_owner_frozen_right_after_a_planned_move_is_taken_over_within_the_promise(
    pair: PodPair,
) -> None:
    """After a planned move the new owner arms from its partner's confirmation, not
    from a 4 s lease grant, so a freeze right after the move costs the pair's 2 s
    promise, not the grant: the old owner, a standby again, confirms the new one."""
    a, b = start_paired(pair)
    w = writing(pair.client("node-a", "moved.vhdx"))  # through the standby-to-be
    epoch = pair.move_lease("node-b", "PlannedTakeover")
    wait_for(lambda: b.role() == "owner", 15, "node-b to own after the planned move")
    fence = b.status()["fence"]
    assert fence["source"] == "partner confirms", fence
    assert "fence armed (partner confirms)" in b.log(), b.log()[-3000:]
    start_gen = w.gen
    wait_for(lambda: w.gen > start_gen + 10, 20, "writes through the new owner")
    os.kill(b.proc.pid, signal.SIGSTOP)
    frozen = time.monotonic()
    try:
        wait_for(lambda: a.role() == "owner", 15, "node-a to take over from the frozen node-b")
        took = time.monotonic() - frozen
        start_gen = w.gen
        wait_for(lambda: w.gen > start_gen + 20, 30, "newer writes through node-a")
        w.pause()
    finally:
        os.kill(b.proc.pid, signal.SIGCONT)
    wait_for(lambda: b.proc.poll() is not None or b.role() == "standby", 20, "node-b to stop")
    time.sleep(0.5)  # what the thawed process would do with a buffered WRITE, it does now
    assert not w.lost(), w.lost()
    lease = pair.lease()
    assert int(lease["metadata"]["annotations"]["hasmb.io/epoch"]) == epoch + 1, lease
    print(f"owner frozen after a planned move: the partner served {took:.2f} s after the freeze")
    # without arming from the partner it would have waited out the 4 s lease grant
    assert took < 3.5, took
