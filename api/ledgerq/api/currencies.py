"""Account id -> currency, cached: accounts are never deleted and currencies never change, so a hit
is final and the hot submit path asks Postgres only for accounts it has not seen."""

from __future__ import annotations

from sqlalchemy import Engine, select

from ledgerq.shared.schema import accounts

ACCOUNT_CACHE_MAX = 100_000


class CurrencyCache:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.known: dict[str, str] = {}

    def of(self, account_ids: tuple[str, ...]) -> dict[str, str]:
        """Currencies of the given accounts that exist (one query for the ones not cached)."""
        missing = [a for a in account_ids if a not in self.known]
        if missing:
            with self.engine.connect() as conn:
                rows = conn.execute(select(accounts.c.id, accounts.c.currency).where(accounts.c.id.in_(missing))).all()
            if len(self.known) > ACCOUNT_CACHE_MAX:
                self.known.clear()
            self.known.update({r.id: r.currency for r in rows})
        return {a: self.known[a] for a in account_ids if a in self.known}
