"""Parsing of store specifications ("file:DIR", "configmap:NS/NAME", "etcd:URL")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

from hasmb.handles.errors import StoreSpecError

DEFAULT_ETCD_PREFIX = "/hasmb/handles"


@dataclass(frozen=True)
class StoreSpec:
    """A parsed store specification.

    - file: `location` is the directory.
    - configmap: `namespace` and `name`; options from "?k=v" (e.g. shards=8).
    - etcd: `location` is the comma-separated endpoint list (scheme://host:port),
      `prefix` the key prefix (the URL's path, default /hasmb/handles),
      options cacert/cert/key for TLS.
    """

    kind: Literal["file", "configmap", "etcd"]
    location: str = ""
    namespace: str = ""
    name: str = ""
    prefix: str = ""
    options: dict[str, str] = field(default_factory=dict)


def parse_store_spec(spec: str) -> StoreSpec:
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise StoreSpecError(
            f"store spec {spec!r}: expected file:DIR, configmap:NS/NAME or etcd:URL"
        )
    if kind == "file":
        return StoreSpec("file", location=rest)
    if kind == "configmap":
        path, _, query = rest.partition("?")
        ns, slash, name = path.partition("/")
        if not slash or not ns or not name or "/" in name:
            raise StoreSpecError(f"store spec {spec!r}: expected configmap:NAMESPACE/NAME")
        return StoreSpec("configmap", namespace=ns, name=name, options=dict(parse_qsl(query)))
    if kind == "etcd":
        # etcd:URL[,URL...][/PREFIX][?cacert=..&cert=..&key=..]: several
        # endpoints of one cluster, tried in turn; the prefix may follow any.
        rest, _, query = rest.partition("?")
        endpoints: list[str] = []
        prefixes = set()
        for part in rest.split(","):
            url = urlsplit(part)
            if url.scheme not in ("http", "https") or not url.netloc:
                raise StoreSpecError(
                    f"store spec {spec!r}: expected etcd:http://HOST:PORT[,http://HOST:PORT][/PREFIX]"
                )
            endpoints.append(f"{url.scheme}://{url.netloc}")
            if url.path.rstrip("/"):
                prefixes.add(url.path.rstrip("/"))
        if len(prefixes) > 1:
            raise StoreSpecError(f"store spec {spec!r}: endpoints name different prefixes")
        return StoreSpec(
            "etcd",
            location=",".join(endpoints),
            prefix=prefixes.pop() if prefixes else DEFAULT_ETCD_PREFIX,
            options=dict(parse_qsl(query)),
        )
    raise StoreSpecError(f"store spec {spec!r}: unknown backend {kind!r}")
