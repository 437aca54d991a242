"""Witness registrations and the notifications queued for them (MS-SWN 3.1.1).

Pure asyncio logic, no RPC: `WitnessRegistry` validates and stores
registrations, matches events to them, and hands queued notifications to a
waiting AsyncNotify.  Registrations without an AsyncNotify pending for longer
than `timeout` seconds are dropped by `expire()` (a client that went away
without UnRegister must not pile up state).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from hasmb.witness.config import WitnessInterfaceConfig
from hasmb.witness.messages import (
    ERROR_INVALID_PARAMETER,
    ERROR_INVALID_STATE,
    ERROR_NO_SYSTEM_RESOURCES,
    ERROR_NOT_FOUND,
    ERROR_REVISION_MISMATCH,
    ERROR_SUCCESS,
    ERROR_TIMEOUT,
    REGISTER_IP_NOTIFICATION,
    WITNESS_V1,
    WITNESS_V2,
    Notification,
)

log = logging.getLogger(__name__)

MAX_REGISTRATIONS = 10000
MAX_QUEUED = 64


class WitnessError(Exception):
    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message or f"witness error 0x{code:x}")
        self.code = code


@dataclass
class Registration:
    key: uuid.UUID
    version: int
    net_name: str
    ip_address: str
    client_name: str
    share_name: str | None = None
    flags: int = 0
    keepalive_timeout: float = 0  # seconds, V2 only; 0 = wait forever
    owner: int = 0  # association id, for context handle rundown
    last_used: float = field(default_factory=time.monotonic)
    queue: deque[Notification] = field(default_factory=deque)
    waiter: asyncio.Event = field(default_factory=asyncio.Event)
    pending_calls: int = 0
    closed: bool = False

    @property
    def wants_ip_change(self) -> bool:
        return self.version == WITNESS_V2 and bool(self.flags & REGISTER_IP_NOTIFICATION)

    def push(self, n: Notification) -> None:
        if len(self.queue) >= MAX_QUEUED:
            self.queue.popleft()
        self.queue.append(n)
        self.waiter.set()


def same_ip(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a.lower() == b.lower()


class WitnessRegistry:
    def __init__(
        self,
        netname: str,
        interfaces: Callable[[], list[WitnessInterfaceConfig]],
        share_exists: Callable[[str], bool] | None = None,
        timeout: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.netname = netname
        self._interfaces = interfaces
        self._share_exists = share_exists
        self.timeout = timeout
        self._clock = clock
        self._regs: dict[uuid.UUID, Registration] = {}

    def __len__(self) -> int:
        return len(self._regs)

    def registrations(self) -> list[Registration]:
        return list(self._regs.values())

    # --- MS-SWN 3.1.4.2 / 3.1.4.5 ------------------------------------------------

    def register(
        self,
        version: int,
        net_name: str | None,
        ip_address: str | None,
        client_name: str | None,
        *,
        ex: bool = False,
        share_name: str | None = None,
        flags: int = 0,
        keepalive_timeout: int = 0,
        owner: int = 0,
    ) -> Registration:
        if version != (WITNESS_V2 if ex else WITNESS_V1):
            raise WitnessError(ERROR_REVISION_MISMATCH, f"version 0x{version:08x}")
        if not net_name or not ip_address or not client_name:
            raise WitnessError(ERROR_INVALID_PARAMETER, "missing net name, IP or client name")
        if not self._is_our_name(net_name):
            raise WitnessError(ERROR_INVALID_PARAMETER, f"unknown net name {net_name!r}")
        try:
            ipaddress.ip_address(ip_address)
        except ValueError:
            raise WitnessError(
                ERROR_INVALID_PARAMETER, f"not an IP address: {ip_address!r}"
            ) from None
        # An address outside the interface list is accepted: Windows registers
        # the address it connected to, which may be a cluster address the list
        # does not carry; CLIENT_MOVE still reaches it.
        if share_name and self._share_exists is not None and not self._share_exists(share_name):
            raise WitnessError(ERROR_INVALID_STATE, f"unknown share {share_name!r}")
        if len(self._regs) >= MAX_REGISTRATIONS:
            raise WitnessError(ERROR_NO_SYSTEM_RESOURCES, "too many registrations")
        reg = Registration(
            key=uuid.uuid4(),
            version=version,
            net_name=net_name,
            ip_address=ip_address,
            client_name=client_name,
            share_name=share_name or None,
            flags=flags,
            keepalive_timeout=keepalive_timeout,
            owner=owner,
            last_used=self._clock(),
        )
        self._regs[reg.key] = reg
        log.info(
            "witness: %s registered for %s at %s (version 0x%08x, share %s)",
            client_name,
            net_name,
            ip_address,
            version,
            share_name,
        )
        return reg

    def _is_our_name(self, name: str) -> bool:
        name = name.lower()
        names = {self.netname.lower()} | {i.name.lower() for i in self._interfaces()}
        # A DNS name whose first label is the NetBIOS name is the same server.
        return name in names or name.split(".", 1)[0] in names

    def unregister(self, key: uuid.UUID) -> None:
        reg = self._regs.pop(key, None)
        if reg is None:
            # smbtorture (and Samba) expect INVALID_PARAMETER for a stale handle.
            raise WitnessError(ERROR_INVALID_PARAMETER, "no such registration")
        self._close(reg)

    def _close(self, reg: Registration) -> None:
        reg.closed = True
        reg.waiter.set()

    def drop_owner(self, owner: int) -> None:
        """Context handle rundown: the association that made these is gone."""
        for reg in [r for r in self._regs.values() if r.owner == owner]:
            del self._regs[reg.key]
            self._close(reg)

    def expire(self) -> list[Registration]:
        now = self._clock()
        stale = [
            r
            for r in self._regs.values()
            if r.pending_calls == 0 and now - r.last_used > self.timeout
        ]
        for r in stale:
            del self._regs[r.key]
            self._close(r)
        return stale

    # --- MS-SWN 3.1.4.4 -----------------------------------------------------------

    async def wait(self, key: uuid.UUID) -> Notification:
        """Block until a notification for `key` is queued (AsyncNotify)."""
        reg = self._regs.get(key)
        if reg is None:
            raise WitnessError(ERROR_NOT_FOUND, "no such registration")
        reg.pending_calls += 1
        reg.last_used = self._clock()
        try:
            timeout = reg.keepalive_timeout if reg.version == WITNESS_V2 else 0
            while not reg.queue:
                if reg.closed:
                    raise WitnessError(ERROR_NOT_FOUND, "registration was removed")
                reg.waiter.clear()
                if timeout:
                    try:
                        await asyncio.wait_for(reg.waiter.wait(), timeout)
                    except TimeoutError:
                        raise WitnessError(ERROR_TIMEOUT, "keep-alive timeout") from None
                else:
                    await reg.waiter.wait()
            first = reg.queue.popleft()
            # Coalesce queued messages of the same type into one response.
            messages = list(first.messages)
            while reg.queue and reg.queue[0].message_type == first.message_type:
                messages.extend(reg.queue.popleft().messages)
            return Notification(first.message_type, tuple(messages))
        finally:
            reg.pending_calls -= 1
            reg.last_used = self._clock()

    # --- event fan-out ------------------------------------------------------------

    def deliver(self, n: Notification, targets: Iterable[Registration]) -> int:
        count = 0
        for reg in targets:
            reg.push(n)
            count += 1
        return count

    def matching(
        self,
        *,
        ips: Iterable[str] | None = None,
        share: str | None = None,
        client: str | None = None,
        ip_change: bool = False,
    ) -> list[Registration]:
        ip_list = list(ips) if ips is not None else None
        out = []
        for r in self._regs.values():
            if ip_list is not None and not any(same_ip(r.ip_address, i) for i in ip_list):
                continue
            if share is not None and (r.share_name or "").lower() != share.lower():
                continue
            if client is not None and r.client_name.lower() != client.lower():
                continue
            if ip_change and not r.wants_ip_change:
                continue
            out.append(r)
        return out


OK = ERROR_SUCCESS
