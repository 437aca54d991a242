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
    - etcd: `location` is the base URL (scheme://host:port), `prefix` the key
      prefix (the URL's path, default /hasmb/handles).
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
        url = urlsplit(rest)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise StoreSpecError(f"store spec {spec!r}: expected etcd:http://HOST:PORT[/PREFIX]")
        prefix = url.path.rstrip("/") or DEFAULT_ETCD_PREFIX
        return StoreSpec(
            "etcd",
            location=f"{url.scheme}://{url.netloc}",
            prefix=prefix,
            options=dict(parse_qsl(url.query)),
        )
    raise StoreSpecError(f"store spec {spec!r}: unknown backend {kind!r}")
