"""Console script `hasmb-operator`: the kopf operator, standalone, namespaced or cluster-wide."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hasmb-operator",
        description="Reconcile hasmb.io HAPair/SVM/Share/LIF resources into pods, Services, "
        "ConfigMaps and Leases; run takeover, giveback, ARL, LIF moves and rolling upgrades.",
    )
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="serve every namespace")
    scope.add_argument(
        "-n", "--namespace", action="append", default=[], help="serve this namespace (repeatable)"
    )
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or in-cluster)")
    p.add_argument("--workers", type=int, default=8, help="concurrent reconciles (default 8)")
    p.add_argument("--liveness", help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    p.add_argument("--metrics", metavar="HOST:PORT", help="serve Prometheus metrics here")
    p.add_argument(
        "--log-format", choices=["plain", "json"], default="plain", help="json: one object a line"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.all_namespaces and not args.namespace:
        args.all_namespaces = True
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig

    import kopf

    import hasmb.controller.handlers  # noqa: F401 - registers the handlers

    log_format = kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL
    kopf.configure(verbose=args.verbose, quiet=args.quiet, log_format=log_format)
    if not args.verbose:
        # kopf logs every watch-event handler call; our reconcilers log what matters.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    stop = asyncio.Event()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await kopf.operator(
            standalone=True,
            clusterwide=bool(args.all_namespaces),
            namespaces=args.namespace,
            liveness_endpoint=args.liveness,
            memo=kopf.Memo(
                workers=args.workers,
                metrics_listen=args.metrics,
                namespaces=[] if args.all_namespaces else args.namespace,
            ),
            stop_flag=stop,
        )

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
