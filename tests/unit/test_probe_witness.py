"""hasmb-probe's witness decisions and the move hand-off of a CaFile (no network)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest

from hasmb.probe.ca_client import CaFile, CaTarget, MoveRequest
from hasmb.probe.witness_actions import (
    WitnessAction,
    decide,
    net_name_for,
    registration_candidates,
)
from hasmb.probe.witness_agent import WitnessSettings
from hasmb.witness.client import InterfaceInfo, WitnessNotification
from hasmb.witness.messages import (
    CLIENT_MOVE_NOTIFICATION,
    IF_IPV4_VALID,
    IF_WITNESS,
    IP_CHANGE_NOTIFICATION,
    RESOURCE_CHANGE_NOTIFICATION,
    RESOURCE_STATE_AVAILABLE,
    RESOURCE_STATE_UNAVAILABLE,
    SHARE_MOVE_NOTIFICATION,
    STATE_AVAILABLE,
    STATE_UNAVAILABLE,
    IpAddrInfo,
    ResourceChange,
)

A, B, C = "10.0.0.1", "10.0.0.2", "10.0.0.3"


def move(kind: int, *addrs: IpAddrInfo) -> WitnessNotification:
    return WitnessNotification(kind, ip_lists=[list(addrs)])


def change(name: str, available: bool) -> WitnessNotification:
    ct = RESOURCE_STATE_AVAILABLE if available else RESOURCE_STATE_UNAVAILABLE
    return WitnessNotification(RESOURCE_CHANGE_NOTIFICATION, [ResourceChange(name, ct)])


def test_client_move_goes_to_the_first_online_destination() -> None:
    note = move(CLIENT_MOVE_NOTIFICATION, IpAddrInfo(B, online=False), IpAddrInfo(C))
    action = decide(note, A)
    assert action is not None and (action.host, action.abort) == (C, False)
    assert "CLIENT_MOVE" in action.reason


def test_client_move_keeps_the_address_in_use_when_listed() -> None:
    # a LIF that moved node: same address, the new connection reaches the new node
    action = decide(move(CLIENT_MOVE_NOTIFICATION, IpAddrInfo(B), IpAddrInfo(A)), A)
    assert action == WitnessAction(A, False, f"CLIENT_MOVE to {[B, A]}")


def test_share_move_is_a_move_and_an_empty_move_is_ignored() -> None:
    action = decide(move(SHARE_MOVE_NOTIFICATION, IpAddrInfo(B)), A)
    assert action is not None and action.host == B and not action.abort
    assert decide(move(CLIENT_MOVE_NOTIFICATION, IpAddrInfo(B, online=False)), A) is None


def test_resource_change_unavailable_for_our_address_reconnects_in_place() -> None:
    assert decide(change(A, False), A) == WitnessAction(A, True, f"RESOURCE_CHANGE {A} unavailable")
    assert decide(change("::ffff:10.0.0.1", False), A) is None  # another address family
    assert decide(change(B, False), A) is None  # someone else's address
    # back again: a reconnection stuck on the failed path starts over, nothing else
    assert decide(change(A, True), A) == WitnessAction(
        A, False, f"RESOURCE_CHANGE {A} available", retry=True
    )
    assert decide(change(B, True), A) is None


def test_resource_change_for_the_net_name() -> None:
    assert decide(change("svm1", False), A, net_name="SVM1") is not None
    assert decide(change("svm1", False), A) is None


def test_ip_change() -> None:
    note = WitnessNotification(
        IP_CHANGE_NOTIFICATION, ip_lists=[[IpAddrInfo(A, online=False), IpAddrInfo(B)]]
    )
    assert decide(note, A) == WitnessAction(B, True, f"IP_CHANGE {A} offline")
    assert decide(note, C) is None
    gone = WitnessNotification(IP_CHANGE_NOTIFICATION, ip_lists=[[IpAddrInfo(A, online=False)]])
    action = decide(gone, A)
    assert action is not None and action.host == A and action.abort


def iface(ip: str, witness: bool = True, state: int = STATE_AVAILABLE) -> InterfaceInfo:
    flags = IF_IPV4_VALID | (IF_WITNESS if witness else 0)
    return InterfaceInfo("SVM1", 0x10001, state, ip, None, flags)


def test_registration_prefers_another_nodes_witness() -> None:
    ifaces = [iface(A, witness=False), iface(B), iface(C, state=STATE_UNAVAILABLE)]
    # A is in use and local to the listing witness, C is down: B, then the lister
    assert registration_candidates(ifaces, A, A) == [B, A]
    # connected to B: B is never chosen even if flagged
    assert registration_candidates([iface(B), iface(C)], B, A) == [C, A]
    assert registration_candidates([], A, A) == [A]


def test_net_name_of_the_address_in_use() -> None:
    ifaces = [InterfaceInfo("OTHER", 1, 1, B, None, 0), InterfaceInfo("SVM1", 1, 1, A, None, 0)]
    assert net_name_for(ifaces, A) == "SVM1"
    assert net_name_for(ifaces, C) == "OTHER"
    assert net_name_for([], A) is None


def test_witness_settings_reject_an_unknown_mode() -> None:
    with pytest.raises(ValueError, match="witness mode"):
        WitnessSettings(mode="sometimes")


@dataclass
class FakeTransport:
    closed: threading.Event = field(default_factory=threading.Event)

    def close(self) -> None:
        self.closed.set()


@dataclass
class FakeConn:
    transport: FakeTransport = field(default_factory=FakeTransport)


def connected_file(host: str) -> tuple[CaFile, FakeConn]:
    f = CaFile(CaTarget(host, 445, "ca", "u", "p"), "x.bin")
    conn = FakeConn()
    f._adopt(conn, object())
    return f, conn


def test_a_move_retargets_at_the_next_operation_and_is_timed_until_the_handle_is_back() -> None:
    f, conn = connected_file(A)
    f.request_move(MoveRequest(B, "CLIENT_MOVE", requested_at=10.0, event=1))
    assert not conn.transport.closed.is_set()  # planned: the old path keeps working
    assert f.target.host == A  # nothing changes until the I/O thread takes it
    taken = f._take_move()
    assert taken is not None and f.target.host == B and f.target.port == 445
    assert f._take_move() is None
    f._moved(10.25)
    assert [(m.request.event, m.seconds) for m in f.moves] == [(1, 0.25)]


def test_a_newer_request_replaces_one_not_yet_taken() -> None:
    f, _ = connected_file(A)
    f.request_move(MoveRequest(B, "first", 1.0, 1))
    f.request_move(MoveRequest(C, "second", 2.0, 2))
    taken = f._take_move()
    assert taken is not None and taken.event == 2 and f.target.host == C


def test_a_dead_address_closes_only_a_connection_to_it() -> None:
    f, conn = connected_file(A)
    f.request_move(MoveRequest(B, "elsewhere", 1.0), dead_host=B)
    assert not conn.transport.closed.is_set()
    f.request_move(MoveRequest(A, "RESOURCE_CHANGE", 1.0), dead_host=A)
    assert conn.transport.closed.wait(5)
    assert f.connected_host == A  # the I/O thread notices and drops it itself


def test_a_reconnection_attempt_to_the_wrong_place_is_cut_short() -> None:
    f = CaFile(CaTarget(A, 445, "ca", "u", "p"), "x.bin")
    attempt = FakeConn()
    f._attempt, f._attempt_host = attempt, A  # a reclaim hanging in NEGOTIATE at A
    f.request_move(MoveRequest(A, "CLIENT_MOVE", 1.0))  # stay at A: let it run
    assert not attempt.transport.closed.is_set()
    f.request_move(MoveRequest(B, "CLIENT_MOVE", 1.0))  # go to B: A is the wrong place
    assert attempt.transport.closed.wait(5)
    f._adopt(FakeConn(), object())
    assert f._attempt is None and f.connected_host == A  # target not taken yet
