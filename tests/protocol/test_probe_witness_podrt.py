"""hasmb-probe obeys the CLIENT_MOVE that hasmb.podrt itself sends on a planned move.

Two hasmb-smbd processes run as the SVM's pods (hasmb.podrt, real apiserver:
the PodPair of tests/cluster/test_smbd_pod_runtime.py), each with its witness.
The probe writes through node-a's address, registers on node-b's witness, and
the test moves the Lease the way the operator's planned takeover does. node-b's
runtime sends CLIENT_MOVE to its own addresses while node-a hands over; the
probe must reclaim both handles at node-b with no error and no lost write.
"""

from __future__ import annotations

import time

from hasmb.probe.runner import ProbeRun
from tests.cluster.test_smbd_pod_runtime import (  # noqa: F401 -- `pair` is a fixture
    PodPair,
    pair,
    start_pair,
    wait_for,
)
from tests.protocol.test_probe_witness import assert_clean, probe_settings


def test_probe_follows_the_runtimes_client_move(pair: PodPair) -> None:  # noqa: F811
    a, b = start_pair(pair)
    ip_a, ip_b = pair.ips["node-a"], pair.ips["node-b"]
    # in a pod the witness is on 5050 behind the mapper on 135; here each has a port
    ports = ((ip_a, a.witness_port), (ip_b, b.witness_port))
    settings = probe_settings(ip_a, pair.port, files=2, ports=ports, keepalive=5)
    run = ProbeRun(settings).start()
    try:
        agent = run.witness
        wait_for(lambda: agent.status.state == "registered", 20, "the witness registration")
        assert (agent.status.witness, agent.status.registered_for) == (ip_b, ip_a)
        wait_for(lambda: run.writes() > 50, 20, "writes through node-a")
        wait_for(lambda: b.status()["mirroredOpens"] == 2, 15, "the standby's mirror")

        patched = time.monotonic()
        pair.move_lease("node-b", "PlannedTakeover")
        wait_for(
            lambda: all(w.file.moves and w.file.target.host == ip_b for w in run.workers),
            20,
            "both handles reclaimed at node-b",
        )
        back = time.monotonic() - patched
        writes = run.writes()
        wait_for(lambda: run.writes() > writes + 50, 20, "writes through node-b")
        wait_for(lambda: a.role() == "standby", 15, "node-a to hand over")
        wait_for(lambda: agent.status.registered_for == ip_b, 20, "the registration for node-b")
    finally:
        report = run.stop(timeout=60)
    w = assert_clean(report)
    moves = [e for e in w["events"] if e["type"] == "CLIENT_MOVE"]
    assert moves and moves[0]["action"] == f"move to {ip_b}", w["events"]
    assert moves[0]["detail"] == [ip_b]
    assert len(moves[0]["handles_back"]) == 2, moves[0]
    assert b.status()["role"] == "owner"
    print(
        f"\npodrt planned takeover: Lease patch -> both handles at node-b {back:.3f} s; "
        f"CLIENT_MOVE -> handles back {moves[0]['handles_back']} s; "
        f"stalls {report.stall_seconds} s; events {[(e['type'], e['action']) for e in w['events']]}"
    )
