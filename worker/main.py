"""`ledgerq worker`: run one owner loop per partition, in threads, until SIGTERM or SIGINT.

A signal lets each loop finish the batch in hand, then releases its lease so
a replacement can start at once instead of waiting for the lease to lapse.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from redis import Redis

from shared.db import check_partitions, make_engine
from shared.settings import Settings
from worker.runner import PartitionRunner

log = logging.getLogger("ledgerq.worker")

# Postgres ends a session idle inside a transaction after this long, so a paused
# ex-owner cannot hold the partition row lock (and block its successor) for ever.
IDLE_IN_TRANSACTION_MS = 10_000


def redis_for_worker(settings: Settings) -> Redis:
    # The blocking wait is at most a third of the lease; the socket must outlast it.
    timeout_s = settings.lease_ttl_ms / 1000 + 5
    return Redis.from_url(
        settings.redis_url, socket_timeout=timeout_s, socket_connect_timeout=5, health_check_interval=30
    )


def run_worker(settings: Settings, partitions: list[int], stop: threading.Event | None = None) -> None:
    stop = stop or threading.Event()
    settings.signing_keys()  # refuse to start without the key that proves a job came from the API
    engine = make_engine(
        settings,
        pool_size=max(2, len(partitions)),
        options=f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}",
    )
    check_partitions(engine, settings.partitions)
    bad = [p for p in partitions if not 0 <= p < settings.partitions]
    if bad:
        raise SystemExit(f"partitions {bad} do not exist (P = {settings.partitions})")
    runners = [PartitionRunner(p, settings, engine, redis_for_worker(settings), stop) for p in partitions]
    crashed: list[BaseException] = []

    def guarded(runner: PartitionRunner) -> None:
        try:
            runner.run()
        except BaseException as exc:  # a bug: stop everything so the supervisor restarts us
            log.exception("partition %s crashed", runner.partition)
            crashed.append(exc)
            stop.set()

    threads = [
        threading.Thread(target=guarded, args=(r,), name=f"partition-{r.partition}", daemon=True) for r in runners
    ]
    for thread in threads:
        thread.start()
    log.info("worker serving partitions %s", partitions)
    try:
        while any(t.is_alive() for t in threads):
            for thread in threads:
                thread.join(timeout=0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        engine.dispose()
    if crashed:
        raise SystemExit(f"worker stopped: {crashed[0]!r}")


def install_signal_handlers(stop: threading.Event) -> None:
    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: finishing the batch in hand, then releasing leases", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
