"""Protocol-tier fixtures: a hasmb-smbd process on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.smbd import SmbdProcess, start_smbd


@pytest.fixture(scope="module")
def smbd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmbdProcess]:
    """Shares: `data` (plain), `ca` (continuously available), `enc` (encryption required)."""
    work = tmp_path_factory.mktemp("smbd")
    server = start_smbd(work, {"data": "", "ca": ":ca"}, extra=["--config", str(_enc_config(work))])
    try:
        yield server
    finally:
        rc = server.stop()
        assert rc == 0, server.log()


def _enc_config(work: object) -> object:
    from pathlib import Path

    assert isinstance(work, Path)
    (work / "enc").mkdir(exist_ok=True)
    cfg = work / "smbd.yaml"
    cfg.write_text(f"shares:\n  - {{name: enc, path: {work / 'enc'}, encrypt: true}}\n")
    return cfg
