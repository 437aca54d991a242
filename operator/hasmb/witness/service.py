"""The witness service (MS-SWN) that hasmb-smbd runs next to its SMB server.

Usage (what hasmb-smbd and the HA logic do)::

    svc = WitnessService(WitnessConfig.from_dict(cfg["witness"]), users, netname="SVM1",
                         share_exists=lambda name: name.lower() in shares)
    await svc.start()            # witness on config.listen, endpoint mapper on
                                 # config.endpoint_mapper_port (0 = none)
    svc.notify_node_state("node-a", available=False)   # unplanned: RESOURCE_CHANGE
    svc.notify_client_move(["10.96.0.11"])            # planned: CLIENT_MOVE
    svc.notify_share_move("data", ["10.96.0.11"])      # SHARE_MOVE (RegisterEx clients)
    svc.notify_ip_change({"10.96.0.10": False, "10.96.0.11": True})  # IP_CHANGE
    svc.update_interfaces([...]) # the operator's new view of the SVM's LIFs: notifies
                                 # what changed (state flips, node moves, new/gone IPs)
    svc.set_interfaces([...])    # replace the list silently
    await svc.stop()

Every notify_* method returns the number of registrations it queued a message
for; a pending AsyncNotify completes as soon as its message is queued.  Call
them on the service's event loop (from another thread use
`loop.call_soon_threadsafe`).  `WitnessConfig.coerce()` builds the config from
the YAML `witness:` mapping or from hasmb.smb.config's witness dataclass.
`port` / `epm_port` give the bound ports (useful with port 0 in tests).
Standalone, with no `interfaces` configured, the service answers for
`netname` at `default_addresses` (hasmb-smbd passes its SMB address), else its
listen address, else the host's addresses -- all local, so none is offered for
registration (MS-SWN: the witness must run where the failure is not).

Registrations live until UnRegister, until their RPC connection closes
(context handle rundown), or until `registration_timeout` seconds pass
without an AsyncNotify.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence

from hasmb.rpc.epm import EndpointMapper, TcpEndpoint
from hasmb.rpc.interface import RpcInterface
from hasmb.rpc.security import AuthIdentity
from hasmb.rpc.server import RpcTcpServer
from hasmb.tasks import cancel_and_wait
from hasmb.witness.config import WitnessConfig, WitnessInterfaceConfig
from hasmb.witness.events import diff_interfaces
from hasmb.witness.messages import (
    CLIENT_MOVE_NOTIFICATION,
    IP_CHANGE_NOTIFICATION,
    SHARE_MOVE_NOTIFICATION,
    IpAddrInfo,
    move,
    resource_change,
)
from hasmb.witness.registry import WitnessRegistry, same_ip
from hasmb.witness.rpc import WitnessRpcInterface

log = logging.getLogger(__name__)

LOCAL_NODE = "(local)"


def local_addresses(host: str) -> list[str]:
    """`host` if it is a specific address, else this machine's addresses."""
    if host not in ("0.0.0.0", "", "::"):
        return [host]
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
        found = sorted({str(i[4][0]) for i in infos if not str(i[4][0]).startswith("127.")})
    except OSError:
        found = []
    return found or ["127.0.0.1"]


class WitnessService:
    def __init__(
        self,
        config: WitnessConfig,
        users: Mapping[str, str],
        netname: str,
        share_exists: Callable[[str], bool] | None = None,
        extra_interfaces: Sequence[RpcInterface] = (),
        default_addresses: Sequence[str] = (),
    ) -> None:
        self.config = config
        self.netname = netname
        self._default_addresses = list(default_addresses)
        self._identity = AuthIdentity(dict(users), netname, netname.lower())
        self._interfaces = list(config.interfaces) or self._default_interfaces()
        self.registry = WitnessRegistry(
            netname, self.interfaces, share_exists, config.registration_timeout
        )
        self._rpc = WitnessRpcInterface(self.registry, self.interfaces, self.is_local)
        self._extra = list(extra_interfaces)
        self._server: RpcTcpServer | None = None
        self._epm: RpcTcpServer | None = None
        self._expiry: asyncio.Task[None] | None = None

    def _default_interfaces(self) -> list[WitnessInterfaceConfig]:
        """Standalone: this server's own addresses (given, else the listen
        address, else the host's non-loopback addresses), all local."""
        addrs = self._default_addresses or local_addresses(self.config.host)
        node = self.config.node or LOCAL_NODE
        return [
            WitnessInterfaceConfig(self.netname, ipv6=a, node=node)
            if ":" in a
            else WitnessInterfaceConfig(self.netname, ipv4=a, node=node)
            for a in addrs
        ]

    def is_local(self, i: WitnessInterfaceConfig) -> bool:
        """Hosted where this witness runs (then not offered for registration)."""
        if self.config.node:
            return i.node == self.config.node
        return i.node == LOCAL_NODE or self.config.is_local(i)

    # --- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        self._server = RpcTcpServer(
            [self._rpc, *self._extra], self._identity, self.config.host, self.config.port
        )
        await self._server.start()
        if self.config.endpoint_mapper_port > 0 or self.config.endpoint_mapper_port == -1:
            # -1: an ephemeral port (tests); 0 disables the mapper.
            port = max(self.config.endpoint_mapper_port, 0)
            eps = [
                TcpEndpoint(i.uuid, i.version, self._server.port, self.config.host)
                for i in [self._rpc, *self._extra]
            ]
            self._epm = RpcTcpServer([EndpointMapper(eps)], None, self.config.host, port)
            try:
                await self._epm.start()
            except OSError:
                await self._server.stop()
                raise
        self._expiry = asyncio.create_task(self._expire_loop())
        log.info(
            "witness for %s on %s:%d (endpoint mapper %s)",
            self.netname,
            self.config.host,
            self.port,
            self.epm_port or "off",
        )

    async def stop(self) -> None:
        await cancel_and_wait(self._expiry)
        self._expiry = None
        for srv in (self._epm, self._server):
            if srv is not None:
                await srv.stop()
        self._server = self._epm = None

    async def _expire_loop(self) -> None:
        period = max(0.05, min(5.0, self.registry.timeout / 4))
        while True:
            await asyncio.sleep(period)
            for reg in self.registry.expire():
                log.info(
                    "witness: registration of %s for %s expired", reg.client_name, reg.ip_address
                )

    @property
    def port(self) -> int:
        return self._server.port if self._server else self.config.port

    @property
    def epm_port(self) -> int | None:
        return self._epm.port if self._epm else None

    # --- the event source the SMB server / HA logic / operator feed ----------------

    def interfaces(self) -> list[WitnessInterfaceConfig]:
        return list(self._interfaces)

    def set_interfaces(self, interfaces: Iterable[WitnessInterfaceConfig]) -> None:
        self._interfaces = list(interfaces) or self._default_interfaces()
        self._rpc.interfaces_changed()

    def update_interfaces(self, interfaces: Iterable[WitnessInterfaceConfig]) -> int:
        """Adopt a new interface list and notify what changed (see events.py):
        RESOURCE_CHANGE on availability flips, CLIENT_MOVE for addresses that
        moved node while available, IP_CHANGE for the rest.  Returns deliveries."""
        new = list(interfaces) or self._default_interfaces()
        diff = diff_interfaces(self._interfaces, new)
        self._interfaces = new
        self._rpc.interfaces_changed()
        count = 0
        for ip, available in diff.state_changes:
            targets = self.registry.matching(ips=[ip])
            count += self.registry.deliver(resource_change(ip, available), targets)
        for ip in diff.moved:
            count += self.notify_client_move([ip], from_ips=[ip])
        if diff.ip_changes:
            count += self.notify_ip_change(diff.ip_changes)
        return count

    def notify_interface_state(self, ip: str, available: bool) -> int:
        """A LIF became (un)available: RESOURCE_CHANGE to clients registered on it."""
        state = "available" if available else "unavailable"
        self._interfaces = [
            dataclasses.replace(i, state=state) if any(same_ip(ip, a) for a in i.addresses()) else i
            for i in self._interfaces
        ]
        self._rpc.interfaces_changed()
        targets = self.registry.matching(ips=[ip])
        return self.registry.deliver(resource_change(ip, available), targets)

    def notify_node_state(self, node: str, available: bool) -> int:
        """Every LIF currently on `node` changed state (takeover / giveback)."""
        count = 0
        for i in [i for i in self._interfaces if i.node == node]:
            for addr in i.addresses():
                count += self.notify_interface_state(addr, available)
        return count

    def node_addresses(self, node: str) -> list[str]:
        return [a for i in self._interfaces if i.node == node for a in i.addresses()]

    def notify_client_move(
        self,
        destinations: Sequence[str],
        *,
        from_ips: Sequence[str] | None = None,
        client: str | None = None,
    ) -> int:
        """Planned move (giveback, ARL, LIF migration): CLIENT_MOVE to `destinations`
        (addresses; `node_addresses(node)` gives a node's, as Move-SmbWitnessClient
        -DestinationNode does), for all registrations or those matching the filters."""
        n = move(CLIENT_MOVE_NOTIFICATION, [IpAddrInfo(d) for d in destinations])
        return self.registry.deliver(n, self.registry.matching(ips=from_ips, client=client))

    def notify_share_move(self, share: str, destinations: Sequence[str]) -> int:
        n = move(SHARE_MOVE_NOTIFICATION, [IpAddrInfo(d) for d in destinations])
        return self.registry.deliver(n, self.registry.matching(share=share))

    def notify_ip_change(self, changes: Mapping[str, bool]) -> int:
        """IP_CHANGE (RegisterEx with IP notification): address -> online."""
        n = move(IP_CHANGE_NOTIFICATION, [IpAddrInfo(a, on) for a, on in changes.items()])
        return self.registry.deliver(n, self.registry.matching(ip_change=True))
