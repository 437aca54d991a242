"""The 64-byte SMB2 packet header (MS-SMB2 2.2.1) and the transform header (2.2.41)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from hasmb.smb.constants import FLAGS_ASYNC_COMMAND

PROTOCOL_ID = b"\xfeSMB"
TRANSFORM_ID = b"\xfdSMB"
COMPRESSION_ID = b"\xfcSMB"
SMB1_ID = b"\xffSMB"
HEADER_SIZE = 64
TRANSFORM_SIZE = 52

_HDR = struct.Struct("<4sHHIHHIIQQQ16s")
_TRANSFORM = struct.Struct("<4s16s16sIHHQ")


class MalformedPacket(Exception):
    """The bytes cannot be an SMB2 message: the connection should be dropped."""


@dataclass(slots=True)
class Header:
    command: int
    message_id: int
    credit_charge: int = 0
    status: int = 0
    credits: int = 0
    flags: int = 0
    next_command: int = 0
    async_id: int = 0
    tree_id: int = 0
    process_id: int = 0
    session_id: int = 0
    signature: bytes = b"\x00" * 16
    channel_sequence: int = 0

    @property
    def is_async(self) -> bool:
        return bool(self.flags & FLAGS_ASYNC_COMMAND)

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview, offset: int = 0) -> Header:
        if len(data) - offset < HEADER_SIZE:
            raise MalformedPacket("short SMB2 header")
        (
            proto,
            size,
            charge,
            status,
            command,
            credits,
            flags,
            next_command,
            message_id,
            mid,
            session_id,
            signature,
        ) = _HDR.unpack_from(data, offset)
        if proto != PROTOCOL_ID or size != HEADER_SIZE:
            raise MalformedPacket("not an SMB2 header")
        if flags & FLAGS_ASYNC_COMMAND:
            async_id, tree_id, process_id = mid, 0, 0
        else:
            async_id = 0
            process_id = mid & 0xFFFFFFFF
            tree_id = mid >> 32
        return cls(
            command=command,
            message_id=message_id,
            credit_charge=charge,
            # in requests the status field holds ChannelSequence (3.x) in its low 16 bits
            status=status,
            credits=credits,
            flags=flags,
            next_command=next_command,
            async_id=async_id,
            tree_id=tree_id,
            process_id=process_id,
            session_id=session_id,
            signature=bytes(signature),
            channel_sequence=status & 0xFFFF,
        )

    def pack(self) -> bytes:
        if self.flags & FLAGS_ASYNC_COMMAND:
            mid = self.async_id
        else:
            mid = (self.tree_id << 32) | (self.process_id & 0xFFFFFFFF)
        return _HDR.pack(
            PROTOCOL_ID,
            HEADER_SIZE,
            self.credit_charge,
            self.status,
            self.command,
            self.credits,
            self.flags,
            self.next_command,
            self.message_id,
            mid,
            self.session_id,
            self.signature,
        )


@dataclass(slots=True)
class TransformHeader:
    signature: bytes
    nonce: bytes
    original_size: int
    flags: int
    session_id: int

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> TransformHeader:
        if len(data) < TRANSFORM_SIZE:
            raise MalformedPacket("short transform header")
        proto, sig, nonce, size, _reserved, flags, sid = _TRANSFORM.unpack_from(data, 0)
        if proto != TRANSFORM_ID:
            raise MalformedPacket("not a transform header")
        return cls(bytes(sig), bytes(nonce), size, flags, sid)

    def pack(self) -> bytes:
        return _TRANSFORM.pack(
            TRANSFORM_ID,
            self.signature,
            self.nonce,
            self.original_size,
            0,
            self.flags,
            self.session_id,
        )

    def aad(self) -> bytes:
        """The authenticated data: everything after the signature (MS-SMB2 3.1.4.3)."""
        return self.pack()[20:]
