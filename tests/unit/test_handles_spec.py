"""Parsing of --state store specifications."""

from __future__ import annotations

import pytest

from hasmb.handles import StoreSpecError, open_store, parse_store_spec
from hasmb.handles.etcd_store import EtcdHandleStore
from hasmb.handles.file_store import FileHandleStore


def test_file_spec() -> None:
    spec = parse_store_spec("file:/export/.hasmb-state")
    assert (spec.kind, spec.location) == ("file", "/export/.hasmb-state")


def test_configmap_spec_with_options() -> None:
    spec = parse_store_spec("configmap:hasmb-system/svm1-handles?shards=4")
    assert (spec.kind, spec.namespace, spec.name) == ("configmap", "hasmb-system", "svm1-handles")
    assert spec.options == {"shards": "4"}


def test_etcd_spec_prefix() -> None:
    spec = parse_store_spec("etcd:http://127.0.0.1:2379/svm1")
    assert (spec.kind, spec.location, spec.prefix) == ("etcd", "http://127.0.0.1:2379", "/svm1")
    assert parse_store_spec("etcd:http://10.0.0.1:2379").prefix == "/hasmb/handles"


def test_etcd_spec_endpoints_and_tls() -> None:
    spec = parse_store_spec(
        "etcd:https://a:2379,https://b:2379/svm1?cacert=/ca.pem&cert=/c.pem&key=/k.pem"
    )
    assert spec.location == "https://a:2379,https://b:2379"
    assert spec.prefix == "/svm1"
    assert spec.options == {"cacert": "/ca.pem", "cert": "/c.pem", "key": "/k.pem"}
    with pytest.raises(StoreSpecError):
        parse_store_spec("etcd:http://a:2379/x,http://b:2379/y")


@pytest.mark.parametrize(
    "bad",
    ["", "file:", "nfs:/x", "configmap:onlyname", "configmap:ns/a/b", "etcd:127.0.0.1:2379"],
)
def test_bad_specs(bad: str) -> None:
    with pytest.raises(StoreSpecError):
        parse_store_spec(bad)


def test_open_store_picks_backend(tmp_path: object) -> None:
    assert isinstance(open_store(f"file:{tmp_path}"), FileHandleStore)
    store = open_store("etcd:http://127.0.0.1:2379,http://127.0.0.2:2379/p")
    assert isinstance(store, EtcdHandleStore)
    assert store.prefix == "/p"
    assert store.endpoints == ["http://127.0.0.1:2379", "http://127.0.0.2:2379"]
