"""A minimal raw SMB 2.1 client (no signing) for fuzzing: it builds well-formed requests
by hand so that tests can mutate the bytes before they go on the wire."""

from __future__ import annotations

import socket
import struct

import spnego

HDR = struct.Struct("<4sHHIHHIIQQQ16s")


class RawClient:
    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.mid = 0
        self.session_id = 0
        self.tree_id = 0

    def close(self) -> None:
        self.sock.close()

    def header(self, command: int, *, credits: int = 1) -> bytes:
        h = HDR.pack(
            b"\xfeSMB",
            64,
            1,
            0,
            command,
            credits,
            0,
            0,
            self.mid,
            self.tree_id << 32,
            self.session_id,
            b"\x00" * 16,
        )
        self.mid += 1
        return h

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(struct.pack(">I", len(data)) + data)

    def recv(self) -> bytes:
        head = self._exact(4)
        return self._exact(int.from_bytes(head, "big"))

    def _exact(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("closed")
            out += chunk
        return out

    def call(self, data: bytes) -> tuple[int, bytes]:
        self.send_raw(data)
        while True:
            resp = self.recv()
            status = int.from_bytes(resp[8:12], "little")
            if status != 0x103:  # skip interim responses
                return status, resp

    def negotiate_request(self) -> bytes:
        body = struct.pack("<HHHHI16sQ", 36, 2, 1, 0, 0, b"f" * 16, 0) + struct.pack(
            "<HH", 0x202, 0x210
        )
        return self.header(0) + body

    def session_setup_request(self, token: bytes) -> bytes:
        body = struct.pack("<HBBIIHHQ", 25, 0, 1, 0, 0, 64 + 24, len(token), 0) + token
        return self.header(1) + body

    def login(self, user: str, password: str) -> None:
        status, _ = self.call(self.negotiate_request())
        assert status == 0
        ctx = spnego.client(user, password, protocol="ntlm")
        token = ctx.step()
        assert token is not None
        status, resp = self.call(self.session_setup_request(token))
        assert status == 0xC0000016, hex(status)
        self.session_id = int.from_bytes(resp[40:48], "little")
        off, length = struct.unpack_from("<HH", resp, 68)
        token = ctx.step(resp[off : off + length])
        assert token is not None
        status, _ = self.call(self.session_setup_request(token))
        assert status == 0, hex(status)

    def tree_connect_request(self, share: str) -> bytes:
        path = f"\\\\127.0.0.1\\{share}".encode("utf-16-le")
        return self.header(3) + struct.pack("<HHHH", 9, 0, 72, len(path)) + path

    def tree_connect(self, share: str) -> None:
        status, resp = self.call(self.tree_connect_request(share))
        assert status == 0, hex(status)
        self.tree_id = int.from_bytes(resp[36:40], "little")

    def create_request(self, name: str, disposition: int = 3, options: int = 0x40) -> bytes:
        raw = name.encode("utf-16-le")
        body = struct.pack(
            "<HBBIQQIIIIIHHII",
            57,
            0,
            0,
            2,
            0,
            0,
            0x0012019F,
            0x80,
            7,
            disposition,
            options,
            120,
            len(raw),
            0,
            0,
        )
        return self.header(5) + body + (raw or b"\x00")

    def create(self, name: str, disposition: int = 3, options: int = 0x40) -> bytes:
        status, resp = self.call(self.create_request(name, disposition, options))
        assert status == 0, hex(status)
        return resp[64 + 64 : 64 + 80]

    def templates(self, file_id: bytes, dir_id: bytes) -> list[bytes]:
        """Well-formed requests of most commands, for mutation."""
        h = self.header
        data = b"hello fuzz"
        name = "fz*".encode("utf-16-le")
        return [
            self.create_request("fuzz.bin"),
            self.create_request("dir\\sub.txt", 2, 0x1),
            h(6) + struct.pack("<HHI16s", 24, 1, 0, file_id),
            h(7) + struct.pack("<HHI16s", 24, 0, 0, file_id),
            h(8) + struct.pack("<HBBIQ16sIIIHHB", 49, 0, 0, 4096, 0, file_id, 0, 0, 0, 0, 0, 0),
            h(9)
            + struct.pack("<HHIQ16sIIHHI", 49, 112, len(data), 0, file_id, 0, 0, 0, 0, 0)
            + data,
            h(10) + struct.pack("<HHI16sQQII", 48, 1, 0, file_id, 0, 10, 0x12, 0),
            h(11)
            + struct.pack(
                "<HHI16sIIIIIIII", 57, 0, 0x00140204, b"\xff" * 16, 120, 8, 0, 0, 0, 64, 1, 0
            )
            + b"\x00" * 8,
            h(11)
            + struct.pack(
                "<HHI16sIIIIIIII", 57, 0, 0x000940CF, file_id, 120, 16, 0, 0, 0, 1024, 1, 0
            )
            + struct.pack("<qq", 0, 4096),
            h(13) + struct.pack("<HH", 4, 0),
            h(14) + struct.pack("<HBBI16sHHI", 33, 37, 1, 0, dir_id, 96, len(name), 65536) + name,
            h(15) + struct.pack("<HHI16sII", 32, 0, 1024, dir_id, 0x17, 0),
            h(16) + struct.pack("<HBBIHHIII16s", 41, 1, 18, 4096, 0, 0, 0, 0, 0, file_id),
            h(16) + struct.pack("<HBBIHHIII16s", 41, 2, 5, 4096, 0, 0, 0, 0, 0, file_id),
            h(16) + struct.pack("<HBBIHHIII16s", 41, 3, 0, 4096, 0, 0, 0, 7, 0, file_id),
            h(17)
            + struct.pack("<HBBIHHI16s", 33, 1, 20, 8, 96, 0, 0, file_id)
            + struct.pack("<Q", 5),
            h(17)
            + struct.pack("<HBBIHHI16s", 33, 1, 10, 20 + 8, 96, 0, 0, file_id)
            + struct.pack("<BxxxxxxxQI", 1, 0, 8)
            + "a.bn".encode("utf-16-le"),
            h(18) + struct.pack("<HBBI16s", 24, 1, 0, 0, file_id),
            h(18) + struct.pack("<HHI16sIQ", 36, 0, 0, b"k" * 16, 0, 0),
            h(4) + struct.pack("<HH", 4, 0),
            h(2) + struct.pack("<HH", 4, 0),
            h(12) + struct.pack("<HH", 4, 0),
        ]
