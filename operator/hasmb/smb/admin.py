"""hasmb-smbd's HTTP admin endpoint (`--admin-listen HOST:PORT`, config `adminListen`).

    GET  /status    JSON: role (owner | standby | taking-over), epoch, persistent
                    and disconnected opens, reclaims, takeover duration, ...
    GET  /metrics   the same counters in the Prometheus text format
    POST /volume-move?share=NAME&destination=PATH
                    start moving a share (202; see hasmb.smb.volume_move)
    GET  /volume-move[?share=NAME]
                    progress of the moves (phase, bytes, pause)
    POST /takeover[?epoch=N]
                    a standby takes over now (202), at epoch N when the cluster's
                    ownership record names one; an owner answers 200

Loopback or a pod-internal address only: there is no authentication.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hasmb.handles import HandleStore
    from hasmb.smb.forward import Standby
    from hasmb.smb.server import SmbServer


def status(
    server: SmbServer, store: HandleStore | None, standby: Standby | None
) -> dict[str, object]:
    ca = server.ca
    opens = [o for o in server.state.opens.values() if o.is_durable]
    out: dict[str, object] = {
        "role": standby.role if standby is not None else "owner",
        "epoch": store.epoch if store is not None else None,
        "fenced": ca.fenced.is_set(),
        "persistentOpens": sum(1 for o in opens if o.is_persistent),
        "durableOpens": len(opens),
        "disconnectedOpens": sum(1 for o in opens if o.session is None),
        "reclaims": ca.stats.reclaims,
        "expired": ca.stats.expired,
        "replays": ca.stats.replays,
        "storeWrites": ca.stats.persisted,
        "fence": server.fence.status(),
    }
    if standby is not None:
        out.update(standby.status())
    return out


_METRICS = (
    ("persistentOpens", "hasmb_smbd_persistent_opens", "gauge", "persistent opens held"),
    ("durableOpens", "hasmb_smbd_durable_opens", "gauge", "durable and persistent opens held"),
    ("disconnectedOpens", "hasmb_smbd_disconnected_opens", "gauge", "opens awaiting reclaim"),
    ("reclaims", "hasmb_smbd_reclaims_total", "counter", "DHnC/DH2C reconnects honoured"),
    ("expired", "hasmb_smbd_reclaim_expired_total", "counter", "reclaim windows that expired"),
    ("replays", "hasmb_smbd_create_replays_total", "counter", "CREATE replays answered"),
    ("storeWrites", "hasmb_smbd_store_writes_total", "counter", "handle-store writes"),
    ("epoch", "hasmb_smbd_ownership_epoch", "gauge", "epoch this server writes under"),
    ("takeoverSeconds", "hasmb_smbd_takeover_seconds", "gauge", "duration of the last takeover"),
)


def metrics(st: dict[str, object]) -> str:
    lines = []
    for key, name, kind, help_ in _METRICS:
        value = st.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {value}"]
    role = str(st.get("role", "owner"))
    lines += [
        "# HELP hasmb_smbd_role 1 for the role this server has",
        "# TYPE hasmb_smbd_role gauge",
        *(f'hasmb_smbd_role{{role="{r}"}} {int(r == role)}' for r in ("owner", "standby")),
    ]
    return "\n".join(lines) + "\n"


async def serve_admin(
    host: str,
    port: int,
    server: SmbServer,
    store: HandleStore | None,
    standby: Standby | None,
) -> asyncio.AbstractServer:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            method, target, *_ = request.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            path, _, query = target.partition("?")
            params = dict(urllib.parse.parse_qsl(query))
            code, ctype = 404, "application/json"
            payload = b'{"error": "not found"}'
            if path == "/healthz" and method == "GET":
                # the kubelet's readiness probe: the event loop answers and the SMB
                # listener is up (a TCP probe passes on a frozen process: its kernel
                # accepts), so a frozen pod turns NotReady and its LIF fails over
                listening = standby is None or standby.listening()
                recovering = standby is not None and standby.recovering()
                code = 200 if listening and not recovering else 503
                body = {"role": standby.role if standby else "owner", "listening": listening}
                if recovering:
                    body["recovering"] = True
                payload = json.dumps(body).encode()
            elif path == "/status" and method == "GET":
                code, payload = 200, json.dumps(status(server, store, standby)).encode()
            elif path == "/metrics" and method == "GET":
                code, ctype = 200, "text/plain; version=0.0.4"
                payload = metrics(status(server, store, standby)).encode()
            elif path == "/takeover" and method == "POST":
                if standby is None or standby.role == "owner":
                    code, payload = 200, b'{"role": "owner"}'
                else:
                    epoch = params.get("epoch")
                    if epoch is not None and not epoch.isdigit():
                        code, payload = 400, b'{"error": "epoch must be a number"}'
                    else:
                        standby.request_takeover("admin request", int(epoch) if epoch else None)
                        code, payload = 202, json.dumps({"role": standby.role}).encode()
            elif path == "/volume-move":
                from hasmb.smb.volume_move import admin_request

                if standby is not None and standby.role != "owner":
                    code, payload = 409, b'{"error": "only the owner moves volumes"}'
                else:
                    code, payload = admin_request(server, method, params)
            reason = {
                200: "OK",
                202: "Accepted",
                400: "Bad Request",
                403: "Forbidden",
                405: "Method Not Allowed",
                409: "Conflict",
                503: "Service Unavailable",
            }.get(code, "Not Found")
            writer.write(
                f"HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ValueError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port, reuse_address=True)
