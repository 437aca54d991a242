"""hasmb-probe's workload against Samba, with connections torn down under it.

`ss -K` destroys the probe's TCP connections in the kernel: a network blip as
the client sees it. Every write must be replayed after the reclaim, none may
surface as an error and none may be lost.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from hasmb.probe.ca_client import CaTarget
from hasmb.probe.runner import ProbeReport, ProbeSettings, run_probe
from tests.support.samba_server import SambaServer


@pytest.fixture(scope="module")
def samba(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SambaServer]:
    root = tmp_path_factory.mktemp("samba-probe")
    share = root / "share"
    share.mkdir()
    server = SambaServer(root / "srv", {"data": share})
    server.start()
    yield server
    server.stop()


def _kill_connections(port: int) -> None:
    subprocess.run(
        ["ss", "-K", "dst", "127.0.0.1", "dport", "=", str(port)], check=True, capture_output=True
    )


def test_probe_survives_connection_kills(samba: SambaServer) -> None:
    settings = ProbeSettings(
        target=CaTarget("127.0.0.1", samba.port, "data", samba.user, samba.password),
        files=2,
        blocks=16,
        block_size=16 * 1024,
        duration=30.0,
        reclaim_deadline=20.0,
        batch_oplock=True,
    )
    stop = threading.Event()
    result: list[ProbeReport] = []
    thread = threading.Thread(target=lambda: result.append(run_probe(settings, stop)))
    thread.start()
    try:
        kills = 0
        deadline = time.monotonic() + 25
        while kills < 3 and time.monotonic() < deadline:
            time.sleep(0.5)  # pacing between chaos events, not synchronisation
            _kill_connections(samba.port)
            kills += 1
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()
    report = result[0]
    assert report.errors == 0, [w.errors for w in report.workers]
    assert report.lost == 0, [w.lost for w in report.workers]
    assert sum(w.writes for w in report.workers) > 0
    assert len(report.stall_seconds) >= 2, "connection kills must show up as stalls"
    assert max(report.stall_seconds) < 10


def test_probe_cli_reports_clean_run(samba: SambaServer, tmp_path: pytest.TempPathFactory) -> None:
    import json
    import sys
    from pathlib import Path

    out = Path(str(tmp_path)) / "report.json"
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "hasmb-probe"),
            "--server",
            f"127.0.0.1:{samba.port}",
            "--share",
            "data",
            "--user",
            f"{samba.user}:{samba.password}",
            "--duration",
            "1",
            "--blocks",
            "4",
            "--batch-oplock",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "errors=0 lost=0" in proc.stdout
    report = json.loads(out.read_text())
    assert report["errors"] == 0 and report["workers"][0]["writes"] > 0
