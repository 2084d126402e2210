"""API keys: `lq_<id>_<secret>`, stored as a SHA-256 of the secret, shown once, revocable.

The secret is 32 random bytes, so a plain hash is enough (no password stretching
needed); comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func, select, update

from ledgerq.shared.db import driver_cursor
from ledgerq.shared.schema import SCOPES, api_keys

SCOPE_RANK = {scope: rank for rank, scope in enumerate(SCOPES)}


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    name: str
    scope: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None

    def allows(self, scope: str) -> bool:
        return SCOPE_RANK[self.scope] >= SCOPE_RANK[scope]

    def covers(self, account_id: str) -> bool:
        return account_id.startswith(self.prefix)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(engine: Engine, scope: str, *, prefix: str = "", name: str = "") -> tuple[str, ApiKey]:
    if scope not in SCOPE_RANK:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
    if not re.fullmatch(r"[A-Za-z0-9._:-]{0,128}", prefix):
        raise ValueError("a prefix is at most 128 characters of [A-Za-z0-9._:-]")
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    with engine.begin() as conn:
        row = conn.execute(
            api_keys.insert()
            .values(id=key_id, name=name, secret_hash=_hash(secret), scope=scope, prefix=prefix)
            .returning(*_COLUMNS)
        ).one()
    return f"lq_{key_id}_{secret}", ApiKey(*row)


_COLUMNS = (
    api_keys.c.id,
    api_keys.c.name,
    api_keys.c.scope,
    api_keys.c.prefix,
    api_keys.c.created_at,
    api_keys.c.revoked_at,
)


# One statement text for any number of keys (`= ANY`, not an IN list), so it is prepared once.
_BY_IDS = "SELECT secret_hash, id, name, scope, prefix, created_at, revoked_at FROM api_keys WHERE id = ANY(%(ids)s)"


def authenticate(engine: Engine, token: str) -> ApiKey | None:
    """The live key this token names, or None (unknown, wrong secret, revoked)."""
    return authenticate_many(engine, [token])[0]


def authenticate_many(engine: Engine, tokens: list[str]) -> list[ApiKey | None]:
    """`authenticate` for many tokens in one query: concurrent requests share it (no cache: each
    request reads the key row as it is when its round starts, so a revocation holds from the next one)."""
    parsed = [_parse(token) for token in tokens]
    wanted = sorted({p[0] for p in parsed if p is not None})
    rows = {}
    if wanted:
        with engine.connect() as conn:
            rows = {r.id: r for r in driver_cursor(conn).execute(_BY_IDS, {"ids": wanted})}
    keys: list[ApiKey | None] = []
    for p in parsed:
        row = rows.get(p[0]) if p is not None else None
        if p is None or row is None or not hmac.compare_digest(row.secret_hash, _hash(p[1])):
            keys.append(None)
            continue
        key = ApiKey(*row[1:])
        keys.append(None if key.revoked_at is not None else key)
    return keys


def _parse(token: str) -> tuple[str, str] | None:
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != "lq":
        return None
    return parts[1], parts[2]


def list_keys(engine: Engine) -> list[ApiKey]:
    with engine.connect() as conn:
        return [ApiKey(*r) for r in conn.execute(select(*_COLUMNS).order_by(api_keys.c.created_at))]


def revoke_key(engine: Engine, key_id: str) -> bool:
    with engine.begin() as conn:
        result = conn.execute(
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=func.now())
        )
    return result.rowcount == 1
