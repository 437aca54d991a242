"""Shared pytest configuration: tier markers are declared in pyproject.toml.

Tests in tests/unit are marked `unit`, tests/protocol `protocol`, tests/cluster
`cluster`, tests/e2e `e2e` automatically, so `pytest -m unit` runs in seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import KubeCluster, cluster_session

_TIERS = ("unit", "protocol", "cluster", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for tier in _TIERS:
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[KubeCluster]:
    """hack/cluster's control plane (contract 1): reused if up, else brought up for the session."""
    yield from cluster_session()
