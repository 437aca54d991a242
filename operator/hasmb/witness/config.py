"""The `witness:` block of the hasmb-smbd config (contract 3) as dataclasses.

```yaml
witness:
  listen: "0.0.0.0:5050"
  endpointMapperPort: 135          # 0 disables the endpoint mapper
  registrationTimeout: 120         # seconds a registration lives without AsyncNotify
  node: node-a                     # this witness's node: its own interfaces are not
                                   # offered for registration (MS-SWN 3.1.4.1)
  interfaces: [{name: SVM1, ipv4: 10.96.0.10, node: node-a, state: available}]
```
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_STATES = ("available", "unavailable", "unknown")


class WitnessConfigError(ValueError):
    pass


@dataclass
class WitnessInterfaceConfig:
    name: str
    ipv4: str | None = None
    ipv6: str | None = None
    node: str = ""
    state: str = "available"

    def __post_init__(self) -> None:
        if self.state not in _STATES:
            raise WitnessConfigError(f"interface state must be one of {_STATES}: {self.state}")
        if self.ipv4 is None and self.ipv6 is None:
            raise WitnessConfigError(f"interface {self.name} has neither ipv4 nor ipv6")
        if self.ipv4 is not None and ipaddress.ip_address(self.ipv4).version != 4:
            raise WitnessConfigError(f"not an IPv4 address: {self.ipv4}")
        if self.ipv6 is not None and ipaddress.ip_address(self.ipv6).version != 6:
            raise WitnessConfigError(f"not an IPv6 address: {self.ipv6}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WitnessInterfaceConfig:
        return cls(
            name=str(d["name"]),
            ipv4=d.get("ipv4") or None,
            ipv6=d.get("ipv6") or None,
            node=str(d.get("node") or ""),
            state=str(d.get("state") or "available"),
        )

    def addresses(self) -> list[str]:
        return [a for a in (self.ipv4, self.ipv6) if a is not None]


@dataclass
class WitnessConfig:
    listen: str = "0.0.0.0:5050"
    endpoint_mapper_port: int = 135
    interfaces: list[WitnessInterfaceConfig] = field(default_factory=list)
    registration_timeout: float = 120.0
    node: str = ""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WitnessConfig:
        return cls(
            listen=str(d.get("listen") or "0.0.0.0:5050"),
            endpoint_mapper_port=int(d.get("endpointMapperPort", 135)),
            interfaces=[WitnessInterfaceConfig.from_dict(i) for i in d.get("interfaces") or []],
            registration_timeout=float(d.get("registrationTimeout", 120.0)),
            node=str(d.get("node") or ""),
        )

    @classmethod
    def coerce(cls, obj: object) -> WitnessConfig:
        """From the YAML mapping, or from any object with the same attributes in
        snake_case (e.g. hasmb.smb.config's witness dataclass; "" means unset)."""
        if isinstance(obj, Mapping):
            return cls.from_dict(obj)
        ifaces = [
            WitnessInterfaceConfig(
                name=str(getattr(i, "name", "")),
                ipv4=getattr(i, "ipv4", None) or None,
                ipv6=getattr(i, "ipv6", None) or None,
                node=str(getattr(i, "node", "") or ""),
                state=str(getattr(i, "state", "") or "available"),
            )
            for i in getattr(obj, "interfaces", []) or []
        ]
        return cls(
            listen=str(getattr(obj, "listen", "") or "0.0.0.0:5050"),
            endpoint_mapper_port=int(getattr(obj, "endpoint_mapper_port", 135)),
            interfaces=ifaces,
            registration_timeout=float(getattr(obj, "registration_timeout", 120.0)),
            node=str(getattr(obj, "node", "") or ""),
        )

    def is_local(self, i: WitnessInterfaceConfig) -> bool:
        """Is the interface hosted where this witness runs?  By node name when
        `node` is configured, else by the listen address."""
        if self.node:
            return i.node == self.node
        return self.host in i.addresses()

    @property
    def host(self) -> str:
        return split_host_port(self.listen)[0]

    @property
    def port(self) -> int:
        return split_host_port(self.listen)[1]


def split_host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise WitnessConfigError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)
