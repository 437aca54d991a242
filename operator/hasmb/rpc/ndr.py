"""NDR 2.0 marshalling helpers (C706 chapter 14, little-endian, 32-bit pointers).

`NdrWriter` and `NdrReader` handle primitive alignment, unique/full pointer
referent ids, conformant(-varying) strings and arrays, and context handles.
Interfaces compose them by hand in the order the IDL dictates: top-level
pointer referents follow their pointer immediately, embedded pointer
referents are deferred to after the enclosing structure (the caller writes
them there).
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass


class NdrError(Exception):
    """Stub data that does not decode (answered with nca_s_fault_ndr)."""


# A sane bound for any array or string a client sends us.
MAX_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class ContextHandle:
    attributes: int
    uuid: uuid.UUID

    SIZE = 20

    def pack(self) -> bytes:
        return struct.pack("<I", self.attributes) + self.uuid.bytes_le

    @property
    def is_null(self) -> bool:
        return self.attributes == 0 and self.uuid.int == 0


NULL_HANDLE = ContextHandle(0, uuid.UUID(int=0))


class NdrWriter:
    def __init__(self) -> None:
        self.buf = bytearray()
        self._ref = 0x00020000

    def align(self, n: int) -> None:
        self.buf += b"\x00" * ((-len(self.buf)) % n)

    def u8(self, v: int) -> None:
        self.buf += struct.pack("<B", v)

    def u16(self, v: int) -> None:
        self.align(2)
        self.buf += struct.pack("<H", v)

    def u32(self, v: int) -> None:
        self.align(4)
        self.buf += struct.pack("<I", v)

    def u64(self, v: int) -> None:
        self.align(8)
        self.buf += struct.pack("<Q", v)

    def raw(self, data: bytes) -> None:
        self.buf += data

    def referent(self, present: bool = True) -> None:
        """A unique/full pointer: a fresh non-zero referent id, or NULL."""
        if present:
            self._ref += 4
            self.u32(self._ref)
        else:
            self.u32(0)

    def wstring(self, s: str) -> None:
        """Conformant varying NUL-terminated UTF-16 string ([string] wchar_t*)."""
        data = (s + "\x00").encode("utf-16-le")
        n = len(data) // 2
        self.u32(n)
        self.u32(0)
        self.u32(n)
        self.buf += data

    def unique_wstring(self, s: str | None) -> None:
        self.referent(s is not None)
        if s is not None:
            self.wstring(s)

    def context_handle(self, h: ContextHandle) -> None:
        self.align(4)
        self.buf += h.pack()

    def bytes(self) -> bytes:
        return bytes(self.buf)


class NdrReader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise NdrError("stub data truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def align(self, n: int) -> None:
        pad = (-self.pos) % n
        self._take(pad)

    def u8(self) -> int:
        return self._take(1)[0]

    def u16(self) -> int:
        self.align(2)
        return int(struct.unpack("<H", self._take(2))[0])

    def u32(self) -> int:
        self.align(4)
        return int(struct.unpack("<I", self._take(4))[0])

    def u64(self) -> int:
        self.align(8)
        return int(struct.unpack("<Q", self._take(8))[0])

    def raw(self, n: int) -> bytes:
        return self._take(n)

    def referent(self) -> int:
        return self.u32()

    def wstring(self) -> str:
        max_count = self.u32()
        offset = self.u32()
        actual = self.u32()
        if max_count > MAX_ELEMENTS or offset != 0 or actual > max_count:
            raise NdrError("bad conformant varying string")
        data = self._take(actual * 2)
        try:
            s = data.decode("utf-16-le")
        except UnicodeDecodeError:
            raise NdrError("string is not UTF-16") from None
        return s[:-1] if s.endswith("\x00") else s

    def unique_wstring(self) -> str | None:
        if self.referent() == 0:
            return None
        return self.wstring()

    def context_handle(self) -> ContextHandle:
        self.align(4)
        raw = self._take(20)
        return ContextHandle(struct.unpack_from("<I", raw)[0], uuid.UUID(bytes_le=bytes(raw[4:])))
