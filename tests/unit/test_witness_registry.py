"""Witness registration rules (MS-SWN 3.1.4) and notification queueing, without RPC."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from hasmb.witness.config import WitnessConfig, WitnessInterfaceConfig
from hasmb.witness.messages import (
    CLIENT_MOVE_NOTIFICATION,
    ERROR_INVALID_PARAMETER,
    ERROR_INVALID_STATE,
    ERROR_NOT_FOUND,
    ERROR_REVISION_MISMATCH,
    ERROR_TIMEOUT,
    REGISTER_IP_NOTIFICATION,
    RESOURCE_CHANGE_NOTIFICATION,
    WITNESS_V1,
    WITNESS_V2,
    IpAddrInfo,
    move,
    parse_ip_lists,
    parse_resource_changes,
    resource_change,
)
from hasmb.witness.registry import WitnessError, WitnessRegistry

IFACES = [
    WitnessInterfaceConfig("SVM1", ipv4="10.0.0.1", node="a"),
    WitnessInterfaceConfig("SVM1", ipv4="10.0.0.2", ipv6="fd00::2", node="b"),
]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def registry(clock: Clock | None = None) -> WitnessRegistry:
    return WitnessRegistry(
        "SVM1", lambda: IFACES, lambda s: s.lower() == "data", 60.0, clock or Clock()
    )


@pytest.mark.parametrize(
    ("version", "ex", "net", "ip", "client", "code"),
    [
        (0, False, "SVM1", "10.0.0.1", "c", ERROR_REVISION_MISMATCH),
        (WITNESS_V2, False, "SVM1", "10.0.0.1", "c", ERROR_REVISION_MISMATCH),
        (WITNESS_V1, True, "SVM1", "10.0.0.1", "c", ERROR_REVISION_MISMATCH),
        (0xFFFFFFFF, True, None, None, None, ERROR_REVISION_MISMATCH),
        (WITNESS_V1, False, "", "", "", ERROR_INVALID_PARAMETER),
        (WITNESS_V1, False, None, None, "c", ERROR_INVALID_PARAMETER),
        (WITNESS_V1, False, "127.0.0.1", None, "c", ERROR_INVALID_PARAMETER),
        (WITNESS_V1, False, "OTHER", "10.0.0.1", "c", ERROR_INVALID_PARAMETER),
        (WITNESS_V1, False, "SVM1", "not-an-ip", "c", ERROR_INVALID_PARAMETER),
    ],
)
def test_register_errors(
    version: int, ex: bool, net: str | None, ip: str | None, client: str | None, code: int
) -> None:
    with pytest.raises(WitnessError) as e:
        registry().register(version, net, ip, client, ex=ex)
    assert e.value.code == code


def test_register_accepts_names_case_insensitively_and_ipv6() -> None:
    reg = registry()
    a = reg.register(WITNESS_V1, "svm1", "10.0.0.1", "c")
    b = reg.register(WITNESS_V2, "SVM1.example.com", "FD00::2", "c", ex=True, share_name="DATA")
    assert a.key != b.key and len(reg) == 2
    # An address the interface list does not carry (a cluster address) is fine.
    reg.register(WITNESS_V1, "SVM1", "10.9.9.9", "c")
    with pytest.raises(WitnessError) as e:
        reg.register(WITNESS_V2, "SVM1", "10.0.0.1", "c", ex=True, share_name="nope")
    assert e.value.code == ERROR_INVALID_STATE


def test_unregister_twice_is_invalid_parameter() -> None:
    reg = registry()
    r = reg.register(WITNESS_V1, "SVM1", "10.0.0.1", "c")
    reg.unregister(r.key)
    with pytest.raises(WitnessError) as e:
        reg.unregister(r.key)
    assert e.value.code == ERROR_INVALID_PARAMETER


async def test_wait_returns_queued_and_coalesces() -> None:
    reg = registry()
    r = reg.register(WITNESS_V1, "SVM1", "10.0.0.1", "c")
    waiter = asyncio.create_task(reg.wait(r.key))
    await asyncio.sleep(0)
    assert not waiter.done()
    reg.deliver(resource_change("10.0.0.1", False), reg.matching(ips=["10.0.0.1"]))
    n = await asyncio.wait_for(waiter, 1)
    assert n.message_type == RESOURCE_CHANGE_NOTIFICATION
    assert parse_resource_changes(n.buffer, len(n.messages))[0].name == "10.0.0.1"
    # Two moves queued while nobody waits come back as one two-message response.
    for dst in ("10.0.0.2", "10.0.0.3"):
        reg.deliver(move(CLIENT_MOVE_NOTIFICATION, [IpAddrInfo(dst)]), reg.matching())
    n = await reg.wait(r.key)
    assert n.message_type == CLIENT_MOVE_NOTIFICATION and len(n.messages) == 2
    lists = parse_ip_lists(n.buffer, 2)
    assert [lst[0].address for lst in lists] == ["10.0.0.2", "10.0.0.3"]


async def test_wait_errors() -> None:
    reg = registry()
    with pytest.raises(WitnessError) as e:
        await reg.wait(uuid.uuid4())
    assert e.value.code == ERROR_NOT_FOUND
    r = reg.register(WITNESS_V2, "SVM1", "10.0.0.1", "c", ex=True, keepalive_timeout=1)
    # keep-alive is in seconds; patch it down so the test stays fast
    r.keepalive_timeout = 0.05
    with pytest.raises(WitnessError) as e:
        await reg.wait(r.key)
    assert e.value.code == ERROR_TIMEOUT
    # UnRegister completes a pending AsyncNotify with NOT_FOUND.
    r2 = reg.register(WITNESS_V1, "SVM1", "10.0.0.1", "c")
    t = asyncio.create_task(reg.wait(r2.key))
    await asyncio.sleep(0)
    reg.unregister(r2.key)
    with pytest.raises(WitnessError) as e:
        await asyncio.wait_for(t, 1)
    assert e.value.code == ERROR_NOT_FOUND


async def test_expiry_spares_registrations_with_pending_calls() -> None:
    clock = Clock()
    reg = registry(clock)
    idle = reg.register(WITNESS_V1, "SVM1", "10.0.0.1", "idle")
    busy = reg.register(WITNESS_V1, "SVM1", "10.0.0.1", "busy")
    t = asyncio.create_task(reg.wait(busy.key))
    await asyncio.sleep(0)
    clock.now += 30
    assert reg.expire() == []
    clock.now += 31
    assert [r.client_name for r in reg.expire()] == ["idle"]
    assert len(reg) == 1
    t.cancel()
    del idle


def test_matching_filters_and_rundown() -> None:
    reg = registry()
    a = reg.register(WITNESS_V1, "SVM1", "10.0.0.1", "a", owner=1)
    b = reg.register(
        WITNESS_V2,
        "SVM1",
        "10.0.0.2",
        "b",
        ex=True,
        share_name="data",
        flags=REGISTER_IP_NOTIFICATION,
        owner=2,
    )
    assert reg.matching(ips=["10.0.0.1"]) == [a]
    assert reg.matching(share="DATA") == [b]
    assert reg.matching(ip_change=True) == [b]
    assert reg.matching(client="A") == [a]
    reg.drop_owner(1)
    assert reg.registrations() == [b]


def test_config_from_dict() -> None:
    cfg = WitnessConfig.from_dict(
        {
            "listen": "0.0.0.0:5050",
            "endpointMapperPort": 1135,
            "interfaces": [
                {"name": "SVM1", "ipv4": "10.96.0.10", "node": "node-a", "state": "available"}
            ],
        }
    )
    assert (cfg.host, cfg.port, cfg.endpoint_mapper_port) == ("0.0.0.0", 5050, 1135)
    assert cfg.interfaces[0].addresses() == ["10.96.0.10"]
    with pytest.raises(ValueError):
        WitnessInterfaceConfig("x", ipv4="fd00::1")
    with pytest.raises(ValueError):
        WitnessInterfaceConfig("x", ipv4="10.0.0.1", state="sleepy")


def test_choose_witness_interface_prefers_the_other_node() -> None:
    from hasmb.witness.client import InterfaceInfo, choose_witness_interface
    from hasmb.witness.messages import IF_IPV4_VALID, IF_WITNESS, STATE_UNAVAILABLE

    a = InterfaceInfo("SVM1", WITNESS_V2, 1, "10.0.0.1", None, IF_WITNESS | IF_IPV4_VALID)
    b = InterfaceInfo("SVM1", WITNESS_V2, 1, "10.0.0.2", None, IF_WITNESS | IF_IPV4_VALID)
    down = InterfaceInfo(
        "SVM1", WITNESS_V2, STATE_UNAVAILABLE, "10.0.0.3", None, IF_WITNESS | IF_IPV4_VALID
    )
    assert choose_witness_interface([a, b], "10.0.0.1") == b
    assert choose_witness_interface([down, a], "10.0.0.9") == a
    assert choose_witness_interface([a], "10.0.0.1") == a  # single node: better than none
    assert choose_witness_interface([down], "10.0.0.1") is None


async def test_interface_list_flags_and_waiting_for_an_available_interface() -> None:
    import struct

    from hasmb.rpc.interface import Association, CallContext
    from hasmb.rpc.ndr import NdrReader
    from hasmb.witness.client import InterfaceInfo, _parse_interface
    from hasmb.witness.messages import ERROR_NO_MORE_ITEMS, IF_IPV6_VALID, IF_WITNESS
    from hasmb.witness.rpc import WitnessRpcInterface

    cfg = WitnessConfig(listen="10.0.0.1:5050", interfaces=list(IFACES))
    ctx = CallContext(Association(1, "t"), 1, 5, "alice")
    current = list(IFACES)
    rpc = WitnessRpcInterface(registry(), lambda: current, cfg.is_local)

    def parse(stub: bytes) -> list[InterfaceInfo]:
        r = NdrReader(stub)
        assert r.referent()
        n = r.u32()
        assert r.referent() and r.u32() == n
        out = [_parse_interface(r.raw(552)) for _ in range(n)]
        assert r.u32() == 0
        return out

    a, b = parse(await rpc.dispatch(0, b"", ctx))
    assert not a.flags & IF_WITNESS  # hosted here: not offered
    assert b.flags & IF_WITNESS and b.flags & IF_IPV6_VALID and b.ipv6 == "fd00::2"
    assert WitnessConfig(node="b", interfaces=list(IFACES)).is_local(IFACES[1])

    current = [WitnessInterfaceConfig("SVM1", ipv4="10.0.0.1", state="unavailable")]
    waiting = asyncio.create_task(rpc.dispatch(0, b"", ctx))
    await asyncio.sleep(0.01)
    assert not waiting.done()  # MS-SWN 3.1.4.1: waits for an available interface
    current = [WitnessInterfaceConfig("SVM1", ipv4="10.0.0.1", state="available")]
    rpc.interfaces_changed()
    (only,) = parse(await asyncio.wait_for(waiting, 1))
    assert only.state == 1

    current = []
    stub = await rpc.dispatch(0, b"", ctx)
    assert struct.unpack("<II", stub) == (0, ERROR_NO_MORE_ITEMS)
