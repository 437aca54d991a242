"""Typed views of the hasmb.io/v1alpha1 resources: parsing, normalisation, validation.

Every handler works on these dataclasses, never on raw bodies, so defaults and
normalisation live in one place. The API server already enforces the schema and
CEL rules of crds/; `validate()` repeats the checks that need other objects (a
node of the pair, an IP clash) and guards against objects created before a rule
existed. Messages say what to fix.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

GROUP = "hasmb.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
EXPORT_ROOT = "/export"
VOLUMES_ROOT = "/volumes"  # spec.volumes[NAME] is mounted at /volumes/NAME
ROOT_VOLUME = "root"  # the name Shares use for spec.volume
DEFAULT_IMAGE = "hasmb:dev"

_NETBIOS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,14}$")
_SHARE_NAME_BAD = re.compile(r'[\\/:*?"<>|\[\]+=;,]')


@dataclass(frozen=True, slots=True)
class Meta:
    namespace: str
    name: str
    uid: str
    generation: int

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Meta:
        md = body.get("metadata") or {}
        return cls(
            namespace=str(md.get("namespace") or ""),
            name=str(md.get("name") or ""),
            uid=str(md.get("uid") or ""),
            generation=int(md.get("generation") or 0),
        )


def _spec(body: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = body.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def _opt_str(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


@dataclass(frozen=True, slots=True)
class HAPair:
    meta: Meta
    nodes: tuple[str, ...]
    takeover: str | None
    auto_giveback: bool
    auto_giveback_delay: float

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> HAPair:
        spec = _spec(body)
        return cls(
            meta=Meta.from_body(body),
            nodes=tuple(str(n) for n in spec.get("nodes") or ()),
            takeover=_opt_str(spec.get("takeover")),
            auto_giveback=bool(spec.get("autoGiveback", True)),
            auto_giveback_delay=float(spec.get("autoGivebackDelaySeconds", 5)),
        )

    def validate(self) -> list[str]:
        errors: list[str] = []
        if len(self.nodes) != 2:
            errors.append(f"spec.nodes must name exactly two nodes, got {len(self.nodes)}")
        elif self.nodes[0] == self.nodes[1]:
            errors.append("spec.nodes must name two different nodes")
        if self.takeover is not None and self.takeover not in self.nodes:
            errors.append(f"spec.takeover {self.takeover!r} is not one of spec.nodes")
        return errors

    def partner(self, node: str) -> str:
        if len(self.nodes) != 2 or node not in self.nodes:
            raise ValueError(f"{node!r} is not a node of pair {self.meta.name}")
        return self.nodes[1] if node == self.nodes[0] else self.nodes[0]


@dataclass(frozen=True, slots=True)
class Volume:
    claim_name: str | None
    host_path: str | None


@dataclass(frozen=True, slots=True)
class NamedVolume:
    name: str
    claim_name: str | None
    host_path: str | None


def volume_mount(name: str) -> str:
    """Where the pods mount the SVM volume a Share names."""
    return EXPORT_ROOT if name == ROOT_VOLUME else f"{VOLUMES_ROOT}/{name}"


@dataclass(frozen=True, slots=True)
class SVM:
    meta: Meta
    pair: str
    home_node: str
    relocate_to: str | None
    netbios_name: str
    image: str
    image_pull_policy: str
    users_secret: str | None
    volume: Volume
    state_store: str
    state_endpoint: str | None
    log_level: str
    volumes: tuple[NamedVolume, ...] = ()

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> SVM:
        spec = _spec(body)
        meta = Meta.from_body(body)
        vol = spec.get("volume") or {}
        store = spec.get("stateStore") or {}
        netbios = _opt_str(spec.get("netbiosName")) or meta.name.upper()[:15]
        return cls(
            meta=meta,
            pair=str(spec.get("haPair") or ""),
            home_node=str(spec.get("homeNode") or ""),
            relocate_to=_opt_str(spec.get("relocateTo")),
            netbios_name=netbios.upper(),
            image=_opt_str(spec.get("image")) or DEFAULT_IMAGE,
            image_pull_policy=_opt_str(spec.get("imagePullPolicy")) or "IfNotPresent",
            users_secret=_opt_str(spec.get("usersSecret")),
            volume=Volume(
                claim_name=_opt_str(vol.get("claimName")),
                host_path=_opt_str(vol.get("hostPath")),
            ),
            state_store=_opt_str(store.get("type")) or "configmap",
            state_endpoint=_opt_str(store.get("endpoint")),
            log_level=_opt_str(spec.get("logLevel")) or "info",
            volumes=tuple(
                NamedVolume(
                    name=str(v.get("name") or ""),
                    claim_name=_opt_str(v.get("claimName")),
                    host_path=_opt_str(v.get("hostPath")),
                )
                for v in spec.get("volumes") or ()
                if isinstance(v, Mapping)
            ),
        )

    def volume_names(self) -> set[str]:
        return {ROOT_VOLUME} | {v.name for v in self.volumes}

    def validate(self, pair: HAPair | None) -> list[str]:
        errors: list[str] = []
        if not self.pair:
            errors.append("spec.haPair is required: name the HAPair that runs this SVM")
        elif pair is None:
            errors.append(f"HAPair {self.pair!r} does not exist in namespace {self.meta.namespace}")
        if pair is not None and self.home_node not in pair.nodes:
            errors.append(
                f"spec.homeNode {self.home_node!r} is not a node of HAPair {pair.meta.name} "
                f"({', '.join(pair.nodes)})"
            )
        if pair is not None and self.relocate_to is not None and self.relocate_to not in pair.nodes:
            errors.append(
                f"spec.relocateTo {self.relocate_to!r} is not a node of HAPair {pair.meta.name}"
            )
        if not _NETBIOS_RE.match(self.netbios_name):
            errors.append(
                f"NetBIOS name {self.netbios_name!r} must be 1-15 letters, digits or '-': "
                "set spec.netbiosName"
            )
        if (self.volume.claim_name is None) == (self.volume.host_path is None):
            errors.append("spec.volume needs exactly one of claimName or hostPath")
        if self.state_store == "etcd" and not self.state_endpoint:
            errors.append("spec.stateStore.endpoint is required for type etcd")
        return errors

    def preferred_node(self) -> str:
        """The node that should own the SVM when every node is healthy."""
        return self.relocate_to or self.home_node

    @property
    def config_map_name(self) -> str:
        return f"{self.meta.name}-config"

    @property
    def state_map_name(self) -> str:
        return f"{self.meta.name}-state"

    @property
    def lease_name(self) -> str:
        return f"{self.meta.name}-owner"

    def pod_name(self, node: str) -> str:
        return f"{self.meta.name}-{node}"


def normalise_share_path(path: str) -> str | None:
    """`data`, `/data/`, `./data` -> `/data`; None when the path leaves the volume."""
    raw = path.replace("\\", "/").strip()
    if any(part == ".." for part in raw.split("/")):
        return None
    norm = posixpath.normpath("/" + raw)
    # normpath keeps a leading "//"; the volume root is "/".
    return "/" + norm.lstrip("/")


@dataclass(frozen=True, slots=True)
class Share:
    meta: Meta
    svm: str
    share_name: str
    path: str
    continuously_available: bool
    read_only: bool
    encrypt: bool
    comment: str
    volume: str = ROOT_VOLUME  # spec.volume: where the data should be
    current_volume: str | None = None  # status.volume: where it is (None: not yet recorded)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Share:
        spec = _spec(body)
        meta = Meta.from_body(body)
        return cls(
            meta=meta,
            svm=str(spec.get("svm") or ""),
            share_name=_opt_str(spec.get("shareName")) or meta.name,
            path=str(spec.get("path") or ""),
            continuously_available=bool(spec.get("continuouslyAvailable", False)),
            read_only=bool(spec.get("readOnly", False)),
            encrypt=bool(spec.get("encrypt", False)),
            comment=str(spec.get("comment") or ""),
            volume=_opt_str(spec.get("volume")) or ROOT_VOLUME,
            current_volume=_opt_str((body.get("status") or {}).get("volume")),
        )

    @property
    def serving_volume(self) -> str:
        """The volume the pods serve the share from: it changes only at a move's cutover."""
        return self.current_volume or self.volume

    def path_on(self, volume: str) -> str | None:
        rel = normalise_share_path(self.path)
        if rel is None:
            return None
        root = volume_mount(volume)
        return root if rel == "/" else root + rel

    @property
    def export_path(self) -> str | None:
        return self.path_on(self.serving_volume)

    def validate(self) -> list[str]:
        errors: list[str] = []
        if not self.path:
            errors.append("spec.path is required: a directory inside the SVM's volume")
        elif self.export_path is None:
            errors.append(
                f"spec.path {self.path!r} escapes the SVM's volume: remove the '..' segments"
            )
        if not self.share_name or _SHARE_NAME_BAD.search(self.share_name):
            errors.append(
                f'share name {self.share_name!r} may not contain \\ / : * ? " < > | [ ] + = ; ,'
            )
        if self.share_name.upper() == "IPC$":
            errors.append("share name IPC$ is reserved")
        return errors


@dataclass(frozen=True, slots=True)
class LIF:
    meta: Meta
    svm: str
    home_node: str
    migrate_to: str | None
    ip: str | None
    service_type: str
    load_balancer_ip: str | None
    external_ips: tuple[str, ...]

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> LIF:
        spec = _spec(body)
        return cls(
            meta=Meta.from_body(body),
            svm=str(spec.get("svm") or ""),
            home_node=str(spec.get("homeNode") or ""),
            migrate_to=_opt_str(spec.get("migrateTo")),
            ip=_opt_str(spec.get("ip")),
            service_type=_opt_str(spec.get("serviceType")) or "ClusterIP",
            load_balancer_ip=_opt_str(spec.get("loadBalancerIP")),
            external_ips=tuple(str(i) for i in spec.get("externalIPs") or ()),
        )

    @property
    def service_name(self) -> str:
        return f"lif-{self.meta.name}"

    def desired_node(self) -> str:
        return self.migrate_to or self.home_node

    def validate(self, pair: HAPair | None, ip_holder: str | None = None) -> list[str]:
        """`ip_holder`: the LIF that keeps spec.ip when several ask for it (`lif_ip_owner`)."""
        errors: list[str] = []
        if pair is not None:
            for field_name, node in (("homeNode", self.home_node), ("migrateTo", self.migrate_to)):
                if node is not None and node not in pair.nodes:
                    errors.append(
                        f"spec.{field_name} {node!r} is not a node of HAPair {pair.meta.name} "
                        f"({', '.join(pair.nodes)})"
                    )
        if self.ip is not None and not _is_ipv4(self.ip):
            errors.append(f"spec.ip {self.ip!r} is not an IPv4 address")
        elif self.ip is not None and ip_holder not in (None, self.meta.name):
            errors.append(
                f"spec.ip {self.ip} is already used by LIF {ip_holder}: choose another address"
            )
        return errors


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def lif_ip_owner(lifs: list[tuple[str, LIF]], allocated: Collection[str] = ()) -> dict[str, str]:
    """IP -> name of the LIF that keeps it when several ask for one.

    `lifs` holds (creationTimestamp, LIF). A LIF named in `allocated` (its Service
    already holds the address: the apiserver gave it that one) wins; otherwise the
    oldest does. creationTimestamp has 1 s resolution, so ties go to the lexically
    smaller name.
    """
    owner: dict[str, tuple[bool, str, str]] = {}
    for created, lif in lifs:
        if lif.ip is None:
            continue
        key = (lif.meta.name not in allocated, created, lif.meta.name)
        if lif.ip not in owner or key < owner[lif.ip]:
            owner[lif.ip] = key
    return {ip: name for ip, (_, _, name) in owner.items()}
