"""hasmb-probe's witness registration: MS-SWN 3.2 as a Windows client does it.

    agent = WitnessAgent(WitnessSettings(mode="auto"), target, files=lambda: handles)
    agent.start()          # a thread with its own event loop
    ...                    # I/O runs; notifications move the handles
    report = agent.stop()  # unregisters; what was received and done (see report())

Once the probe's handles are open (and, in mode "auto", persistent: the share
is continuously available) the agent asks the witness at the address the SMB
connection uses for its interface list (GetInterfaceList, through the endpoint
mapper unless a fixed port is given), registers (RegisterEx with a keep-alive,
else Register) on a witness interface of *another* address (3.2.4.1) for the
net name and the address in use, and keeps one AsyncNotify pending. Each
notification is turned into an action by witness_actions.decide() and handed to
every handle (CaFile.request_move); after a move it registers again for the new
address. A broken witness connection or a missed keep-alive makes it register
again elsewhere. Nothing here can fail the probe's I/O: an unreachable witness is
counted and reported, and the probe keeps working without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from hasmb.probe.ca_client import CaFile, CaTarget, MoveRequest
from hasmb.probe.witness_actions import (
    decide,
    net_name_for,
    registration_candidates,
    same_address,
    type_name,
)
from hasmb.rpc.ndr import ContextHandle
from hasmb.rpc.pdu import AuthLevel
from hasmb.witness.client import InterfaceInfo, WitnessCallError, WitnessClient
from hasmb.witness.messages import ERROR_TIMEOUT, RESOURCE_CHANGE_NOTIFICATION

log = logging.getLogger(__name__)

MODES = ("off", "auto", "on")
MAX_ERRORS_KEPT = 20


@dataclass(frozen=True)
class WitnessSettings:
    mode: str = "off"  # off | auto (only when the handles are persistent) | on
    port: int | None = None  # the witness port on every address; None: ask the endpoint mapper
    # (address, port) pairs overriding `port` where witnesses listen on different
    # ports (several test servers on one host, port translation)
    ports: tuple[tuple[str, int], ...] = ()
    epm_port: int = 135
    net_name: str = ""  # "" = the group name GetInterfaceList gives the address in use
    client_name: str = ""  # "" = hasmb-probe-<hostname>-<pid>
    keepalive: int = 10  # RegisterEx keep-alive (s): a silent witness is noticed after ~2x this
    connect_timeout: float = 3.0
    retry_interval: float = 1.0
    auth_level: int = AuthLevel.PRIVACY

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"witness mode must be one of {MODES}, not {self.mode!r}")


@dataclass
class WitnessEvent:
    number: int
    type: str
    at: float  # monotonic, comparable with stalls' "at"
    witness: str  # the witness that sent it
    detail: list[str]  # destinations, or resource names and states
    action: str | None = None  # what the probe did; None: nothing to do for it
    handles_back: list[float] = field(default_factory=list)  # seconds, one per handle moved


@dataclass
class WitnessState:
    state: str = "off"  # off | waiting | registering | registered | unreachable
    witness: str | None = None  # where the current registration lives
    registered_for: str | None = None  # the address it watches
    net_name: str | None = None
    version: str | None = None  # RegisterEx (V2) or Register (V1)
    registrations: int = 0
    failures: int = 0  # failed registrations and broken witness connections
    errors: list[str] = field(default_factory=list)  # the last MAX_ERRORS_KEPT
    events: list[WitnessEvent] = field(default_factory=list)


class WitnessUnreachable(Exception):
    pass


def _detail(note: Any) -> list[str]:
    if note.message_type == RESOURCE_CHANGE_NOTIFICATION:
        return [
            f"{c.name} {'available' if c.change_type == 1 else 'unavailable'}"
            for c in note.resource_changes
        ]
    return [f"{a.address}{'' if a.online else ' offline'}" for lst in note.ip_lists for a in lst]


class WitnessAgent:
    def __init__(
        self,
        settings: WitnessSettings,
        target: CaTarget,
        files: Callable[[], list[CaFile]],
        ready: Callable[[], bool] = lambda: True,
        tag: str = "",
    ) -> None:
        self.settings = settings
        self.target = target
        self._files = files
        self._ready = ready
        self.connected = target.host
        self.client_name = (
            settings.client_name or f"hasmb-probe-{socket.gethostname()}-{os.getpid()}{tag}"
        )
        self.status = WitnessState()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._known: list[InterfaceInfo] = []

    # --- lifecycle (any thread) ------------------------------------------------------

    def start(self) -> WitnessAgent:
        if self.settings.mode == "off":
            return self
        self._thread = threading.Thread(target=self._thread_main, name="probe-witness", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> dict[str, Any]:
        self._stopping.set()
        loop, task = self._loop, self._task
        if loop is not None and task is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(task.cancel)
        if self._thread is not None:
            self._thread.join(timeout)
        return self.report()

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as exc:  # never let the witness take the probe down
            self._error(f"witness agent died: {exc!r}")

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        if self._stopping.is_set():
            return
        # the state stays what it was at the end (registered, unreachable, off)
        with contextlib.suppress(asyncio.CancelledError):
            await self._run()

    # --- bookkeeping -----------------------------------------------------------------

    def _set(self, **changes: Any) -> None:
        with self._lock:
            for k, v in changes.items():
                setattr(self.status, k, v)

    def _error(self, what: str) -> None:
        log.info("witness: %s", what)
        with self._lock:
            self.status.failures += 1
            self.status.errors.append(f"{time.monotonic():.3f} {what}")
            del self.status.errors[:-MAX_ERRORS_KEPT]

    def report(self) -> dict[str, Any]:
        """The JSON-able summary: registration state, every event, and per event the
        seconds from the notification to each handle being reclaimed where it was sent."""
        moves = [m for f in self._files() for m in f.moves]
        with self._lock:
            status = asdict(self.status)
        for ev in status["events"]:
            ev["handles_back"] = sorted(
                round(m.seconds, 4) for m in moves if m.request.event == ev["number"]
            )
        events = status["events"]
        back = [max(e["handles_back"]) for e in events if e["handles_back"]]
        status.update(
            mode=self.settings.mode,
            received=len(events),
            acted_on=sum(1 for e in events if e["action"]),
            handles_moved=len(moves),
            notify_to_handle_back=back,
        )
        return status

    # --- the registration loop -------------------------------------------------------

    async def _run(self) -> None:
        while not self._ready():
            if self._stopping.is_set():
                return
            self._set(state="waiting")
            await asyncio.sleep(0.05)
        if self.settings.mode == "auto" and not any(
            f.handle is not None and f.handle.persistent for f in self._files()
        ):
            self._set(state="off")
            log.info("witness: no persistent handle (not a CA share): not registering")
            return
        avoid: set[str] = set()
        while not self._stopping.is_set():
            connected = self.connected
            self._set(state="registering")
            try:
                client, witness, handle, version = await self._register(connected, avoid)
            except Exception as exc:  # unreachable: keep the I/O going, try again later
                self._error(f"registration for {connected} failed: {exc!r}")
                self._set(state="unreachable", witness=None, registered_for=None)
                avoid.clear()
                await asyncio.sleep(self.settings.retry_interval)
                continue
            avoid.clear()
            with self._lock:
                self.status.registrations += 1
            self._set(
                state="registered", witness=witness, registered_for=connected, version=version
            )
            broken = False
            try:
                await self._listen(client, witness, handle, version == "V2", connected)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the witness went away: register elsewhere
                broken = True
                self._error(f"witness {witness} lost: {exc!r}")
                self._set(state="unreachable")
                avoid.add(witness)
            finally:
                if not broken:  # a dead association would only make us wait
                    with contextlib.suppress(Exception, asyncio.CancelledError):
                        await asyncio.wait_for(client.unregister(handle), 1.0)
                client.close()

    async def _connect(self, host: str) -> WitnessClient:
        s = self.settings
        return await asyncio.wait_for(
            WitnessClient.connect(
                host,
                user=self.target.user,
                password=self.target.password,
                port=dict(s.ports).get(host, s.port),
                epm_port=s.epm_port,
                level=s.auth_level,
            ),
            s.connect_timeout,
        )

    async def _interfaces(self, connected: str) -> tuple[WitnessClient, str, list[InterfaceInfo]]:
        """GetInterfaceList from the witness at the address in use, else from any
        address it listed before (the node we use may be the one that is down)."""
        hosts = [connected] + [
            a
            for i in self._known
            for a in (i.ipv4, i.ipv6)
            if a is not None and not same_address(a, connected)
        ]
        last: Exception | None = None
        for host in dict.fromkeys(hosts):
            client: WitnessClient | None = None
            try:
                client = await self._connect(host)
                found = await asyncio.wait_for(
                    client.get_interface_list(), self.settings.connect_timeout
                )
                return client, host, found
            except Exception as exc:
                last = exc
                if client is not None:
                    client.close()
        raise WitnessUnreachable(f"no witness answered GetInterfaceList: {last!r}")

    async def _register(
        self, connected: str, avoid: set[str]
    ) -> tuple[WitnessClient, str, ContextHandle, str]:
        lister, listed_at, interfaces = await self._interfaces(connected)
        self._known = interfaces
        net_name = self.settings.net_name or net_name_for(interfaces, connected)
        if not net_name:
            lister.close()
            raise WitnessUnreachable("the witness lists no interfaces")
        self._set(net_name=net_name)
        candidates = registration_candidates(interfaces, connected, listed_at)
        candidates = [c for c in candidates if c not in avoid] or candidates
        last: Exception | None = None
        keep: WitnessClient | None = None
        try:
            for witness in candidates:
                reuse = witness == listed_at
                client: WitnessClient | None = lister if reuse else None
                try:
                    if client is None:
                        client = await self._connect(witness)
                    handle, version = await self._register_on(client, net_name, connected)
                except Exception as exc:
                    last = exc
                    self._error(f"register with {witness} failed: {exc!r}")
                    if client is not None and not reuse:
                        client.close()
                    continue
                keep = client
                return client, witness, handle, version
        finally:
            if keep is not lister:
                lister.close()
        raise WitnessUnreachable(f"no witness accepted the registration: {last!r}")

    async def _register_on(
        self, client: WitnessClient, net_name: str, connected: str
    ) -> tuple[ContextHandle, str]:
        timeout = self.settings.connect_timeout
        try:
            handle = await asyncio.wait_for(
                client.register_ex(
                    net_name,
                    self.target.share,
                    connected,
                    self.client_name,
                    keepalive_timeout=self.settings.keepalive,
                ),
                timeout,
            )
            return handle, "V2"
        except WitnessCallError:
            # a V1-only witness, or a share it does not know: the plain registration
            handle = await asyncio.wait_for(
                client.register(net_name, connected, self.client_name), timeout
            )
            return handle, "V1"

    async def _listen(
        self,
        client: WitnessClient,
        witness: str,
        handle: ContextHandle,
        keepalive: bool,
        connected: str,
    ) -> None:
        """AsyncNotify until a move asks for a new registration (returns) or the
        witness connection fails (raises)."""
        # V2: the witness answers ERROR_TIMEOUT every keep-alive period; silence for
        # twice that means it (or its node) is gone. V1 waits without a bound.
        bound = 2 * self.settings.keepalive + 1 if keepalive and self.settings.keepalive else None
        while not self._stopping.is_set():
            try:
                note = await asyncio.wait_for(client.async_notify(handle), bound)
            except WitnessCallError as exc:
                if exc.code == ERROR_TIMEOUT:
                    continue
                raise
            except TimeoutError:
                raise WitnessUnreachable(f"no keep-alive from {witness} in {bound}s") from None
            now = time.monotonic()
            with self._lock:
                event = WitnessEvent(
                    len(self.status.events) + 1,
                    type_name(note.message_type),
                    now,
                    witness,
                    _detail(note),
                )
                self.status.events.append(event)
            action = decide(note, connected, self.status.net_name or "")
            log.info("witness %s: %s %s -> %s", witness, event.type, event.detail, action)
            if action is None:
                continue
            if action.retry:
                restarted = sum(f.restart_attempt(action.host) for f in self._files())
                # nothing was stuck on the failed path: the notification asked for nothing
                if restarted:
                    with self._lock:
                        event.action = f"restart {restarted} reconnection(s) to {action.host}"
                continue
            request = MoveRequest(action.host, action.reason, now, event.number)
            for f in self._files():
                f.request_move(request, dead_host=connected if action.abort else None)
            with self._lock:
                event.action = (
                    f"reconnect to {action.host}"
                    if same_address(action.host, connected) and action.abort
                    else f"move to {action.host}"
                )
            if not (action.abort and same_address(action.host, connected)):
                # the connection now goes elsewhere (or to another node behind the
                # same address): register again, on a witness away from it
                self.connected = action.host
                return
