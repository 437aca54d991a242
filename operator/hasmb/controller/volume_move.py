"""The operator's side of a volume move (docs/volume-move.md).

A Share's `spec.volume` says where its data should be, `status.volume` where
the pods serve it from now (the rendered config follows `status.volume`). When
they differ, each SVM reconcile asks the owner pod's admin endpoint
(`status.podIP`:9300, `POST /volume-move?share=&destination=`) to move the
share, mirrors its progress into `status.volumeMove`, and once hasmb-smbd
reports the cutover Completed, sets `status.volume`, so the same reconcile
renders the new path into the ConfigMap: the standby and any later owner
serve the destination too.

The decision is a pure function of the Share, the SVM and the pod's answer
(`next_step`); `drive` does the I/O. A takeover during a move re-asks the new
owner with `restart=true`: it syncs the partial copy instead of refusing a
non-empty destination.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from hasmb.contract import ADMIN_PORT, ANN_ADMIN_ADDRESS
from hasmb.controller import status_writer
from hasmb.controller.model import SVM, Share
from hasmb.controller.runtime import Runtime
from hasmb.kube.client import SHARES, ApiError

log = logging.getLogger("hasmb.controller.volume_move")

Body = dict[str, Any]
POLL_SECONDS = 0.3
HTTP_TIMEOUT = 3.0
RUNNING = ("Starting", "Copying", "CuttingOver")


@dataclass(frozen=True)
class Step:
    """What to do about one Share now."""

    action: str  # none | invalid | wait | start | progress | complete | fail
    status: dict[str, Any]
    event: tuple[str, str, bool] | None = None  # reason, message, warning


def _now() -> str:
    return status_writer.iso(time.time())


def next_step(
    share: Share, svm: SVM, status: dict[str, Any], remote: dict[str, Any] | None
) -> Step:
    """`remote`: the owner's `GET /volume-move?share=` answer (None: no move known there)."""
    current = share.current_volume
    # status.volume is first written with the Share's status (the data is where
    # spec.volume said); until then there is nothing to move
    if current is None or share.volume == current:
        return Step("none", {})
    last = dict(status.get("volumeMove") or {})
    if share.volume not in svm.volume_names():
        msg = (
            f"spec.volume {share.volume!r} is not a volume of SVM {svm.meta.name} "
            f"(root or one of spec.volumes: {', '.join(sorted(svm.volume_names()))})"
        )
        if last.get("phase") == "Failed" and last.get("message") == msg:
            return Step("none", {})
        return Step(
            "invalid",
            {"volumeMove": {**last, "phase": "Failed", "to": share.volume, "message": msg}},
            ("VolumeNotFound", msg, True),
        )
    dest = share.path_on(share.volume) or ""
    if last.get("to") == share.volume and last.get("phase") == "Failed" and remote is None:
        return Step("none", {})  # failed before: a new spec.volume retries
    if remote is None or remote.get("destination") != dest:
        restart = last.get("to") == share.volume and last.get("phase") in RUNNING
        return Step(
            "start",
            {
                "volumeMove": {
                    "phase": "Starting",
                    "from": current,
                    "to": share.volume,
                    "bytesCopied": 0,
                    "passes": 0,
                    "message": f"asking the owner to move {share.share_name} to {dest}",
                    "startTime": last.get("startTime") if restart else _now(),
                    "restart": restart,
                }
            },
            ("VolumeMoveStarted", f"moving share data from {current} to {share.volume}", False)
            if not restart
            else None,
        )
    phase = str(remote.get("phase") or "")
    progress: dict[str, Any] = {
        "phase": phase,
        "from": current,
        "to": share.volume,
        "bytesCopied": int(remote.get("bytesCopied") or 0),
        "passes": int(remote.get("passes") or 0),
        "startTime": last.get("startTime") or _now(),
    }
    if remote.get("copyRateMBps") is not None:
        progress["copyRateMBps"] = remote["copyRateMBps"]
    if remote.get("pauseSeconds") is not None:
        progress["pauseSeconds"] = remote["pauseSeconds"]
    if phase == "Completed":
        message = (
            f"cut over to {dest} with a pause of {remote.get('pauseSeconds')} s; "
            f"{progress['bytesCopied']} bytes in {progress['passes']} passes"
        )
        progress.update(completionTime=_now(), message=message)
        return Step(
            "complete",
            # exportPath moves with volume in the same patch: a reader never sees
            # the new volume next to the old path.
            {
                "volume": share.volume,
                "exportPath": share.path_on(share.volume),
                "volumeMove": progress,
            },
            ("VolumeMoveCompleted", message, False),
        )
    if phase == "Failed":
        error = str(remote.get("error") or "failed")
        progress.update(completionTime=_now(), message=error)
        if last.get("phase") == "Failed":
            return Step("none", {})
        return Step("fail", {"volumeMove": progress}, ("VolumeMoveFailed", error, True))
    progress["message"] = f"{phase.lower()} to {dest}"
    return Step("progress", {"volumeMove": progress})


def admin_address(pod: Body | None) -> tuple[str, int]:
    if pod is None:
        return "", ADMIN_PORT
    override = ((pod.get("metadata") or {}).get("annotations") or {}).get(ANN_ADMIN_ADDRESS)
    if override:
        host, _, port = str(override).rpartition(":")
        if host and port.isdigit():
            return host, int(port)
    return str((pod.get("status") or {}).get("podIP") or ""), ADMIN_PORT


async def admin_call(
    host: str, method: str, params: dict[str, str], port: int = ADMIN_PORT
) -> tuple[int, dict[str, Any]]:
    """One HTTP request to a pod's admin endpoint (asyncio; bounded by HTTP_TIMEOUT)."""
    target = f"/volume-move?{urllib.parse.urlencode(params)}"

    async def call() -> tuple[int, dict[str, Any]]:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(
                f"{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        code = int(head.split(b" ", 2)[1])
        return code, json.loads(body or b"{}")

    return await asyncio.wait_for(call(), HTTP_TIMEOUT)


async def drive(
    rt: Runtime,
    svm: SVM,
    share_bodies: list[Body],
    owner: str | None,
    pods: dict[str, Body],
    serving: bool,
) -> tuple[list[Body], float | None]:
    """Advance every Share's move one step; returns the (possibly updated) bodies and
    when to look again."""
    out: list[Body] = []
    requeue: float | None = None
    for body in share_bodies:
        share = Share.from_body(body)
        if share.validate():
            out.append(body)
            continue
        status = dict(body.get("status") or {})
        moving = share.current_volume is not None and share.volume != share.current_volume
        remote: dict[str, Any] | None = None
        host, port = "", ADMIN_PORT
        if moving and share.volume in svm.volume_names():
            host, port = admin_address(pods.get(owner or ""))
            if not serving or not host:
                requeue = min(requeue or 2.0, 2.0)  # no owner to ask yet
                out.append(body)
                continue
            try:
                code, answer = await admin_call(host, "GET", {"share": share.share_name}, port)
            except (OSError, TimeoutError, ValueError, IndexError) as exc:
                log.info("volume move of %s: owner %s unreachable: %s", share.share_name, host, exc)
                out.append(body)
                requeue = min(requeue or 2.0, 2.0)
                continue
            remote = answer if code == 200 else None
        step = next_step(share, svm, status, remote)
        if step.action == "start":
            params = {
                "share": share.share_name,
                "destination": share.path_on(share.volume) or "",
            }
            # the destination is this share's path on its volume: a leftover there (an
            # interrupted attempt, or the data of an earlier move away) is synced over
            step.status["volumeMove"].pop("restart")
            params["restart"] = "true"
            try:
                code, answer = await admin_call(host, "POST", params, port)
            except (OSError, TimeoutError, ValueError, IndexError) as exc:
                code, answer = 0, {"error": str(exc)}
            if code != 202:
                msg = f"the owner refused the move ({code}): {answer.get('error')}"
                step = Step(
                    "fail",
                    {
                        "volumeMove": {
                            **step.status["volumeMove"],
                            "phase": "Failed",
                            "message": msg,
                            "completionTime": _now(),
                        }
                    },
                    ("VolumeMoveFailed", msg, True),
                )
        if step.action in ("start", "progress"):
            requeue = POLL_SECONDS
        if step.status:
            body = await _patch(rt, body, step.status)
        if step.event is not None:
            reason, message, warning = step.event
            await status_writer.event(rt, body, reason, message, warning)
        out.append(body)
    return out, requeue


async def _patch(rt: Runtime, body: Body, status: dict[str, Any]) -> Body:
    md = body["metadata"]
    try:
        patched = await rt.kube.patch_status(SHARES, md["namespace"], md["name"], status)
    except ApiError as exc:
        if exc.not_found:
            return body
        raise
    rt.store.put("Share", patched)
    return patched
