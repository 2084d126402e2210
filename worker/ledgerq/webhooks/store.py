"""The webhook process's statements: fan events out into deliveries, claim attempts, record them.

Fan-out: each live endpoint's row is locked (SKIP LOCKED, so processes share endpoints out) while
one statement makes the deliveries for the next visible events after its cursor and moves the
cursor, so an event gets one delivery per endpoint (also enforced: UNIQUE (webhook_id, event_id)).

Claims: a short transaction takes due deliveries (FOR UPDATE SKIP LOCKED), counts the attempt,
writes its `webhook_attempts` row and sets a lease (`claimed_until`, `claim_token`) longer than an
attempt can take, then commits: no transaction stays open while a receiver answers (an open one
would also hold back every events reader, which reads only below the oldest running transaction).
Another process claims the delivery only once the lease has lapsed, so two processes never make
the same attempt at once; a process killed mid-attempt leaves the lease to lapse and the delivery
is made again (at least once). Recording the result checks the token, so a process that outlived
its lease cannot overwrite what the next one recorded.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from ledgerq.shared.event_view import TOUCHES_PREFIX, VISIBLE, shown_event

FANOUT_EVENTS_MAX = 1_000

_LOCK_WEBHOOKS = text(
    "SELECT id, events, prefix, fanout_cursor FROM webhooks WHERE deleted_at IS NULL ORDER BY id FOR UPDATE SKIP LOCKED"
)
_FANOUT = text(
    f"""
    WITH scanned AS (
        SELECT id, type, accounts FROM events WHERE id > :cursor AND {VISIBLE} ORDER BY id LIMIT :n
    ), made AS (
        INSERT INTO webhook_deliveries (webhook_id, event_id)
        SELECT :webhook, id FROM scanned
         WHERE type = ANY(CAST(:types AS text[])) AND (:prefix = '' OR {TOUCHES_PREFIX})
        ON CONFLICT (webhook_id, event_id) DO NOTHING
        RETURNING 1
    )
    UPDATE webhooks SET fanout_cursor = s.top
      FROM (SELECT max(id) AS top, (SELECT count(*) FROM made) AS made FROM scanned) s
     WHERE webhooks.id = :webhook AND s.top IS NOT NULL
    RETURNING s.made
    """
)
# Deliveries whose attempts ran out while a process died mid-attempt: nothing will record them.
_GIVE_UP_ORPHANS = text(
    """
    UPDATE webhook_deliveries SET status = 'failed', finished_at = now(), claimed_until = NULL, claim_token = NULL
     WHERE status = 'pending' AND attempts >= :attempts_max AND (claimed_until IS NULL OR claimed_until < now())
    """
)
_CLAIM = text(
    """
    WITH due AS (
        SELECT d.id FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
         WHERE d.status = 'pending' AND d.next_attempt_at <= now() AND d.attempts < :attempts_max
           AND (d.claimed_until IS NULL OR d.claimed_until < now()) AND w.deleted_at IS NULL
         ORDER BY d.next_attempt_at, d.id
         LIMIT :n
           FOR UPDATE OF d SKIP LOCKED
    ), claimed AS (
        UPDATE webhook_deliveries d
           SET attempts = d.attempts + 1, claim_token = :token,
               claimed_until = now() + make_interval(secs => :lease_s)
          FROM due WHERE d.id = due.id
        RETURNING d.id, d.webhook_id, d.event_id, d.attempts, d.created_at
    ), started AS (
        INSERT INTO webhook_attempts (delivery_id, n, made_by) SELECT id, attempts, :made_by FROM claimed
    )
    SELECT c.id AS delivery_id, c.attempts AS n, c.created_at AS delivery_created_at, w.url, w.secret, w.prefix,
           e.id, e.type, e.command_id, e.accounts, e.at, e.data
      FROM claimed c JOIN webhooks w ON w.id = c.webhook_id JOIN events e ON e.id = c.event_id
     ORDER BY c.id
    """
)
_FINISH_ATTEMPT = text(
    """
    UPDATE webhook_attempts
       SET finished_at = clock_timestamp(), status_code = :status_code, error = :error,
           duration_ms = :duration_ms, response_excerpt = :excerpt
     WHERE delivery_id = :delivery_id AND n = :n
    """
)
_SETTLE = text(
    """
    UPDATE webhook_deliveries
       SET status = :status, next_attempt_at = now() + make_interval(secs => :retry_in_s),
           finished_at = CASE WHEN :status = 'pending' THEN NULL ELSE now() END,
           claimed_until = NULL, claim_token = NULL
     WHERE id = :delivery_id AND claim_token = :token AND attempts = :n AND status = 'pending'
    """
)


@dataclass(frozen=True)
class Attempt:
    delivery_id: int
    n: int  # 1 for the first attempt
    delivery_created_at: datetime
    url: str
    secret: str
    event: dict[str, Any]  # as the endpoint's prefix shows it
    token: str  # the claim's: settling checks it (and n), so a late attempt cannot settle a newer one


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None
    duration_ms: int
    excerpt: str

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True)
class RetryPolicy:
    attempts_max: int
    age_s_max: float
    backoff_s: float
    backoff_s_max: float

    def retry_in_s(self, n: int, rng: random.Random) -> float:
        """After attempt `n` failed: exponential, capped, with half of it jittered (no thundering herd)."""
        delay = min(self.backoff_s_max, self.backoff_s * 2.0 ** min(n - 1, 60))
        return delay / 2 + rng.random() * delay / 2


def fan_out(conn: Connection) -> int:
    """Deliveries for the events visible since each endpoint's cursor; the count made."""
    made = 0
    for webhook in conn.execute(_LOCK_WEBHOOKS).all():
        row = conn.execute(
            _FANOUT,
            {
                "cursor": webhook.fanout_cursor,
                "n": FANOUT_EVENTS_MAX,
                "webhook": webhook.id,
                "types": list(webhook.events),
                "prefix": webhook.prefix,
            },
        ).one_or_none()
        made += row.made if row else 0
    return made


def claim(conn: Connection, n: int, token: str, lease_s: float, attempts_max: int, made_by: str) -> list[Attempt]:
    conn.execute(_GIVE_UP_ORPHANS, {"attempts_max": attempts_max})
    params = {"n": n, "token": token, "lease_s": lease_s, "attempts_max": attempts_max, "made_by": made_by}
    rows = conn.execute(_CLAIM, params).all()
    return [
        Attempt(
            delivery_id=r.delivery_id,
            n=r.n,
            delivery_created_at=r.delivery_created_at,
            url=r.url,
            secret=r.secret,
            event=shown_event(
                {
                    "id": r.id,
                    "type": r.type,
                    "command_id": r.command_id,
                    "accounts": r.accounts,
                    "at": r.at,
                    "data": r.data,
                },
                r.prefix,
            ),
            token=token,
        )
        for r in rows
    ]


def record(
    conn: Connection,
    attempt: Attempt,
    outcome: Outcome,
    policy: RetryPolicy,
    now: datetime,
    rng: random.Random,
) -> str:
    """Write the attempt's result and what becomes of the delivery: the delivery's new status."""
    conn.execute(
        _FINISH_ATTEMPT,
        {
            "delivery_id": attempt.delivery_id,
            "n": attempt.n,
            "status_code": outcome.status_code,
            "error": outcome.error,
            "duration_ms": outcome.duration_ms,
            "excerpt": outcome.excerpt,
        },
    )
    retry_in_s = 0.0
    if outcome.delivered:
        status = "delivered"
    else:
        retry_in_s = policy.retry_in_s(attempt.n, rng)
        age_s = (now - attempt.delivery_created_at).total_seconds() + retry_in_s
        status = "failed" if attempt.n >= policy.attempts_max or age_s > policy.age_s_max else "pending"
    conn.execute(
        _SETTLE,
        {
            "status": status,
            "retry_in_s": retry_in_s,
            "delivery_id": attempt.delivery_id,
            "token": attempt.token,
            "n": attempt.n,
        },
    )
    return status
