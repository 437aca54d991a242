"""How a hasmb-smbd process owns (or waits to own) its SVM's handle-state store.

Two roles (docs/continuous-availability.md):

- owner (the default): take ownership of the store at start (epoch + 1, or the
  `ownerEpoch` the cluster's ownership record decided), adopt every persistent
  open as disconnected, then serve. While serving, re-read the store's epoch
  every `epoch_check` seconds: a newer epoch means another server took over,
  and this one stops serving at once (self-fencing; a store write under the
  old epoch would be refused anyway, this only makes the stop prompt even
  when no handle changes).
- standby (`--standby`, or implied by `--forward-to`): follow the store and
  relay clients to the owner until a takeover (hasmb.smb.forward.Standby).

A fenced server drains nothing and exits 3, so a supervisor restarts it as a
standby or not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hasmb.handles import HandleStore, StoreError, open_store

if TYPE_CHECKING:
    from hasmb.smb.config import SmbdConfig
    from hasmb.smb.server import SmbServer

log = logging.getLogger("hasmb.smb.ownership")
FENCED_EXIT = 3


@dataclass
class CaOptions:
    standby: bool = False
    admin_listen: str = ""  # HOST:PORT of the HTTP admin endpoint (GET /status, POST /takeover)
    heartbeat_interval: float = 0.5
    heartbeat_misses: int = 3
    auto_takeover: bool = True
    epoch_check: float = 1.0


def _host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def owner_name(cfg: SmbdConfig) -> str:
    return f"{cfg.netname}@{socket.gethostname()}:{os.getpid()}"


async def watch_epoch(server: SmbServer, store: HandleStore, interval: float) -> None:
    """Self-fencing: stop serving as soon as the store names a newer epoch."""
    while True:
        await asyncio.sleep(interval)
        mine = store.epoch
        if mine is None or server.ca.store is not store:
            continue
        try:
            current = await store.read_epoch()
        except StoreError as exc:
            log.warning("cannot read the store's epoch: %s", exc)
            continue
        if current.epoch > mine:
            log.critical(
                "store epoch is %d (owner %s), mine %d: stale epoch, stop serving",
                current.epoch,
                current.owner,
                mine,
            )
            server.ca.fenced.set()
            return


async def run(server: SmbServer, cfg: SmbdConfig, opts: CaOptions, drain_timeout: float) -> int:
    from hasmb.smb.admin import serve_admin
    from hasmb.smb.forward import Standby
    from hasmb.smb.persistence import own_store

    host, port = cfg.listen_host_port()
    loop = asyncio.get_running_loop()
    store: HandleStore | None = None
    standby: Standby | None = None
    tasks: list[asyncio.Task[None]] = []
    if cfg.forward_to or opts.standby:
        if not cfg.state:
            raise ValueError("a standby needs --state")
        store = open_store(cfg.state)
        standby = Standby(
            server,
            store,
            owner_name(cfg),
            forward_to=_host_port(cfg.forward_to) if cfg.forward_to else None,
            epoch=cfg.owner_epoch or None,
            heartbeat_interval=opts.heartbeat_interval,
            heartbeat_misses=opts.heartbeat_misses,
            auto_takeover=opts.auto_takeover,
        )
        await standby.start(host, port)
        loop.add_signal_handler(signal.SIGUSR1, standby.request_takeover, "SIGUSR1")
    else:
        if cfg.state:
            # persistent opens of the previous owner are loaded before the first client
            store = await own_store(
                server, cfg.state, owner=owner_name(cfg), epoch=cfg.owner_epoch or None
            )
        await server.start(host, port)
        # an owner has nothing to take over; SIGUSR1 must not kill it
        loop.add_signal_handler(signal.SIGUSR1, log.info, "SIGUSR1: already the owner")
    admin = None
    if opts.admin_listen:
        admin = await serve_admin(*_host_port(opts.admin_listen), server, store, standby)
    if store is not None:
        tasks.append(loop.create_task(watch_epoch(server, store, opts.epoch_check)))
    stop = asyncio.Event()
    server.install_signal_handlers(stop)
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(server.ca.fenced.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for w in waits:
        w.cancel()
    fenced = server.ca.fenced.is_set()
    log.info("draining (up to %.0f s)", 0 if fenced else drain_timeout)
    for t in tasks:
        t.cancel()
    if admin is not None:
        admin.close()
    if standby is not None:
        await standby.stop()
    await server.stop(0 if fenced else drain_timeout)
    await server.ca.shutdown()
    if store is not None:
        with contextlib.suppress(StoreError):
            await store.close()
    return FENCED_EXIT if fenced else 0
