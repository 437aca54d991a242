"""Prometheus metrics of the operator, on a registry owned by the Runtime (no globals)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.reconcile_seconds = Histogram(
            "hasmb_operator_reconcile_seconds",
            "Duration of one reconcile",
            ["kind"],
            buckets=_LATENCY,
            registry=r,
        )
        self.reconcile_errors = Counter(
            "hasmb_operator_reconcile_errors_total",
            "Reconciles that raised and were retried",
            ["kind"],
            registry=r,
        )
        self.ownership_moves = Counter(
            "hasmb_operator_ownership_moves_total",
            "SVM ownership changes (takeovers, givebacks, relocations)",
            ["reason"],
            registry=r,
        )
        self.move_seconds = Histogram(
            "hasmb_operator_ownership_move_seconds",
            "From the failure (or request) to the Lease and LIF Services updated",
            ["reason"],
            buckets=_LATENCY,
            registry=r,
        )
        self.lif_moves = Counter(
            "hasmb_operator_lif_moves_total", "LIF Service selector changes", ["state"], registry=r
        )
        self.queue_depth = Gauge(
            "hasmb_operator_queue_depth", "Keys waiting for a reconcile", registry=r
        )

    def serve(self, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        start_http_server(int(port), addr=host or "0.0.0.0", registry=self.registry)
