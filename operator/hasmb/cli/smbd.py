"""Console script `hasmb-smbd`: the SMB2/3 file server.

    hasmb-smbd --listen 127.0.0.1:4450 --share NAME=PATH[:ca] --user NAME:PASSWORD
               [--config FILE.yaml] [--netname NAME] [--state file:DIR] [--log-level info]

               [--owner-epoch N] [--standby | --forward-to HOST:PORT] [--admin-listen HOST:PORT]
               [--witness-listen HOST:PORT] [--kube]

Settings load from the YAML config (contract 3) first; flags override them.
SIGTERM/SIGINT stop accepting connections, let in-flight requests finish
(bounded by --drain-timeout) and exit 0. A server fenced by a newer owner of
its handle store exits 3 (docs/continuous-availability.md).

--witness-listen (or the config's witness.listen) starts the MS-SWN witness
next to the server; CA shares then also advertise SMB2_SHARE_CAP_CLUSTER.
--kube (automatic when HASMB_LEASE is set) runs as an operator pod: ownership
follows the SVM's Lease (hasmb.podrt.runtime, docs/operator.md).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from hasmb.handles import StoreError
from hasmb.smb.config import (
    ConfigError,
    SmbdConfig,
    load_file,
    parse_share_flag,
    parse_user_flag,
)
from hasmb.smb.ownership import CaOptions


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hasmb-smbd", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="YAML config file (flags override it)")
    p.add_argument("--listen", help="HOST:PORT (default 0.0.0.0:445)")
    p.add_argument("--share", action="append", default=[], help="NAME=PATH[:ca], repeatable")
    p.add_argument("--user", action="append", default=[], help="NAME:PASSWORD, repeatable")
    p.add_argument("--users-dir", help="directory of files named after users holding passwords")
    p.add_argument("--netname", help="NetBIOS/DNS name of the server")
    p.add_argument("--state", help="handle-state store: file:DIR | configmap:NS/NAME | etcd:URL")
    p.add_argument("--owner-epoch", type=int, help="take the store at this epoch (default: +1)")
    p.add_argument("--standby", action="store_true", help="follow the store; serve after takeover")
    p.add_argument("--forward-to", help="HOST:PORT of the owner: relay clients there (standby)")
    p.add_argument("--admin-listen", help="HOST:PORT for GET /status and POST /takeover")
    p.add_argument("--pair-listen", help="HOST:PORT of this server's pair channel (fencing)")
    p.add_argument("--partner", help="HOST:PORT of the partner's pair channel (fencing)")
    p.add_argument("--heartbeat-interval", type=float, default=0.5, help="seconds (standby)")
    p.add_argument("--heartbeat-misses", type=int, default=3, help="missed beats before takeover")
    p.add_argument("--no-auto-takeover", action="store_true", help="take over only when told")
    p.add_argument("--log-level", help="debug, info, warning, error")
    p.add_argument("--witness-listen", help="HOST:PORT: run the witness (MS-SWN) here")
    p.add_argument("--kube", action="store_true", help="ownership from the Lease ($HASMB_*)")
    p.add_argument("--drain-timeout", type=float, default=10.0, help="seconds to drain on SIGTERM")
    return p


def ca_options(args: argparse.Namespace, cfg: SmbdConfig) -> CaOptions:
    return CaOptions(
        standby=args.standby or cfg.standby,
        admin_listen=args.admin_listen or cfg.admin_listen,
        heartbeat_interval=args.heartbeat_interval,
        heartbeat_misses=args.heartbeat_misses,
        auto_takeover=not args.no_auto_takeover,
    )


def load_config(args: argparse.Namespace) -> SmbdConfig:
    cfg = load_file(args.config) if args.config else SmbdConfig()
    if args.listen:
        cfg.listen = args.listen
    if args.netname:
        cfg.netname = args.netname
    if args.state:
        cfg.state = args.state
    if args.log_level:
        cfg.log_level = args.log_level
    if args.owner_epoch:
        cfg.owner_epoch = args.owner_epoch
    if args.forward_to:
        cfg.forward_to = args.forward_to
    if args.pair_listen:
        cfg.pair_listen = args.pair_listen
    if args.partner:
        cfg.partner = args.partner
    if args.users_dir:
        cfg.users_dir = args.users_dir
    if args.witness_listen:
        cfg.witness.listen = args.witness_listen
    for spec in args.share:
        share = parse_share_flag(spec)
        cfg.shares = [s for s in cfg.shares if s.name.lower() != share.name.lower()]
        cfg.shares.append(share)
    for spec in args.user:
        name, password = parse_user_flag(spec)
        cfg.users[name] = password
    if not cfg.state:
        first = cfg.shares[0].path if cfg.shares else "."
        cfg.state = f"file:{first.rstrip('/')}/.hasmb-state"
    return cfg


async def serve(
    cfg: SmbdConfig,
    drain_timeout: float,
    ca: CaOptions | None = None,
    kube: bool = False,
    config_map: str = "",
) -> int:
    """Serve until SIGTERM/SIGINT (exit 0) or until fenced by a newer owner (exit 3)."""
    from hasmb.podrt.env import PodEnv
    from hasmb.podrt.witness import smbd_witness
    from hasmb.smb.fence import KillSwitch
    from hasmb.smb.ownership import run
    from hasmb.smb.server import SmbServer

    ca = ca or CaOptions()
    env = PodEnv.from_environ() if kube else None
    witness = smbd_witness(cfg, cfg.all_users(), node=env.node if env else "")
    if witness is not None:
        await witness.start()
    # the kernel closes the fence's window (a freeze between check and system call)
    kill = KillSwitch.for_this_process()
    try:
        if env is None:
            return await run(SmbServer(cfg, kill_switch=kill), cfg, ca, drain_timeout)
        from hasmb.handles.kube_api import KubeApi
        from hasmb.podrt.runtime import PodRuntime

        api = KubeApi()
        try:
            rt = PodRuntime(
                cfg,
                env,
                api,
                config_map=config_map,
                witness=witness,
                admin_listen=ca.admin_listen,
                drain_timeout=drain_timeout,
                kill_switch=kill,
            )
            return await rt.run()
        finally:
            await api.close()
    finally:
        if witness is not None:
            await witness.stop()


def config_map_name(config_path: str | None) -> str:
    """The ConfigMap a pod watches: `ownership.configMap` of the rendered config."""
    if not config_path:
        return ""
    import yaml

    with open(config_path) as f:
        raw = yaml.safe_load(f) or {}
    own = raw.get("ownership") if isinstance(raw, dict) else None
    return str(own.get("configMap") or "") if isinstance(own, dict) else ""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from hasmb.cli.pid1 import step_aside
    from hasmb.smb.fence import KillSwitchUnavailable

    step_aside()  # before any thread exists: PID 1 cannot use the fence's kill switch
    try:
        cfg = load_config(args)
        cfg.listen_host_port()
    except (ConfigError, OSError) as exc:
        print(f"hasmb-smbd: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, cfg.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        from hasmb.podrt.env import PodEnv, PodEnvError

        kube = args.kube or PodEnv.wanted()
        return asyncio.run(
            serve(
                cfg,
                args.drain_timeout,
                ca_options(args, cfg),
                kube=kube,
                config_map=config_map_name(args.config) if kube else "",
            )
        )
    except (PodEnvError, KillSwitchUnavailable) as exc:
        print(f"hasmb-smbd: {exc}", file=sys.stderr)
        return 2
    except (ValueError, OSError, StoreError) as exc:
        print(f"hasmb-smbd: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
