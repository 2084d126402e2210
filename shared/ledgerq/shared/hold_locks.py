"""The lock that orders a hold's expiry against the claims of its captures and voids.

DESIGN: a capture or void *accepted* before the hold's `expires_at` is honoured. A claim round that
names a hold takes this lock shared until it commits (and stamps `accepted_at` once it has it); the
expiry sweep takes it exclusive before it looks for queued captures and voids. So the sweep waits
for every claim in flight, then sees it; and a claim that comes later waits for the sweep and is
accepted after it. Transaction-scoped advisory locks need no table privilege (the API's role may
not lock rows of `commands`) and leave the rows alone; keys are taken in sorted order, so claims and
sweeps cannot deadlock, and a hash collision only makes one of them wait a moment longer.
"""

from __future__ import annotations

from sqlalchemy import Connection, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, TEXT

NAMESPACE = 0x4C51  # "LQ": the first key of the two-key advisory lock form

_LOCK = """
SELECT {function}(:namespace, k)
  FROM (SELECT DISTINCT hashtext(id) AS k FROM unnest(CAST(:ids AS text[])) AS id ORDER BY k) keys
"""
_SHARED = text(_LOCK.format(function="pg_advisory_xact_lock_shared")).bindparams(bindparam("ids", type_=ARRAY(TEXT)))
_EXCLUSIVE = text(_LOCK.format(function="pg_advisory_xact_lock")).bindparams(bindparam("ids", type_=ARRAY(TEXT)))


def lock_for_claim(conn: Connection, hold_ids: list[str]) -> None:
    """Held until the claim's transaction ends."""
    if hold_ids:
        conn.execute(_SHARED, {"ids": hold_ids, "namespace": NAMESPACE})


def lock_for_expiry(conn: Connection, hold_ids: list[str]) -> None:
    """Waits for every claim naming one of these holds that is in flight; held until the sweep commits."""
    if hold_ids:
        conn.execute(_EXCLUSIVE, {"ids": hold_ids, "namespace": NAMESPACE})
