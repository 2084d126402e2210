"""The delivery loop: fan out, claim what is due up to the free slots, send in a thread pool, record.

A SIGTERM stops claiming and lets the attempts in hand finish (each bounded by the timeout).
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import socket
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from ledgerq.shared.outages import outage
from ledgerq.shared.settings import Settings
from ledgerq.webhooks.metrics import WebhookMetrics
from ledgerq.webhooks.send import Sender
from ledgerq.webhooks.store import Attempt, RetryPolicy, claim, fan_out, record

log = logging.getLogger("ledgerq.webhooks")

LEASE_GRACE_S = 5.0


def lease_s(timeout_s: float) -> float:
    """Longer than an attempt can take (its whole deadline is the timeout), with room to record it."""
    return timeout_s + LEASE_GRACE_S


class WebhookProcess:
    def __init__(
        self, settings: Settings, engine: Engine, sender: Sender, metrics: WebhookMetrics | None = None
    ) -> None:
        self.engine = engine
        self.metrics = metrics or WebhookMetrics()
        self.sender = sender
        self.concurrency = settings.webhook_concurrency
        self.poll_s = settings.webhook_poll_s
        self.lease_s = lease_s(settings.webhook_timeout_s)
        self.backoff_s_max = settings.backoff_s_max
        self.policy = RetryPolicy(
            attempts_max=settings.webhook_max_attempts,
            age_s_max=settings.webhook_max_age_s,
            backoff_s=settings.webhook_backoff_s,
            backoff_s_max=settings.webhook_backoff_s_max,
        )
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.rng = random.Random()
        self.stop = threading.Event()

    def run(self) -> None:
        in_hand: set[Future[None]] = set()
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="ledgerq-webhook") as pool:
            while not self.stop.is_set():
                try:
                    attempts = self._round(self.concurrency - len(in_hand))
                except DBAPIError as exc:
                    if outage(exc) is None:
                        raise
                    # Postgres away: wait; nothing is lost (claims made before lapse and are made again).
                    log.warning("webhooks: database unavailable: %s", exc.orig)
                    self.stop.wait(self.backoff_s_max)
                    continue
                in_hand |= {pool.submit(self._deliver, a) for a in attempts}
                if attempts and len(in_hand) < self.concurrency:
                    continue  # more may be due
                done, in_hand = (
                    wait(in_hand, timeout=self.poll_s, return_when=FIRST_COMPLETED) if in_hand else (set(), in_hand)
                )
                if not in_hand and not done:
                    self.stop.wait(self.poll_s)
            wait(in_hand)

    def _round(self, free: int) -> list[Attempt]:
        with self.engine.begin() as conn:
            fan_out(conn)
        if free <= 0:
            return []
        with self.engine.begin() as conn:
            # A token per claim: only the attempt that holds the current claim may settle the delivery.
            return claim(conn, free, secrets.token_hex(16), self.lease_s, self.policy.attempts_max, self.name)

    def _deliver(self, attempt: Attempt) -> None:
        try:
            self._attempt(attempt)
        except Exception:  # a bug: said loudly; the lease lapses and another attempt is made
            log.exception("webhooks: delivery %s attempt %d failed unrecorded", attempt.delivery_id, attempt.n)

    def _attempt(self, attempt: Attempt) -> None:
        with self.metrics.in_flight.track_inprogress():
            outcome = self.sender.send(attempt)
        self.metrics.attempts.labels("delivered" if outcome.delivered else "failed").inc()
        self.metrics.duration.observe(outcome.duration_ms / 1000)
        try:
            with self.engine.begin() as conn:
                status = record(conn, attempt, outcome, self.policy, datetime.now(UTC), self.rng)
        except DBAPIError as exc:  # unrecorded: the lease lapses and the attempt is made again
            if outage(exc) is None:
                raise
            log.warning("webhooks: could not record delivery %s: %s", attempt.delivery_id, exc.orig)
            return
        if status != "pending":
            self.metrics.settled.labels(status).inc()
        if status != "delivered":
            log.info(
                "webhook delivery %s of event %s attempt %d: %s (%s)",
                attempt.delivery_id,
                attempt.event["id"],
                attempt.n,
                status,
                outcome.error,
            )
