"""Turn a change of the SVM's interface list (the operator's view of its LIFs)
into witness events (MS-SWN 3.1.6): per address, an availability flip is a
RESOURCE_CHANGE, a move to another node while staying available (a planned
LIF migration / giveback) is a CLIENT_MOVE back to the same address, and an
address that appears or disappears is an IP_CHANGE."""

from __future__ import annotations

from dataclasses import dataclass, field

from hasmb.witness.config import WitnessInterfaceConfig


@dataclass
class InterfaceDiff:
    state_changes: list[tuple[str, bool]] = field(default_factory=list)  # (ip, available)
    moved: list[str] = field(default_factory=list)
    ip_changes: dict[str, bool] = field(default_factory=dict)  # ip -> online

    def __bool__(self) -> bool:
        return bool(self.state_changes or self.moved or self.ip_changes)


def _by_address(ifaces: list[WitnessInterfaceConfig]) -> dict[str, WitnessInterfaceConfig]:
    return {a: i for i in ifaces for a in i.addresses()}


def diff_interfaces(
    old: list[WitnessInterfaceConfig], new: list[WitnessInterfaceConfig]
) -> InterfaceDiff:
    before, after = _by_address(old), _by_address(new)
    d = InterfaceDiff()
    for ip, n in after.items():
        o = before.get(ip)
        if o is None:
            d.ip_changes[ip] = n.state == "available"
            continue
        was, now = o.state == "available", n.state == "available"
        if was != now:
            d.state_changes.append((ip, now))
            d.ip_changes[ip] = now
        elif now and o.node and n.node and o.node != n.node:
            d.moved.append(ip)
    for ip in before.keys() - after.keys():
        d.ip_changes[ip] = False
    return d
