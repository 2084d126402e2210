"""The worker's own Prometheus metrics: what it applied, in what batches, how fast, which leases it holds.

One registry per `run_worker` (so tests can run several in one process), served by
prometheus-client's HTTP server on `--metrics-port` when one is given. Counters are
per process, as Prometheus expects: `sum(rate(ledgerq_worker_commands_total[5m]))`
over every worker is the cluster's throughput. Queue depth, oldest-job age and the
lease owner of every partition are cluster-wide facts read from Redis: the API's
`/metrics` serves those.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger("ledgerq.worker")

BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
APPLY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class WorkerMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.commands = Counter(
            "ledgerq_worker_commands",
            "Commands finished by this worker, by outcome (replayed: already final, nothing written)",
            ["partition", "outcome"],
            registry=r,
        )
        self.quarantined = Counter(
            "ledgerq_worker_jobs_quarantined", "Jobs refused (forged, damaged, orphaned)", ["partition"], registry=r
        )
        self.batch_size = Histogram(
            "ledgerq_worker_batch_size", "Jobs taken per batch", ["partition"], buckets=BATCH_BUCKETS, registry=r
        )
        self.apply_seconds = Histogram(
            "ledgerq_worker_apply_seconds",
            "Time to apply one batch (the fenced transaction, retries included)",
            ["partition"],
            buckets=APPLY_BUCKETS,
            registry=r,
        )
        self.lease_held = Gauge(
            "ledgerq_worker_lease_held", "1 while this worker holds the partition's lease", ["partition"], registry=r
        )
        self.lease_epoch = Gauge(
            "ledgerq_worker_lease_epoch", "Fencing epoch of the lease as last taken", ["partition"], registry=r
        )

    def serve(self, port: int, host: str) -> tuple[WSGIServer, threading.Thread]:
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        log.info("metrics on http://%s:%s/metrics", host, port)
        return server, thread
