"""Newline-delimited JSON streams (etcd and Kubernetes watches) of any line length."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp


async def iter_lines(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """Yield complete non-empty lines.

    aiohttp's own line iteration refuses lines above 128 KiB; a watch event
    carrying a whole ConfigMap shard can be close to 1 MiB.
    """
    buf = bytearray()
    async for chunk in content.iter_any():
        buf += chunk
        start = 0
        while (nl := buf.find(b"\n", start)) >= 0:
            line = bytes(buf[start:nl]).strip()
            if line:
                yield line
            start = nl + 1
        del buf[:start]
    if bytes(buf).strip():
        yield bytes(buf).strip()
