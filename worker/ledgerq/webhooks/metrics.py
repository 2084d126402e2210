"""The webhook process's Prometheus metrics (served with `--metrics-port`, as a worker's are)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class WebhookMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.attempts = Counter(
            "ledgerq_webhook_attempts",
            "Delivery attempts made, by how they ended (delivered, failed: a non-2xx, an error or a refused target)",
            ["result"],
            registry=self.registry,
        )
        self.settled = Counter(
            "ledgerq_webhook_deliveries_settled",
            "Deliveries that reached a final status (delivered, or failed after the last attempt)",
            ["status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "ledgerq_webhook_attempt_seconds",
            "How long an attempt took, connect to answer",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.in_flight = Gauge("ledgerq_webhook_in_flight", "Attempts under way", registry=self.registry)
