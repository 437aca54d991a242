"""What hasmb-probe does with a witness notification, and where it registers.

Pure decisions, no I/O (hasmb.probe.witness_agent does the RPC and hands the
resulting action to every open handle):

- CLIENT_MOVE / SHARE_MOVE (an IPADDR_INFO_LIST, MS-SWN 2.2.2.3): reclaim the
  handle at one of the online destinations, before the old path fails. The address in use is
  kept when it is among them (a LIF that moved node stays the same address; a
  new TCP connection reaches the new node), else the first destination.
- RESOURCE_CHANGE "unavailable" (2.2.2.1) naming the address in use (or the
  net name): drop the connection at once and reclaim at the same address
  (the LIF fails over to the partner; waiting for a TCP timeout is the stall
  the witness exists to avoid). "available" naming it: a reconnection attempt
  in progress to it is started again (it may be stuck on the path that failed:
  a frozen server's kernel still accepts); a live connection is left alone.
- IP_CHANGE: if the address in use went offline, move to an online one.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from hasmb.witness.client import InterfaceInfo, WitnessNotification
from hasmb.witness.messages import (
    CLIENT_MOVE_NOTIFICATION,
    IF_WITNESS,
    IP_CHANGE_NOTIFICATION,
    RESOURCE_CHANGE_NOTIFICATION,
    RESOURCE_STATE_UNAVAILABLE,
    SHARE_MOVE_NOTIFICATION,
    STATE_AVAILABLE,
)

TYPE_NAMES = {
    RESOURCE_CHANGE_NOTIFICATION: "RESOURCE_CHANGE",
    CLIENT_MOVE_NOTIFICATION: "CLIENT_MOVE",
    SHARE_MOVE_NOTIFICATION: "SHARE_MOVE",
    IP_CHANGE_NOTIFICATION: "IP_CHANGE",
}


@dataclass(frozen=True)
class WitnessAction:
    host: str  # where the handle must be reclaimed
    abort: bool  # close the current connection now instead of after the next reply
    reason: str
    retry: bool = False  # only restart a reconnection attempt in progress to host


def same_address(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a.lower() == b.lower()


def type_name(message_type: int) -> str:
    return TYPE_NAMES.get(message_type, f"type {message_type}")


def decide(note: WitnessNotification, connected: str, net_name: str = "") -> WitnessAction | None:
    """The action a notification asks of a client connected to `connected`, or None."""
    kind = note.message_type
    if kind in (CLIENT_MOVE_NOTIFICATION, SHARE_MOVE_NOTIFICATION):
        targets = note.move_targets()
        if not targets:
            return None
        here = [t for t in targets if same_address(t, connected)]
        return WitnessAction((here or targets)[0], False, f"{type_name(kind)} to {targets}")
    if kind == RESOURCE_CHANGE_NOTIFICATION:
        back: WitnessAction | None = None
        for change in note.resource_changes:
            named = same_address(change.name, connected) or bool(
                net_name and change.name.lower() == net_name.lower()
            )
            if not named:
                continue
            if change.change_type == RESOURCE_STATE_UNAVAILABLE:
                return WitnessAction(connected, True, f"RESOURCE_CHANGE {change.name} unavailable")
            back = WitnessAction(connected, False, f"RESOURCE_CHANGE {change.name} available", True)
        return back
    if kind == IP_CHANGE_NOTIFICATION:
        addrs = [a for lst in note.ip_lists for a in lst]
        if not any(same_address(a.address, connected) and not a.online for a in addrs):
            return None
        online = [a.address for a in addrs if a.online]
        if not online:
            return WitnessAction(connected, True, f"IP_CHANGE {connected} offline")
        return WitnessAction(online[0], True, f"IP_CHANGE {connected} offline")
    return None


def registration_candidates(
    interfaces: list[InterfaceInfo], connected: str, discovered_at: str
) -> list[str]:
    """Witness addresses to try, best first (MS-SWN 3.2.4.1): available interfaces
    flagged as witness interfaces that are not the address the SMB connection uses;
    as a last resort the witness that answered GetInterfaceList (it still delivers
    planned CLIENT_MOVEs, though it fails together with the node we use)."""
    out: list[str] = []
    for i in interfaces:
        addr = i.ipv4 or i.ipv6
        if addr is None or not i.flags & IF_WITNESS or i.state != STATE_AVAILABLE:
            continue
        if same_address(addr, connected) or addr in out:
            continue
        out.append(addr)
    if discovered_at not in out:
        out.append(discovered_at)
    return out


def net_name_for(interfaces: list[InterfaceInfo], connected: str) -> str | None:
    """The group (net) name of the interface the SMB connection uses, else the first."""
    for i in interfaces:
        if connected in (i.ipv4, i.ipv6):
            return i.group_name
    return interfaces[0].group_name if interfaces else None
