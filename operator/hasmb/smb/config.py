"""hasmb-smbd configuration (contract 3): YAML file, users directory, CLI overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(Exception):
    pass


@dataclass(slots=True)
class ShareConfig:
    name: str
    path: str
    continuously_available: bool = False
    read_only: bool = False
    encrypt: bool = False
    comment: str = ""
    guest_ok: bool = False


@dataclass(slots=True)
class InterfaceConfig:
    name: str
    ipv4: str = ""
    ipv6: str = ""
    node: str = ""
    state: str = "available"


@dataclass(slots=True)
class WitnessConfig:
    listen: str = ""
    endpoint_mapper_port: int = 135
    interfaces: list[InterfaceConfig] = field(default_factory=list)


@dataclass(slots=True)
class SmbdConfig:
    netname: str = "HASMB"
    listen: str = "0.0.0.0:445"
    shares: list[ShareConfig] = field(default_factory=list)
    users: dict[str, str] = field(default_factory=dict)
    users_dir: str = ""
    state: str = ""
    log_level: str = "info"
    witness: WitnessConfig = field(default_factory=WitnessConfig)
    metrics_listen: str = ""
    owner_epoch: int = 0  # ownerEpoch: epoch decided by the cluster's ownership record (0 = +1)
    forward_to: str = ""  # forwardTo: HOST:PORT of the owner while this server is not it
    standby: bool = False  # standby: follow the store, serve only after a takeover
    admin_listen: str = ""  # adminListen: HOST:PORT of GET /status, /metrics, POST /takeover
    # pairListen: HOST:PORT of this server's pair channel (hasmb.smb.pair; in pods
    # 0.0.0.0:hasmb.contract.PAIR_PORT by default); partner: the partner's pair
    # channel (standalone)
    pair_listen: str = ""
    partner: str = ""

    def listen_host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"listen must be HOST:PORT, got {self.listen!r}")
        return host.strip("[]"), int(port)

    def all_users(self) -> dict[str, str]:
        """Users from the config and flags, plus the Secret-mounted directory."""
        users = dict(self.users)
        if self.users_dir:
            for p in sorted(Path(self.users_dir).iterdir()):
                if p.is_file() and not p.name.startswith("."):
                    users[p.name] = p.read_text().rstrip("\r\n")
        return users

    def share(self, name: str) -> ShareConfig | None:
        for s in self.shares:
            if s.name.lower() == name.lower():
                return s
        return None


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str):
        return v.lower() in ("1", "true", "yes", "on")
    return bool(v)


def parse_share_flag(spec: str) -> ShareConfig:
    """`NAME=PATH[:ca]` from the command line."""
    name, eq, rest = spec.partition("=")
    if not eq or not name or not rest:
        raise ConfigError(f"--share must be NAME=PATH[:ca], got {spec!r}")
    ca = False
    if rest.endswith(":ca"):
        rest, ca = rest[:-3], True
    return ShareConfig(name=name, path=rest, continuously_available=ca)


def parse_user_flag(spec: str) -> tuple[str, str]:
    name, colon, password = spec.partition(":")
    if not colon or not name:
        raise ConfigError(f"--user must be NAME:PASSWORD, got {spec!r}")
    return name, password


def from_mapping(data: dict[str, Any]) -> SmbdConfig:
    cfg = SmbdConfig()
    if "netname" in data:
        cfg.netname = str(data["netname"])
    if "listen" in data:
        cfg.listen = str(data["listen"])
    for s in data.get("shares") or []:
        if "name" not in s or "path" not in s:
            raise ConfigError(f"share needs name and path: {s!r}")
        cfg.shares.append(
            ShareConfig(
                name=str(s["name"]),
                path=str(s["path"]),
                continuously_available=_bool(s.get("continuouslyAvailable", False)),
                read_only=_bool(s.get("readOnly", False)),
                encrypt=_bool(s.get("encrypt", False)),
                comment=str(s.get("comment", "")),
                guest_ok=_bool(s.get("guestOk", False)),
            )
        )
    for u in data.get("users") or []:
        cfg.users[str(u["name"])] = str(u["password"])
    cfg.users_dir = str(data.get("usersDir") or "")
    cfg.state = str(data.get("state") or "")
    cfg.log_level = str(data.get("logLevel") or "info")
    w = data.get("witness") or {}
    cfg.witness = WitnessConfig(
        listen=str(w.get("listen") or ""),
        endpoint_mapper_port=int(w.get("endpointMapperPort", 135)),
        interfaces=[
            InterfaceConfig(
                name=str(i.get("name", "")),
                ipv4=str(i.get("ipv4", "")),
                ipv6=str(i.get("ipv6", "")),
                node=str(i.get("node", "")),
                state=str(i.get("state", "available")),
            )
            for i in (w.get("interfaces") or [])
        ],
    )
    cfg.metrics_listen = str((data.get("metrics") or {}).get("listen") or "")
    cfg.owner_epoch = int(data.get("ownerEpoch") or 0)
    cfg.forward_to = str(data.get("forwardTo") or "")
    cfg.standby = _bool(data.get("standby", False))
    cfg.admin_listen = str(data.get("adminListen") or "")
    cfg.pair_listen = str(data.get("pairListen") or "")
    cfg.partner = str(data.get("partner") or "")
    return cfg


def load_file(path: str | Path) -> SmbdConfig:
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return from_mapping(data)
