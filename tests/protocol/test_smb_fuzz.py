"""Bounded fuzzing: random and mutated packets (pre- and post-authentication), after
which the server must still serve a well-formed client and must not have crashed."""

from __future__ import annotations

import random
import struct
import time

from tests.support.smbd import SmbdProcess
from tests.support.smbproto import connect
from tests.support.smbraw import RawClient

SEED = 20261125
TIME_BUDGET = 60.0


def _mutate(rng: random.Random, msg: bytes) -> bytes:
    data = bytearray(msg)
    kind = rng.randrange(6)
    if kind == 0:  # flip a few bytes anywhere
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == 1:  # truncate
        data = data[: rng.randrange(len(data))]
    elif kind == 2:  # corrupt the body only (the header stays routable)
        if len(data) > 64:
            for _ in range(rng.randint(1, 6)):
                data[rng.randrange(64, len(data))] = rng.randrange(256)
    elif kind == 3:  # extreme values in 16/32-bit fields of the body
        if len(data) > 70:
            pos = rng.randrange(64, len(data) - 4)
            struct.pack_into("<I", data, pos, rng.choice([0, 0xFFFFFFFF, 0x7FFFFFFF, 0x10000]))
    elif kind == 4:  # append garbage / bogus compound chaining
        struct.pack_into("<I", data, 20, rng.choice([0, 8, 64, 72, 0xFFFF, len(data)]))
        data += bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
    else:  # random credit charge / flags / command
        struct.pack_into("<H", data, 6, rng.randrange(0x10000))
        struct.pack_into("<I", data, 16, rng.getrandbits(32) & 0x3000007F)
    return bytes(data)


def _drain(c: RawClient, budget: float = 0.2) -> None:
    c.sock.settimeout(budget)
    try:
        while True:
            c.recv()
    except (TimeoutError, ConnectionError, OSError):
        pass


def test_fuzz_then_serve(smbd: SmbdProcess) -> None:
    rng = random.Random(SEED)
    deadline = time.monotonic() + TIME_BUDGET
    sent = 0
    # 1. random frames and mutated NEGOTIATE before authentication
    for _ in range(150):
        c = RawClient(smbd.port, timeout=2)
        try:
            if rng.random() < 0.5:
                c.send_raw(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))))
            else:
                c.send_raw(_mutate(rng, c.negotiate_request()))
            sent += 1
            _drain(c, 0.05)
        except OSError:
            pass
        finally:
            c.close()
    # 2. mutated requests of every command inside an authenticated session
    while time.monotonic() < deadline and sent < 3000:
        c = RawClient(smbd.port)
        try:
            c.login(smbd.user, smbd.password)
            c.tree_connect("data")
            c.create("dir", 3, 0x1)
            fid = c.create("fuzz.bin")
            did = c.create("dir", 1, 0x1)
            for _ in range(200):
                tpl = rng.choice(c.templates(fid, did))
                c.send_raw(_mutate(rng, tpl) if rng.random() < 0.9 else tpl)
                sent += 1
                if rng.random() < 0.2:
                    _drain(c, 0.02)
            _drain(c, 0.2)
        except (OSError, AssertionError):
            pass  # the server may drop a connection it cannot make sense of
        finally:
            c.close()
    assert sent >= 1000
    assert smbd.alive(), smbd.log()[-3000:]
    with connect(smbd) as client:
        op = client.open("after-fuzz.txt", disposition=5)
        op.write(b"still serving", 0)
        assert op.read(0, 13) == b"still serving"
        op.close()
    log = smbd.log()
    assert "Traceback" not in log, log[log.index("Traceback") - 200 :][:4000]
