"""A small JSON client over kubernetes_asyncio's authenticated transport.

Bodies go in and come out as plain dicts (what the renderers produce and what
kopf hands to handlers), so there is one code path for every resource type.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config

MERGE_PATCH = "application/merge-patch+json"

# Items of a LIST (named here: inside KubeClient, `list` is the method).
Items = list[dict[str, Any]]


def resource_version(body: dict[str, Any]) -> int:
    """metadata.resourceVersion of an object or a LIST as a number (0: none or opaque)."""
    try:
        return int((body.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409


@dataclass(frozen=True, slots=True)
class Resource:
    group: str  # "" for the core API
    version: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None, sub: str = "") -> str:
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        if sub:
            base += f"/{sub}"
        return base


PODS = Resource("", "v1", "pods")
SERVICES = Resource("", "v1", "services")
CONFIGMAPS = Resource("", "v1", "configmaps")
EVENTS = Resource("", "v1", "events")
NODES = Resource("", "v1", "nodes", namespaced=False)
SERVICEACCOUNTS = Resource("", "v1", "serviceaccounts")
ROLEBINDINGS = Resource("rbac.authorization.k8s.io", "v1", "rolebindings")
LEASES = Resource("coordination.k8s.io", "v1", "leases")
HAPAIRS = Resource("hasmb.io", "v1alpha1", "hapairs")
SVMS = Resource("hasmb.io", "v1alpha1", "svms")
SHARES = Resource("hasmb.io", "v1alpha1", "shares")
LIFS = Resource("hasmb.io", "v1alpha1", "lifs")

BY_KIND = {
    "HAPair": HAPAIRS,
    "SVM": SVMS,
    "Share": SHARES,
    "LIF": LIFS,
    "Pod": PODS,
    "Service": SERVICES,
    "ConfigMap": CONFIGMAPS,
    "Lease": LEASES,
    "Node": NODES,
}


async def load_config(kubeconfig: str | None = None) -> k8s_client.Configuration:
    cfg = k8s_client.Configuration()
    if kubeconfig or os.environ.get("KUBECONFIG") or not os.environ.get("KUBERNETES_SERVICE_HOST"):
        await k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    else:
        k8s_config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    return cfg


class KubeClient:
    """JSON in, JSON out; raises ApiError for any non-2xx answer."""

    def __init__(self, cfg: k8s_client.Configuration) -> None:
        self._api = k8s_client.ApiClient(cfg)

    @classmethod
    async def connect(cls, kubeconfig: str | None = None) -> KubeClient:
        return cls(await load_config(kubeconfig))

    async def close(self) -> None:
        await self._api.close()

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        resp = await self._api.call_api(
            path,
            method,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _return_http_data_only=True,
        )
        try:
            raw = await resp.read()
            status = int(resp.status)
        finally:
            resp.release()
        data: dict[str, Any] = json.loads(raw) if raw else {}
        if not 200 <= status <= 299:
            raise ApiError(status, str(data.get("reason", "")), str(data.get("message", raw[:300])))
        return data

    async def get(self, res: Resource, namespace: str | None, name: str) -> dict[str, Any]:
        return await self.request("GET", res.path(namespace, name))

    async def get_or_none(
        self, res: Resource, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        try:
            return await self.get(res, namespace, name)
        except ApiError as exc:
            if exc.not_found:
                return None
            raise

    async def list(
        self, res: Resource, namespace: str | None = None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        return (await self.list_versioned(res, namespace, label_selector))[0]

    async def list_versioned(
        self, res: Resource, namespace: str | None = None, label_selector: str | None = None
    ) -> tuple[Items, int]:
        """The items and the list's resourceVersion (the snapshot they belong to)."""
        query = [("labelSelector", label_selector)] if label_selector else []
        data = await self.request("GET", res.path(namespace), query=query)
        items: Items = data.get("items") or []
        kind = data.get("kind", "")
        if kind.endswith("List"):
            # List items come without kind/apiVersion; watch events carry them.
            for item in items:
                item.setdefault("kind", kind[: -len("List")])
                item.setdefault("apiVersion", data.get("apiVersion", ""))
        return items, resource_version(data)

    async def watch(
        self,
        res: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        resource_version: str | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield watch events ({type, object}) until the server ends the stream."""
        query = [("watch", "1"), ("allowWatchBookmarks", "false")]
        if label_selector:
            query.append(("labelSelector", label_selector))
        if resource_version:
            query.append(("resourceVersion", resource_version))
        resp = await self._api.call_api(
            res.path(namespace),
            "GET",
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
            _preload_content=False,
            _return_http_data_only=True,
        )
        try:
            if not 200 <= int(resp.status) <= 299:
                raise ApiError(
                    int(resp.status), str(resp.reason), (await resp.read())[:300].decode()
                )
            async for line in resp.content:
                if line.strip():
                    yield json.loads(line)
        finally:
            resp.release()

    async def create(self, res: Resource, body: dict[str, Any]) -> dict[str, Any]:
        namespace = (body.get("metadata") or {}).get("namespace")
        return await self.request("POST", res.path(namespace), body=body)

    async def replace(self, res: Resource, body: dict[str, Any]) -> dict[str, Any]:
        md = body.get("metadata") or {}
        return await self.request("PUT", res.path(md.get("namespace"), md["name"]), body=body)

    async def patch(
        self,
        res: Resource,
        namespace: str | None,
        name: str,
        patch: dict[str, Any],
        subresource: str = "",
    ) -> dict[str, Any]:
        return await self.request(
            "PATCH", res.path(namespace, name, subresource), body=patch, content_type=MERGE_PATCH
        )

    async def patch_status(
        self, res: Resource, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        return await self.patch(res, namespace, name, {"status": status}, "status")

    async def delete(self, res: Resource, namespace: str | None, name: str) -> bool:
        """True when something was deleted; a missing object is not an error."""
        try:
            await self.request("DELETE", res.path(namespace, name))
        except ApiError as exc:
            if exc.not_found:
                return False
            raise
        return True

    async def event(
        self,
        involved: dict[str, Any],
        reason: str,
        message: str,
        warning: bool = False,
    ) -> None:
        """Post a core/v1 Event about `involved` (a full object body)."""
        md = involved.get("metadata") or {}
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        namespace = md.get("namespace") or "default"
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{md.get('name', 'hasmb')}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion"),
                "kind": involved.get("kind"),
                "name": md.get("name"),
                "namespace": md.get("namespace"),
                "uid": md.get("uid"),
            },
            "reason": reason,
            "message": message[:1000],
            "type": "Warning" if warning else "Normal",
            "source": {"component": "hasmb-operator"},
            "reportingComponent": "hasmb-operator",
            "reportingInstance": socket.gethostname(),
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self.request("POST", EVENTS.path(namespace), body=body)
