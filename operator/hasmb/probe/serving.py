"""Is this SMB server serving a share right now? A split-brain witness for chaos runs.

    python -m hasmb.probe.serving --server 10.245.1.2:445 --share vms --user alice:pw

Every `--interval` seconds it tries a fresh SMB 3.1.1 session and tree connect and
prints one line `WALLTIME 1` (served) or `WALLTIME 0` (refused, reset, timed out),
until killed. hack/chaos runs it inside a cut-off node's network namespace, where the
isolated owner pod is still reachable, to tell when that owner stopped serving
compared with the moment its partner took over.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid

from smbprotocol.connection import Connection, Dialects
from smbprotocol.session import Session
from smbprotocol.tree import TreeConnect


def serves(host: str, port: int, share: str, user: str, password: str, timeout: float) -> bool:
    conn = Connection(uuid.uuid4(), host, port)
    try:
        conn.connect(Dialects.SMB_3_1_1, timeout=timeout)
        session = Session(conn, user, password, require_encryption=False)
        session.connect()
        TreeConnect(session, rf"\\{host}\{share}").connect()
        return True
    except Exception:  # refused, reset, timed out, or an error status: not serving
        return False
    finally:
        try:
            conn.disconnect(close=False)
        except Exception:
            pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hasmb.probe.serving", description=__doc__)
    p.add_argument("--server", required=True, help="HOST:PORT")
    p.add_argument("--share", required=True)
    p.add_argument("--user", required=True, help="NAME:PASSWORD")
    p.add_argument("--interval", type=float, default=0.3)
    p.add_argument("--timeout", type=float, default=1.0)
    args = p.parse_args(argv)
    host, _, port = args.server.rpartition(":")
    user, _, password = args.user.partition(":")
    while True:
        started = time.monotonic()
        ok = serves(host, int(port), args.share, user, password, args.timeout)
        print(f"{time.time():.3f} {int(ok)}", flush=True)
        time.sleep(max(0.0, args.interval - (time.monotonic() - started)))


if __name__ == "__main__":
    sys.exit(main())
