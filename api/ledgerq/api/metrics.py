"""The API's Prometheus metrics: the cluster as Redis and Postgres see it, per partition, read at scrape time.

Queue depth, in flight, oldest-job age and the lease owner come from Redis; commands by status from
Postgres. Each worker serves its own counters and histograms (`ledgerq.worker.metrics`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ledgerq.shared.observe import applied_counts, partition_states
from ledgerq.shared.schema import STORED_STATUSES

if TYPE_CHECKING:
    from ledgerq.api.context import Context


class PartitionCollector(Collector):
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "ledgerq_queue_depth", "Commands waiting in the partition's queue", labels=["partition"]
        )
        inflight = GaugeMetricFamily(
            "ledgerq_inflight", "Commands taken by the owner, not yet completed", labels=["partition"]
        )
        lag = GaugeMetricFamily(
            "ledgerq_queue_lag_seconds",
            "Age of the oldest unfinished job (in flight, else the queue's head); 0 when empty",
            labels=["partition"],
        )
        owned = GaugeMetricFamily(
            "ledgerq_partition_owned", "1 if a worker holds the partition's lease", labels=["partition"]
        )
        owner = GaugeMetricFamily(
            "ledgerq_partition_owner",
            "1 for the worker (host:pid:token) holding the partition's lease",
            labels=["partition", "owner"],
        )
        for state in partition_states(self.ctx.redis, self.ctx.settings.redis_keys, self.ctx.settings.partitions):
            label = [str(state.partition)]
            depth.add_metric(label, state.queued)
            inflight.add_metric(label, state.inflight)
            lag.add_metric(label, state.oldest_age_s or 0.0)
            owned.add_metric(label, 1.0 if state.owner else 0.0)
            if state.owner:
                owner.add_metric([*label, state.owner], 1.0)
        commands = GaugeMetricFamily(
            "ledgerq_commands",
            "Commands by partition and status (failed counts poison commands)",
            labels=["partition", "status"],
        )
        counts = applied_counts(self.ctx.engine)
        for partition in range(self.ctx.settings.partitions):
            for status in STORED_STATUSES:
                commands.add_metric([str(partition), status], counts.get((partition, status), 0))
        yield from (depth, inflight, lag, owned, owner, commands)


def registry_for(ctx: Context) -> CollectorRegistry:
    if ctx.metrics_registry is None:
        ctx.metrics_registry = CollectorRegistry()
        ctx.metrics_registry.register(PartitionCollector(ctx))
    return ctx.metrics_registry
