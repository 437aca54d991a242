"""Where the SVM's pods are: node -> pod IP, from a watch on the pods labelled
hasmb.io/svm=SVM (the label hasmb.io/node names the node). The standby forwards
SMB connections to the owner pod's IP (indirect access); the owner pod's IP
changes when its pod is replaced, so the map is kept current."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from hasmb.contract import LABEL_NODE, LABEL_SVM
from hasmb.handles import StoreError
from hasmb.handles.kube_api import KubeApi
from hasmb.tasks import cancel_and_wait

log = logging.getLogger("hasmb.podrt.peers")


def pod_address(pod: dict[str, Any]) -> tuple[str, str] | None:
    """(node, IP) of a live pod, or None."""
    md = pod.get("metadata") or {}
    node = (md.get("labels") or {}).get(LABEL_NODE)
    ip = (pod.get("status") or {}).get("podIP")
    if not node or not ip or md.get("deletionTimestamp"):
        return None
    return str(node), str(ip)


@dataclass(eq=False)
class PeerWatch:
    api: KubeApi
    namespace: str
    svm: str
    addresses: dict[str, str] = field(default_factory=dict)  # node -> pod IP
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    _pods: dict[str, tuple[str, str]] = field(default_factory=dict)  # pod -> (node, IP)
    _task: asyncio.Task[None] | None = None

    @property
    def path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods"

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    def _apply(self, kind: str, pod: dict[str, Any]) -> None:
        name = str((pod.get("metadata") or {}).get("name") or "")
        addr = None if kind == "DELETED" else pod_address(pod)
        if addr is None:
            self._pods.pop(name, None)
        else:
            self._pods[name] = addr
        self.addresses = dict(self._pods.values())
        self.changed.set()

    async def _run(self) -> None:
        selector = f"{LABEL_SVM}={self.svm}"
        while True:
            try:
                listing = await self.api.request(
                    "GET", self.path, params={"labelSelector": selector}
                )
                self._pods.clear()
                for pod in listing.get("items") or []:
                    self._apply("ADDED", pod)
                rv = str((listing.get("metadata") or {}).get("resourceVersion") or "")
                params = {"labelSelector": selector, "resourceVersion": rv}
                async for event in self.api.watch(self.path, params):
                    kind, obj = str(event.get("type")), event.get("object") or {}
                    if kind == "ERROR":
                        break
                    if isinstance(obj, dict):
                        self._apply(kind, obj)
            except StoreError as exc:
                log.warning("pod watch: %s", exc)
                await asyncio.sleep(0.5)
