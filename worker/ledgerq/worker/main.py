"""`ledgerq worker`: one owner loop per partition, in threads, until SIGTERM or SIGINT.

With `--partition` the process serves exactly those partitions. Without, it
joins the live workers (`ledgerq.worker.membership`) and serves its share, starting and
handing back partitions as workers come and go. A signal, or a hand-back, lets
the loop finish the batch in hand and release the lease, so the next owner can
start at once instead of waiting for the lease to lapse.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from types import FrameType

from sqlalchemy import Engine

from ledgerq.shared.db import check_partitions, make_engine
from ledgerq.shared.outages import is_transient
from ledgerq.shared.redis_client import RedisClient, connect
from ledgerq.shared.settings import Settings
from ledgerq.worker.lease import new_token
from ledgerq.worker.membership import Membership, wanted
from ledgerq.worker.metrics import WorkerMetrics
from ledgerq.worker.runner import PartitionRunner

log = logging.getLogger("ledgerq.worker")

# Postgres ends a session idle inside a transaction after this long, so a paused
# ex-owner cannot hold the partition row lock (and block its successor) for ever.
IDLE_IN_TRANSACTION_MS = 10_000


def redis_for_worker(settings: Settings) -> RedisClient:
    # The blocking wait is at most a third of the lease; the socket must outlast it.
    timeout_s = settings.lease_ttl_ms / 1000 + 5
    while True:
        try:
            return connect(
                settings.redis_url, socket_timeout=timeout_s, socket_connect_timeout=5, health_check_interval=30
            )
        except Exception as exc:  # a cluster client asks its nodes for the slots at once
            if not is_transient(exc):
                raise
            log.warning("redis unreachable (%s); retrying", exc)
            time.sleep(settings.backoff_s_max)


@dataclass
class Running:
    """The partition loops this process runs; each has its own stop so it can be handed back alone."""

    settings: Settings
    engine: Engine
    metrics: WorkerMetrics
    crashed: list[BaseException] = field(default_factory=list)
    loops: dict[int, tuple[threading.Thread, threading.Event]] = field(default_factory=dict)
    leaving: dict[int, threading.Thread] = field(default_factory=dict)

    def start(self, partition: int, any_stop: threading.Event) -> None:
        own_stop = threading.Event()
        runner = PartitionRunner(
            partition, self.settings, self.engine, redis_for_worker(self.settings), own_stop, self.metrics
        )

        def guarded() -> None:
            try:
                runner.run()
            except BaseException as exc:  # a bug: stop everything so the supervisor restarts us
                log.exception("partition %s crashed", partition)
                self.crashed.append(exc)
                any_stop.set()

        thread = threading.Thread(target=guarded, name=f"partition-{partition}", daemon=True)
        self.loops[partition] = (thread, own_stop)
        thread.start()

    def hand_back(self, partition: int) -> None:
        """Let the loop finish its batch and release the lease, without waiting for it here."""
        thread, own_stop = self.loops.pop(partition)
        own_stop.set()
        self.leaving[partition] = thread

    def busy(self) -> set[int]:
        return set(self.loops) | set(self.leaving)

    def reap(self) -> None:
        for partition in [p for p, (t, _) in self.loops.items() if not t.is_alive()]:
            del self.loops[partition]
        for partition in [p for p, t in self.leaving.items() if not t.is_alive()]:
            del self.leaving[partition]

    def stop_all(self) -> None:
        for partition in list(self.loops):
            self.hand_back(partition)
        for thread in self.leaving.values():
            thread.join()
        self.leaving.clear()


def run_worker(
    settings: Settings,
    partitions: list[int] | None,
    stop: threading.Event | None = None,
    metrics_port: int | None = None,
) -> None:
    """Serve `partitions`, or (None) claim a share of them alongside the other live workers."""
    stop = stop or threading.Event()
    metrics = WorkerMetrics()
    server = metrics.serve(metrics_port, settings.metrics_host)[0] if metrics_port else None
    settings.signing_keys()  # refuse to start without the key that proves a job came from the API
    engine = make_engine(
        settings,
        pool_size=max(2, len(partitions) if partitions else settings.partitions),
        options=f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}",
    )
    running = Running(settings, engine, metrics)
    try:
        check_partitions(engine, settings.partitions)
        bad = [p for p in partitions or [] if not 0 <= p < settings.partitions]
        if bad:
            raise SystemExit(f"partitions {bad} do not exist (P = {settings.partitions})")
        if partitions:
            _serve_fixed(running, partitions, stop)
        else:
            _serve_claimed(running, stop)
    finally:
        stop.set()
        running.stop_all()
        engine.dispose()
        if server is not None:
            server.shutdown()
            server.server_close()
    if running.crashed:
        raise SystemExit(f"worker stopped: {running.crashed[0]!r}")


def _serve_fixed(running: Running, partitions: list[int], stop: threading.Event) -> None:
    for partition in partitions:
        running.start(partition, stop)
    log.info("worker serving partitions %s", partitions)
    while not stop.wait(0.5) and running.loops:
        running.reap()


def _serve_claimed(running: Running, stop: threading.Event) -> None:
    settings = running.settings
    membership = Membership(redis_for_worker(settings), new_token(), settings.lease_ttl_ms)
    log.info("worker %s claiming its share of %s partitions", membership.token, settings.partitions)
    interval_s = settings.lease_renew_s
    try:
        while not stop.is_set():
            try:
                members = membership.beat()
            except Exception as exc:  # Redis away: keep serving; leases decide who may write
                log.warning("heartbeat failed (%s); retrying", exc.__class__.__name__)
                stop.wait(interval_s)
                continue
            running.reap()
            mine = wanted(membership.token, members, settings.partitions)
            for partition in sorted(set(running.loops) - mine):
                log.info("partition %s: handing back (%s live workers)", partition, len(members))
                running.hand_back(partition)
            for partition in sorted(mine - running.busy()):  # one still leaving starts on a later beat
                log.info("partition %s: claiming (%s live workers)", partition, len(members))
                running.start(partition, stop)
            stop.wait(interval_s)
    finally:
        running.stop_all()
        membership.leave()


def install_signal_handlers(stop: threading.Event) -> None:
    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: finishing the batch in hand, then releasing leases", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
