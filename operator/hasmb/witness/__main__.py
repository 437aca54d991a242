"""Standalone witness: `python -m hasmb.witness --netname NAME --listen HOST:PORT
--user NAME:PASSWORD [--epm-port N] [--interface NAME=IP[@NODE]]`.

Until hasmb-smbd starts the witness itself this runs it for tests and demos.
Lines on stdin drive the event source (one command per line):
`client_move IP[,IP...]`, `node_state NODE up|down`, `interface_state IP up|down`,
`share_move SHARE IP[,IP...]`; each answers `delivered N` on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from hasmb.witness.config import WitnessConfig, WitnessInterfaceConfig
from hasmb.witness.service import WitnessService


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m hasmb.witness")
    p.add_argument("--netname", required=True)
    p.add_argument("--listen", default="127.0.0.1:0")
    p.add_argument("--epm-port", type=int, default=0, help="0 = no endpoint mapper")
    p.add_argument("--user", action="append", default=[], help="NAME:PASSWORD")
    p.add_argument("--interface", action="append", default=[], help="NAME=IP[@NODE]")
    p.add_argument("--registration-timeout", type=float, default=120.0)
    p.add_argument("--log-level", default="info")
    return p.parse_args(argv)


def _interface(spec: str) -> WitnessInterfaceConfig:
    name, _, rest = spec.partition("=")
    ip, _, node = rest.partition("@")
    if ":" in ip:
        return WitnessInterfaceConfig(name, ipv6=ip, node=node)
    return WitnessInterfaceConfig(name, ipv4=ip, node=node)


def _command(svc: WitnessService, line: str) -> int:
    parts = line.split()
    if not parts:
        return 0
    cmd, args = parts[0], parts[1:]
    if cmd == "client_move":
        return svc.notify_client_move(args[0].split(","))
    if cmd == "node_state":
        return svc.notify_node_state(args[0], args[1] == "up")
    if cmd == "interface_state":
        return svc.notify_interface_state(args[0], args[1] == "up")
    if cmd == "share_move":
        return svc.notify_share_move(args[0], args[1].split(","))
    raise ValueError(f"unknown command {cmd!r}")


async def _main(ns: argparse.Namespace) -> None:
    users = dict(u.split(":", 1) for u in ns.user)
    cfg = WitnessConfig(
        listen=ns.listen,
        endpoint_mapper_port=ns.epm_port,
        interfaces=[_interface(i) for i in ns.interface],
        registration_timeout=ns.registration_timeout,
    )
    svc = WitnessService(cfg, users, ns.netname)
    await svc.start()
    print(f"listening witness={svc.port} epm={svc.epm_port or 0}", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            try:
                print(f"delivered {_command(svc, line.decode())}", flush=True)
            except (ValueError, IndexError) as e:
                print(f"error {e}", flush=True)
        # stdin closed: keep serving until terminated
        await asyncio.Event().wait()
    finally:
        await svc.stop()


def main(argv: list[str] | None = None) -> None:
    ns = _parse(argv)
    logging.basicConfig(level=ns.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    try:
        asyncio.run(_main(ns))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
