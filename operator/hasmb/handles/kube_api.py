"""A small Kubernetes API client for the ConfigMap store (aiohttp, raw JSON).

The store needs exactly: GET/POST/PATCH one object, LIST by label, and a
watch stream, with control over content types and preconditions. Credentials
come from kubernetes_asyncio's loaders: an explicit kubeconfig path, else
$KUBECONFIG, else the pod's service account when running in a cluster, else
~/.kube/config. Service-account tokens rotate; the loader's refresh hook is
consulted before each request.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config

from hasmb.handles.errors import StoreClosedError, StoreError
from hasmb.handles.streams import iter_lines


class KubeApiError(StoreError):
    """The API server answered with an error status."""

    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body[:300]}")
        self.status = status


class KubeApi:
    """Authenticated JSON requests against one API server."""

    def __init__(self, kubeconfig: str | None = None, request_timeout: float = 15.0) -> None:
        self._kubeconfig = kubeconfig
        self._config: Any = None
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        # Open watch streams, closed by close(): closing the session alone
        # does not wake a reader waiting on a stream.
        self._watches: set[aiohttp.ClientResponse] = set()
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self.calls = 0

    async def _ensure(self) -> tuple[aiohttp.ClientSession, Any]:
        if self._config is None:
            cfg = k8s_client.Configuration()
            path = self._kubeconfig or os.environ.get("KUBECONFIG")
            if path:
                await k8s_config.load_kube_config(config_file=path, client_configuration=cfg)
            elif os.environ.get("KUBERNETES_SERVICE_HOST"):
                k8s_config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            else:
                await k8s_config.load_kube_config(client_configuration=cfg)
            self._config = cfg
        if self._closed:
            raise StoreClosedError("Kubernetes API client is closed")
        if self._session is None or self._session.closed:
            cfg = self._config
            ssl_ctx: ssl.SSLContext | bool = False
            if cfg.host.startswith("https"):
                if cfg.verify_ssl:
                    ssl_ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
                else:
                    ssl_ctx = ssl.create_default_context()
                    ssl_ctx.check_hostname = False
                    ssl_ctx.verify_mode = ssl.CERT_NONE
                if cfg.cert_file:
                    ssl_ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
            self._session = aiohttp.ClientSession(
                base_url=cfg.host.rstrip("/") + "/",
                connector=aiohttp.TCPConnector(ssl=ssl_ctx, limit=64),
            )
        return self._session, self._config

    async def _headers(self, cfg: Any, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        token = await cfg.get_api_key_with_prefix("BearerToken")
        if token:
            headers["Authorization"] = token
        elif cfg.username:
            headers["Authorization"] = cfg.get_basic_auth_token()
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """One request; returns the decoded object or raises KubeApiError."""
        session, cfg = await self._ensure()
        headers = await self._headers(cfg, content_type if body is not None else None)
        data = json.dumps(body, separators=(",", ":")) if body is not None else None
        self.calls += 1
        try:
            async with session.request(
                method,
                path.lstrip("/"),
                data=data,
                headers=headers,
                params=params,
                timeout=self._timeout,
            ) as resp:
                text = await resp.text()
                if resp.status >= 300:
                    raise KubeApiError(resp.status, method, path, text)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise StoreError(f"{method} {path}: {exc!r}") from exc
        result = json.loads(text)
        if not isinstance(result, dict):
            raise StoreError(f"{method} {path}: unexpected reply")
        return result

    async def watch(self, path: str, params: dict[str, str]) -> AsyncIterator[dict[str, Any]]:
        """Stream watch events ({"type", "object"}) until the server ends the watch."""
        session, cfg = await self._ensure()
        headers = await self._headers(cfg, None)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=15)
        try:
            async with session.get(
                path.lstrip("/"), headers=headers, params={**params, "watch": "1"}, timeout=timeout
            ) as resp:
                self._watches.add(resp)
                try:
                    if resp.status >= 300:
                        raise KubeApiError(resp.status, "WATCH", path, await resp.text())
                    async for line in iter_lines(resp.content):
                        event = json.loads(line)
                        if isinstance(event, dict):
                            yield event
                finally:
                    self._watches.discard(resp)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            if self._closed:
                raise StoreClosedError("Kubernetes API client is closed") from exc
            raise StoreError(f"WATCH {path}: {exc!r}") from exc

    async def close(self) -> None:
        self._closed = True
        for resp in list(self._watches):
            resp.close()
        if self._session is not None:
            await self._session.close()
            self._session = None
