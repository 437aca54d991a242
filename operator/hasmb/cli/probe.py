"""Console script `hasmb-probe`: a CA-aware SMB client that measures failover stalls."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from types import FrameType

from hasmb.probe.ca_client import CaTarget
from hasmb.probe.runner import ProbeSettings, run_probe
from hasmb.probe.witness_agent import MODES, WitnessSettings


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hasmb-probe",
        description=(
            "Write a verifiable pattern through persistent handles on a CA share, reclaim "
            "them across failovers, and report stalls, surfaced errors and lost writes."
        ),
    )
    parser.add_argument("--server", type=_host_port, required=True, help="HOST:PORT of the SVM")
    parser.add_argument("--share", required=True)
    parser.add_argument("--user", required=True, help="NAME, or NAME:PASSWORD")
    parser.add_argument(
        "--password-env",
        default="HASMB_PROBE_PASSWORD",
        help="environment variable holding the password when --user has none",
    )
    parser.add_argument("--files", type=int, default=1)
    parser.add_argument("--blocks", type=int, default=64)
    parser.add_argument("--block-size", type=int, default=64 * 1024)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of I/O")
    parser.add_argument("--reclaim-deadline", type=float, default=60.0)
    parser.add_argument("--request-timeout", type=float, default=5.0)
    parser.add_argument("--encrypt", action="store_true", help="require SMB3 encryption")
    parser.add_argument(
        "--batch-oplock",
        action="store_true",
        help="request a batch oplock so a non-CA server (e.g. Samba) grants durable handles",
    )
    parser.add_argument(
        "--witness",
        choices=MODES,
        default="auto",
        help="register with the SVM's witness (MS-SWN) and follow its CLIENT_MOVE and "
        "RESOURCE_CHANGE notifications: auto = when the share grants persistent handles",
    )
    parser.add_argument(
        "--witness-port",
        type=int,
        help="the witness's TCP port on every address (default: ask the endpoint mapper)",
    )
    parser.add_argument("--witness-epm-port", type=int, default=135)
    parser.add_argument(
        "--witness-netname", default="", help="default: the name the witness lists for --server"
    )
    parser.add_argument(
        "--witness-keepalive", type=int, default=10, help="RegisterEx keep-alive seconds"
    )
    parser.add_argument("--json", metavar="FILE", help="write the full report as JSON here")
    parser.add_argument("--log-level", default="warning")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s"
    )
    user, _, password = args.user.partition(":")
    password = password or os.environ.get(args.password_env, "")
    host, port = args.server
    settings = ProbeSettings(
        target=CaTarget(host, port, args.share, user, password, encrypt=args.encrypt),
        files=args.files,
        blocks=args.blocks,
        block_size=args.block_size,
        duration=args.duration,
        reclaim_deadline=args.reclaim_deadline,
        request_timeout=args.request_timeout,
        batch_oplock=args.batch_oplock,
        witness=WitnessSettings(
            mode=args.witness,
            port=args.witness_port,
            epm_port=args.witness_epm_port,
            net_name=args.witness_netname,
            keepalive=args.witness_keepalive,
        ),
    )
    stop = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    report = run_probe(settings, stop)
    if args.json:
        with open(args.json, "w") as out:
            out.write(report.to_json())
    stalls = report.stall_seconds
    worst = f"{max(stalls):.3f}s" if stalls else "-"
    writes = sum(w.writes for w in report.workers)
    persistent = all(w.persistent for w in report.workers)
    print(
        f"PROBE writes={writes} stalls={len(stalls)} max_stall={worst} "
        f"errors={report.errors} lost={report.lost} persistent={str(persistent).lower()}"
    )
    if report.witness is not None:
        w = report.witness
        back = w["notify_to_handle_back"]
        print(
            f"WITNESS state={w['state']} registrations={w['registrations']} "
            f"received={w['received']} acted_on={w['acted_on']} failures={w['failures']} "
            f"max_notify_to_back={f'{max(back):.3f}s' if back else '-'}"
        )
    for worker in report.workers:
        for line in worker.errors + worker.lost:
            print(f"  {worker.path}: {line}", file=sys.stderr)
    return 0 if report.errors == 0 and report.lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
