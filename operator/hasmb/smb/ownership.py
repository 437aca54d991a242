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
import json
import logging
import math
import os
import signal
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hasmb.handles import HandleStore, StoreError, open_store
from hasmb.smb.pair import PairClient, PairServer

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


def standalone_pair(server: SmbServer, cfg: SmbdConfig) -> PairClient | None:
    """A standalone owner with `partner`: unconditional until the partner first
    confirms it, then only as long as the partner confirms (or refuses: no partner
    process runs). The pair has no arbiter like the pods' Lease, so an owner cut off
    from a live partner stops when the promise runs out (docs, "Fencing")."""
    if not cfg.partner:
        return None
    fence = server.fence
    return PairClient(
        fence,
        owner_name(cfg),
        0,
        lambda: _host_port(cfg.partner),
        refusal_grants=True,
        solo=lambda: fence.holding and math.isinf(fence.deadline),
    )


async def run(server: SmbServer, cfg: SmbdConfig, opts: CaOptions, drain_timeout: float) -> int:
    from hasmb.smb.admin import serve_admin
    from hasmb.smb.forward import Standby
    from hasmb.smb.persistence import own_store

    host, port = cfg.listen_host_port()
    loop = asyncio.get_running_loop()
    store: HandleStore | None = None
    standby: Standby | None = None
    pair: PairServer | None = None
    client = standalone_pair(server, cfg)
    tasks: list[asyncio.Task[None]] = [loop.create_task(server.fence.watch())]
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
        if cfg.pair_listen:
            sb = standby
            pair = PairServer(
                may_confirm=lambda node, epoch: None if sb.role == "standby" else sb.role,
                peer_allowed=lambda ip: sb.forward_to is None or ip == sb.forward_to[0],
            )
            await pair.start(*_host_port(cfg.pair_listen))
            standby.pair = pair

        async def arm() -> None:
            server.fence.unconditional("took over")
            if client is not None:
                client.epoch = (store.epoch or 0) if store is not None else 0
                client.start()

        standby.arm = arm
        await standby.start(host, port)
        loop.add_signal_handler(signal.SIGUSR1, standby.request_takeover, "SIGUSR1")
    else:
        if cfg.state:
            # persistent opens of the previous owner are loaded before the first client
            store = await own_store(
                server, cfg.state, owner=owner_name(cfg), epoch=cfg.owner_epoch or None
            )
        if client is not None:
            client.epoch = (store.epoch or 0) if store is not None else 0
            client.start()
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
    waits = [
        asyncio.ensure_future(stop.wait()),
        asyncio.ensure_future(server.ca.fenced.wait()),
        asyncio.ensure_future(server.fence.lapsed.wait()),
    ]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for w in waits:
        w.cancel()
    fenced = server.ca.fenced.is_set() or server.fence.lapsed.is_set()
    if fenced:
        # no mutation from here on (a lapse already revoked it); abort every client
        # so nothing that sat in a socket buffer is answered by this process
        server.fence.revoke(server.fence.lapse_reason or "fenced by a newer owner")
        for c in list(server.connections):
            c.writer.transport.abort()
    log.info("draining (up to %.0f s)", 0 if fenced else drain_timeout)
    for t in tasks:
        t.cancel()
    if admin is not None:
        admin.close()
    if client is not None:
        # Whatever stopped us, no mutation follows: say so, and the partner takes over
        # without waiting for its promise to run out (a lapsed owner that merely
        # stopped pinging would leave it confirming a server that serves nothing).
        server.fence.revoke("stopping" if not fenced else "fenced")
        await server.fence.quiesce()
        await client.release()
        await client.stop()
    if pair is not None:
        await pair.stop()
    if standby is not None:
        await standby.stop()
    await server.stop(0 if fenced else drain_timeout)
    await server.ca.shutdown()
    if store is not None:
        with contextlib.suppress(StoreError):
            await store.close()
    # the fence's timeline on CLOCK_BOOTTIME (one clock for every process of a
    # machine): tests compare an old owner's last mutation with its successor's start
    log.warning("fence at exit: %s", json.dumps(server.fence.status()))
    return FENCED_EXIT if fenced else 0
