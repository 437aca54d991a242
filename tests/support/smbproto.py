"""Small helpers around smbprotocol's low-level client for protocol tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from smbprotocol.connection import Connection, Dialects
from smbprotocol.open import (
    CreateDisposition,
    CreateOptions,
    FileAttributes,
    ImpersonationLevel,
    Open,
    ShareAccess,
)
from smbprotocol.session import Session
from smbprotocol.tree import TreeConnect

from tests.support.smbd import SmbdProcess


@dataclass
class Client:
    connection: Connection
    session: Session
    tree: TreeConnect

    def open(
        self,
        name: str,
        *,
        access: int = 0x0012019F,  # generic read/write
        share: int = ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE,
        disposition: int = CreateDisposition.FILE_OPEN_IF,
        options: int = CreateOptions.FILE_NON_DIRECTORY_FILE,
    ) -> Open:
        op = Open(self.tree, name)
        op.create(
            ImpersonationLevel.Impersonation,
            access,
            FileAttributes.FILE_ATTRIBUTE_NORMAL,
            share,
            disposition,
            options,
        )
        return op


@contextmanager
def connect(
    smbd: SmbdProcess,
    share: str = "data",
    *,
    dialect: int | None = None,
    require_signing: bool = False,
    encrypt: bool = False,
    ciphers: list[int] | None = None,
    signing_algos: list[int] | None = None,
    password: str | None = None,
) -> Iterator[Client]:
    conn = Connection(uuid.uuid4(), "127.0.0.1", smbd.port, require_signing=require_signing)
    conn.connect(
        dialect=dialect or Dialects.SMB_3_1_1,
        timeout=20,
        preferred_encryption_algos=ciphers,
        preferred_signing_algos=signing_algos,
    )
    try:
        session = Session(
            conn,
            smbd.user,
            password or smbd.password,
            require_encryption=encrypt,
            auth_protocol="ntlm",
        )
        session.connect()
        tree = TreeConnect(session, rf"\\127.0.0.1\{share}")
        tree.connect()
        yield Client(conn, session, tree)
    finally:
        conn.disconnect(True)
