"""The witness next to hasmb-smbd (issue 5), started through
hasmb.witness.smbd.witness_for_smbd from the `witness:` config block or
`--witness-listen`.

In a pod the operator renders the SVM's LIFs as the interfaces (IP, current
node, availability) and this pod's node is the witness's own node, so the
interfaces on it are not offered for registration (MS-SWN 3.1.4.1: a client
registers with the witness of a node it is *not* connected through).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from hasmb.smb.config import ShareConfig, SmbdConfig
from hasmb.witness.config import WitnessConfig, WitnessConfigError, WitnessInterfaceConfig
from hasmb.witness.service import WitnessService
from hasmb.witness.smbd import witness_for_smbd

log = logging.getLogger("hasmb.podrt.witness")


def witness_interfaces(cfg: SmbdConfig) -> list[WitnessInterfaceConfig]:
    """The config's interfaces the witness can announce (a LIF without an IP yet is left out)."""
    out = []
    for i in cfg.witness.interfaces:
        if not (i.ipv4 or i.ipv6):
            continue
        try:
            out.append(
                WitnessInterfaceConfig(
                    i.name or cfg.netname,
                    ipv4=i.ipv4 or None,
                    ipv6=i.ipv6 or None,
                    node=i.node,
                    state=i.state or "available",
                )
            )
        except (WitnessConfigError, ValueError) as exc:
            log.warning("witness interface %s ignored: %s", i.name, exc)
    return out


def announced(
    rendered: list[WitnessInterfaceConfig], down: set[str]
) -> tuple[list[WitnessInterfaceConfig], set[str]]:
    """The operator's interfaces as the witness should announce them, with those still
    on a node in `down` (this pod saw it stop serving and said so) kept unavailable,
    and the nodes still to mask. A rendering from before a LIF's failover must not
    tell clients to reconnect through an address that still leads to the failed pod
    (a frozen process's kernel accepts the connection, and the client waits out its
    timeout); a node left with no LIF has nothing to mask any more, so what the
    operator renders later (the LIF back home) counts as it is."""
    left = down & {i.node for i in rendered}
    out = [dataclasses.replace(i, state="unavailable") if i.node in left else i for i in rendered]
    return out, left


@dataclass
class _SmbdView:
    """What witness_for_smbd reads of the server's config, with valid interfaces only."""

    netname: str
    listen: str
    shares: list[ShareConfig]
    witness: WitnessConfig = field(default_factory=WitnessConfig)


def smbd_witness(
    cfg: SmbdConfig, users: Mapping[str, str], listen: str | None = None, node: str = ""
) -> WitnessService | None:
    """The witness hasmb-smbd runs (None when neither `listen` nor witness.listen is set).

    Share names are looked up in `cfg` at each RegisterEx, so share changes
    applied to `cfg` reach the witness too.
    """
    view = _SmbdView(
        cfg.netname,
        cfg.listen,
        list(cfg.shares),
        WitnessConfig(
            listen=cfg.witness.listen,
            endpoint_mapper_port=cfg.witness.endpoint_mapper_port,
            interfaces=witness_interfaces(cfg),
            node=node,
        ),
    )
    svc = witness_for_smbd(view, users, witness_listen=listen)
    if svc is not None:
        svc.registry._share_exists = lambda name: cfg.share(name) is not None
    return svc
