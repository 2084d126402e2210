"""One partition's owner loop: lease, recover in-flight work, then take, apply, complete, in order.

Bounds: a batch is at most `batch_max` commands; after a small one the next take waits
`apply_linger_ms` (a trickle shares a commit); a blocking wait is at most a third of the
lease; backoff while a dependency is away is at most `backoff_s_max`; a command whose apply
raises is tried `poison_attempts_max` times alone before it is recorded `failed`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from typing import TypeVar

import psycopg
from sqlalchemy import Engine

from ledgerq.shared.errors import Fenced, LeaseLost, Stopping
from ledgerq.shared.outages import is_transient, outage
from ledgerq.shared.redis_client import RedisClient
from ledgerq.shared.rq_format import DecodedJob, decode_jobs
from ledgerq.shared.schema import CommandStatus
from ledgerq.shared.settings import Settings
from ledgerq.worker import faults
from ledgerq.worker.apply import Finished, apply_batch, order_with_orphans
from ledgerq.worker.expiry import expire_holds
from ledgerq.worker.jobs import quarantine
from ledgerq.worker.lease import Lease, bump_epoch, new_token
from ledgerq.worker.metrics import WorkerMetrics
from ledgerq.worker.orphans import requeue_commands
from ledgerq.worker.partition_queue import PartitionQueue, Taken

log = logging.getLogger("ledgerq.worker")
PRESENT_FOR_S = 60.0
PRESENT_MAX = 100_000
T = TypeVar("T")


@contextlib.contextmanager
def _unless_away() -> Iterator[None]:
    """Let a dependency's outage (or Redis refusing for now) pass; anything else is raised."""
    try:
        yield
    except Exception as exc:
        if not is_transient(exc):
            raise


PROBE_CONNECT_S = 2  # how long a worker waits to learn whether Postgres is reachable at all


def _before_commit() -> None:
    faults.hit("before_commit")


class PartitionRunner:
    def __init__(
        self,
        partition: int,
        settings: Settings,
        engine: Engine,
        redis: RedisClient,
        stop: threading.Event,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.partition = partition
        self.metrics = metrics or WorkerMetrics()
        self._label = str(partition)
        self.settings = settings
        self.engine = engine
        self.redis = redis
        self.stop = stop
        self.keys = settings.redis_keys
        self.lease = Lease(redis, partition, new_token(), settings.lease_ttl_ms, self.keys)
        self.queue = PartitionQueue(
            redis,
            partition,
            keys=self.keys,
            result_ttl_s=settings.result_ttl_s,
            failure_ttl_s=settings.failure_ttl_s,
        )
        self.epoch = 0
        self.counts: Counter[str] = Counter()
        self._renewed_at = 0.0
        self._poison_attempts: Counter[str] = Counter()
        self._hashes: dict[str, str] = {}
        self._swept_at = 0.0
        self._orphans_scanned_at = 0.0
        self._present: dict[str, float] = {}  # claim id -> when its job was last seen in Redis

    # -- the story: own the partition, serve it, let it go --------------------------------------------

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                if not self._acquire():
                    continue
                self._serve()
            except (LeaseLost, Fenced) as exc:
                self.metrics.lease_held.labels(self._label).set(0)
                log.warning("partition %s: lease lost (%s); trying to take it back", self.partition, exc)
            except Stopping:
                break
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("partition %s: dependency away (%s); retrying", self.partition, exc)
                if self.stop.wait(self.settings.backoff_s_max):
                    break  # stopping while a dependency is away: release what we can, exit cleanly
        self._release()

    def _acquire(self) -> bool:
        """Take the lease (waiting while someone else holds it), then start a new fencing epoch.

        Not while Postgres is unreachable from here: the lease would only keep a worker that can
        reach it waiting."""
        if not self._database_reachable():
            self.counts["waits"] += 1
            self._sleep(self.settings.backoff_s_max)
            return False
        if not self.lease.try_acquire() and not self.lease.take_from_dead_holder():
            holder = self.lease.holder()
            if self.counts["waits"] % 20 == 0:
                log.warning("partition %s is owned by %s; waiting for its lease", self.partition, holder)
            self.counts["waits"] += 1
            self._sleep(self.settings.lease_renew_s)
            return False
        self._renewed_at = time.monotonic()
        self.epoch = self._with_backoff(lambda: bump_epoch(self.engine, self.partition, self.lease.token))
        self.queue.register()
        self.metrics.lease_held.labels(self._label).set(1)
        self.metrics.lease_epoch.labels(self._label).set(self.epoch)
        log.info("partition %s: owned by %s at epoch %s", self.partition, self.lease.token, self.epoch)
        # Claims whose job Redis lost are applied in acceptance order by the batches and the idle scan
        # (`ledgerq.worker.apply._ORPHANS`), not queued again at the back here.
        self.counts["acquired"] += 1
        return True

    def _serve(self) -> None:
        linger_s = self.settings.apply_linger_ms / 1000
        trickle = False
        while not self.stop.is_set():
            self._renew_if_due()
            if trickle and linger_s:
                self._sleep(linger_s)  # the last batch was small: let a few more arrive, for one commit
            taken = self.queue.take(self.lease.token, self.settings.batch_max)
            trickle = 0 < len(taken.job_ids) < self.settings.linger_batch_below
            if not taken.job_ids:
                if self._apply_orphans_if_due():
                    continue  # Redis lost a backlog: drain it from the claims at full speed
                self._expire_holds_if_due()
                self.queue.wait(
                    max(
                        0.05,
                        min(1.0, self.settings.lease_renew_s, self.settings.hold_sweep_s, self.settings.orphan_scan_s),
                    )
                )
                continue
            if taken.recovered:
                self.counts["recovered"] += taken.recovered
            self.process(taken)

    def process(self, taken: Taken) -> list[Finished]:
        """Apply one taken batch and complete its jobs; the unit that a SIGTERM lets finish."""
        faults.hit("after_take")
        job_ids = taken.job_ids
        jobs = decode_jobs(job_ids, taken.data, self.settings.signing_keys(), self.keys, self.partition)
        self._hashes = {j.command_id: j.payload_hash for j in jobs if j.command_id and j.payload_hash}
        command_ids = [j.command_id for j in jobs if j.command_id is not None]
        self.metrics.batch_size.labels(self._label).observe(len(job_ids))
        started = time.perf_counter()
        finished = self._apply(command_ids) if command_ids else []
        self.metrics.apply_seconds.labels(self._label).observe(time.perf_counter() - started)
        faults.hit("after_commit")
        self._complete(jobs, finished, len(job_ids))
        return finished

    def _applier(
        self, command_ids: list[str], failures: dict[str, str] | None = None, *, orphans: bool = True
    ) -> Callable[[], list[Finished]]:
        """One apply transaction; with `orphans`, also the orphaned claims due ahead of these commands
        (not while isolating a poison command: one that raises must be tried alone)."""
        return partial(
            apply_batch,
            self.engine,
            self.partition,
            self.epoch,
            command_ids,
            failures,
            _before_commit,
            self._hashes,
            self._lost if orphans else None,
            self.settings.orphan_after_s,
        )

    def _lost(self, command_ids: list[str]) -> set[str]:
        """Which of these queued claims have no job in Redis (or only one refused as forged): orphans.

        A claim seen with its job is remembered for a minute, so a long run of claims that raced in
        out of order (two API processes) is looked up once, not in every batch it trails."""
        now = time.monotonic()
        unknown = [c for c in command_ids if now - self._present.get(c, -PRESENT_FOR_S) >= PRESENT_FOR_S]
        if not unknown:
            return set()
        with self.redis.pipeline(transaction=False) as pipe:
            for command_id in unknown:
                pipe.hget(self.keys.job_key(command_id, self.partition), "status")
            states = pipe.execute()
        if len(self._present) > PRESENT_MAX:
            self._present = {c: t for c, t in self._present.items() if now - t < PRESENT_FOR_S}
        gone = set()
        for command_id, state in zip(unknown, states, strict=True):
            if state is None or state == b"failed":
                gone.add(command_id)
            else:
                self._present[command_id] = now
        return gone

    def _release(self) -> None:
        self.metrics.lease_held.labels(self._label).set(0)
        # If Redis is away the lease lapses by itself after lease_ttl_ms.
        with _unless_away():
            self.lease.release()

    # -- apply with retries: transient faults wait in place, poison is isolated and bounded ----------

    def _apply(self, command_ids: list[str]) -> list[Finished]:
        try:
            return self._with_backoff(self._applier(command_ids))
        except (Fenced, LeaseLost, Stopping):
            raise
        except Exception:
            # Not a dependency fault: a bug or a poison command. Isolate it, keeping order.
            log.exception("partition %s: a batch of %s raised; applying one by one", self.partition, len(command_ids))
        # The orphans that batch took too, in their places: one of them may be what raised.
        order = self._with_backoff(
            partial(
                order_with_orphans, self.engine, self.partition, command_ids, self._lost, self.settings.orphan_after_s
            )
        )
        finished: list[Finished] = []
        for command_id in order:
            finished += self._apply_one(command_id)
        return finished

    def _apply_one(self, command_id: str) -> list[Finished]:
        while True:
            try:
                return self._with_backoff(self._applier([command_id], orphans=False))
            except (Fenced, LeaseLost, Stopping):
                raise
            except Exception as exc:
                self._poison_attempts[command_id] += 1
                attempts = self._poison_attempts[command_id]
                log.exception("partition %s: command %s raised (attempt %s)", self.partition, command_id, attempts)
                if attempts >= self.settings.poison_attempts_max:
                    self.counts["poison"] += 1
                    detail = f"{type(exc).__name__}: {exc}"[:500]
                    return self._with_backoff(self._applier([command_id], {command_id: detail}, orphans=False))

    def _complete(self, jobs: list[DecodedJob], finished: list[Finished], taken: int) -> None:
        by_command = {f.command_id: f for f in finished}
        self._count_orphans(finished, {j.command_id for j in jobs})
        done: list[tuple[str, str]] = []
        quarantined: list[tuple[DecodedJob, str]] = []
        for job in jobs:
            outcome = by_command.get(job.command_id) if job.command_id else None
            if outcome is None:
                # Forged, damaged or orphaned job: nothing in the ledger moves for it.
                reason = job.problem or "no matching claim in Postgres"
                log.error("partition %s: job %s quarantined: %s", self.partition, job.job_id, reason)
                self.counts["bad_jobs"] += 1
                self.metrics.quarantined.labels(self._label).inc()
                quarantined.append((job, reason))
                done.append((job.job_id, "failed"))
                continue
            if not outcome.replayed:
                self.counts[outcome.status] += 1
            self.metrics.commands.labels(self._label, "replayed" if outcome.replayed else outcome.status).inc()
            self._log_outcome(job, outcome)
            done.append((job.job_id, "failed" if outcome.status == CommandStatus.FAILED else "finished"))
        self._with_backoff(lambda: self.queue.complete(self.lease.token, done, taken))
        if quarantined:
            self._with_backoff(lambda: quarantine(self.redis, self.partition, quarantined))
            # A forged job may have overwritten a genuine one's data: queue the genuine claim again.
            named = [j.named_command_id or j.command_id for j, _ in quarantined]
            self._with_backoff(
                partial(
                    requeue_commands, self.engine, self.redis, self.partition, self.settings, list(filter(None, named))
                )
            )

    def _apply_orphans_if_due(self) -> bool:
        """While nothing is queued or in flight: apply claims overdue with no job, oldest first."""
        now = time.monotonic()
        if now - self._orphans_scanned_at < self.settings.orphan_scan_s:
            return False
        self._orphans_scanned_at = now
        finished = self._apply([])
        self._count_orphans(finished, set())
        if finished:
            self._orphans_scanned_at = 0.0  # there may be more: look again at once
        return bool(finished)

    def _count_orphans(self, finished: list[Finished], from_jobs: set[str | None]) -> None:
        orphans = [f for f in finished if f.command_id not in from_jobs and not f.replayed]
        if orphans:
            self.counts["orphans"] += len(orphans)
            for f in orphans:
                self.counts[f.status] += 1
                self.metrics.commands.labels(self._label, f.status).inc()
            log.warning(
                "partition %s: applied %s claims whose job Redis no longer had (oldest %s), in acceptance order",
                self.partition,
                len(orphans),
                orphans[0].command_id,
            )

    def _expire_holds_if_due(self) -> None:
        """Only while nothing is queued: a capture or void waiting in the queue is applied first."""
        now = time.monotonic()
        if now - self._swept_at < self.settings.hold_sweep_s:
            return
        self._swept_at = now
        expired = self._with_backoff(partial(expire_holds, self.engine, self.partition, self.epoch))
        if expired:
            self.counts["expired_holds"] += len(expired)
            log.info("partition %s: %s holds expired", self.partition, len(expired))

    # -- helpers ----------------------------------------------------------------------------------

    def _log_outcome(self, job: DecodedJob, outcome: Finished) -> None:
        # Applied is the common case: DEBUG keeps the hot path cheap; rejections and failures always show.
        level = {CommandStatus.APPLIED: logging.DEBUG, CommandStatus.REJECTED: logging.INFO}.get(
            CommandStatus(outcome.status), logging.ERROR
        )
        if not log.isEnabledFor(level):
            return
        log.log(
            level,
            "command %s %s%s",
            outcome.command_id,
            outcome.status,
            f" ({outcome.error_code})" if outcome.error_code else "",
            extra={
                "partition": self.partition,
                "command_id": outcome.command_id,
                "status": outcome.status,
                "code": outcome.error_code,
                "replayed": outcome.replayed,
                "request_id": job.request_id,
            },
        )

    def _renew_if_due(self) -> None:
        now = time.monotonic()
        if now - self._renewed_at < self.settings.lease_renew_s:
            return
        if not self.lease.renew():
            raise LeaseLost("renewal refused: the lease lapsed or another worker holds it")
        self._renewed_at = now

    def _with_backoff(self, action: Callable[[], T]) -> T:
        delay_s = 0.05
        database_away_since: float | None = None
        while True:
            try:
                return action()
            except Fenced as exc:
                raise LeaseLost(str(exc)) from exc
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("partition %s: %s; retrying in %.2fs", self.partition, exc.__class__.__name__, delay_s)
                if outage(exc) == "database":
                    database_away_since = database_away_since or time.monotonic()
                    self._hand_over_if_cut_off(time.monotonic() - database_away_since)
                else:
                    database_away_since = None
            self._sleep(delay_s)
            delay_s = min(delay_s * 2, self.settings.backoff_s_max)
            # Redis away too: the lease check on the next take decides.
            with _unless_away():
                self._renew_if_due()

    def _hand_over_if_cut_off(self, away_s: float) -> None:
        """Postgres unreachable for a whole lease: let the lease go, so that a worker on a host that
        can reach Postgres takes the partition instead of it stalling behind this one (a Postgres
        down for everyone costs only a re-take: no worker takes a lease it cannot use, `_acquire`)."""
        if away_s < self.settings.lease_ttl_ms / 1000 or self._database_reachable():
            return  # (reachable: the errors were its answers, such as a lock timeout, not a cut)
        self._release()
        raise LeaseLost(f"Postgres unreachable for {away_s:.1f}s; lease handed back")

    def _database_reachable(self) -> bool:
        """A fresh connection within PROBE_CONNECT_S: not the pool's, whose sockets may be hung on a
        dead link for the TCP user timeout (which would also hold up a SIGTERM)."""
        if self.stop.is_set():
            raise Stopping()
        url = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        try:
            psycopg.connect(url, connect_timeout=PROBE_CONNECT_S).close()
            return True
        except psycopg.Error:
            return False

    def _sleep(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise Stopping()
