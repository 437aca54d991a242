"""Share changes of the ConfigMap applied to a running SmbServer, without a restart.

A new share is visible to the next TREE_CONNECT; a removed one to no new
TREE_CONNECT (connected trees keep their share object until they disconnect,
as Windows lets open handles live on after a share is deleted); a property
change (CA, read-only, encryption, comment) applies to new tree connects.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hasmb.smb.config import ShareConfig

if TYPE_CHECKING:
    from hasmb.smb.server import SmbServer

log = logging.getLogger("hasmb.podrt.shares")


@dataclass
class ShareChanges:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed or self.failed)


def apply_shares(server: SmbServer, wanted: list[ShareConfig]) -> ShareChanges:
    out = ShareChanges()
    want = {s.name.lower(): s for s in wanted}
    for key, share in list(server.shares.items()):
        if not share.is_ipc and key not in want:
            del server.shares[key]
            out.removed.append(share.name)
    for key, cfg in want.items():
        current = server.shares.get(key)
        if current is not None and current.is_ipc:
            continue
        if current is not None and current.config == cfg:
            continue
        if current is not None and current.root == os.path.realpath(cfg.path):
            current.config = cfg
            out.changed.append(cfg.name)
            continue
        try:
            server.add_share(cfg)
        except ValueError as exc:
            log.error("share %s not applied: %s", cfg.name, exc)
            out.failed.append(cfg.name)
            continue
        (out.changed if current is not None else out.added).append(cfg.name)
    server.config.shares = [s for s in wanted if s.name not in out.failed]
    return out
