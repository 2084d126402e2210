"""The ledger on Citus (distributed PostgreSQL): the plan, and a check of a live schema against it.

Citus cannot run on this machine (no package for its Debian), so the plan is data a check reads:

- The apply path's tables are distributed by **partition**, all colocated with `partitions`: one
  apply batch (its epoch row, its commands, the accounts routed to the partition, their entries,
  holds and events, the partition's own `@world:CUR:p` system accounts) is then on one shard group,
  a single-shard transaction Citus routes to one worker node as it is.
- Small, read-mostly tables every transaction may join are reference tables (a copy on every node).
- The operators' tables stay on the coordinator (Citus local tables).

Citus requires that each primary key and unique constraint of a distributed table include its
distribution column, and that a foreign key between distributed tables join on it (colocated);
a reference table may not point at a distributed one. `gaps()` lists where a schema falls short,
each with the change that closes it; `python -m ledgerq.ops.citus` prints them for
`LEDGERQ_DATABASE_URL`, then the DDL that distributes the tables once they are closed.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass

from sqlalchemy import Engine, inspect
from sqlalchemy.engine.reflection import Inspector
from sqlalchemy.exc import SAWarning

DISTRIBUTION_COLUMN = "partition"
ANCHOR = "partitions"
"""The table every distributed table is colocated with (one row per partition, the epoch)."""

DISTRIBUTED = ("partitions", "accounts", "commands", "entries", "holds", "events")
REFERENCE = ("ledger_config", "api_keys", "webhooks")
LOCAL = (
    "alembic_version",
    "audit_log",
    "reconciliations",
    "reconciliation_items",
    "webhook_deliveries",
    "webhook_attempts",
)

MULTI_SHARD = (
    (
        "a transfer or transaction whose credit is an account of another partition",
        "a distributed transaction over the two shard groups; Citus commits it with two-phase commit "
        "(its default for multi-shard writes), and the apply transaction's row locks, taken in sorted "
        "order across both, keep it deadlock-free as on one node",
    ),
    (
        "the API's claim round (one INSERT of many partitions' commands)",
        "one multi-shard INSERT, two-phase committed; or one claim transaction per shard group, "
        "since each command's claim stands alone",
    ),
    (
        "the trial balance, `ledgerq verify`, the books page, reconciliation",
        "multi-shard reads: Citus pushes the sums down to each shard and adds them up; read-only, no 2PC",
    ),
    (
        "reads by account id (`GET /v1/accounts/{id}`, entries) and by command id",
        "single-shard once the query names the partition (the API computes it from the id, as it does "
        "to route); without it Citus asks every shard",
    ),
)


@dataclass(frozen=True, slots=True)
class Gap:
    table: str
    problem: str
    change: str

    def line(self) -> str:
        return f"{self.table}: {self.problem} -> {self.change}"


UNIQUE_ACROSS_PARTITIONS = {"commands": "id"}
"""Keys that must stay unique across partitions: a command id is the idempotency key, and a rival
payload for it may route to another partition."""


def gaps(engine: Engine) -> list[Gap]:
    """What the live schema lacks for the plan (empty: ready to distribute)."""
    with warnings.catch_warnings():  # types SQLAlchemy does not know (xid8) are not the point here
        warnings.simplefilter("ignore", SAWarning)
        return _gaps(inspect(engine))


def _gaps(schema: Inspector) -> list[Gap]:
    tables = set(schema.get_table_names())
    found = [
        Gap(table, "not in the plan", "classify it: distributed, reference or local")
        for table in sorted(tables - {*DISTRIBUTED, *REFERENCE, *LOCAL})
    ]
    for table in DISTRIBUTED:
        if table in tables:
            found += _distributed_gaps(schema, table)
    for table in (*REFERENCE, *LOCAL):
        if table not in tables:
            continue
        kind = "reference" if table in REFERENCE else "coordinator"
        for fk in schema.get_foreign_keys(table):
            if fk["referred_table"] in DISTRIBUTED:
                columns = ", ".join(fk["constrained_columns"])
                found.append(
                    Gap(table, f"a {kind} table's foreign key ({columns}) -> {fk['referred_table']}", "drop it")
                )
    return found


def _distributed_gaps(schema: Inspector, table: str) -> list[Gap]:
    found = []
    if DISTRIBUTION_COLUMN not in {c["name"] for c in schema.get_columns(table)}:
        found.append(
            Gap(table, f"no {DISTRIBUTION_COLUMN} column", f"add {DISTRIBUTION_COLUMN} (written with the row)")
        )
    for what, key in _unique_keys(schema, table):
        if DISTRIBUTION_COLUMN not in key:
            change = f"make it ({DISTRIBUTION_COLUMN}, {', '.join(key)})"
            if key == [UNIQUE_ACROSS_PARTITIONS.get(table)]:
                change += (
                    f", and claim each {key[0]} also in a table distributed by it, in the same claim "
                    "transaction, so a rival payload routed to another partition still conflicts"
                )
            found.append(Gap(table, f"{what} ({', '.join(key)}) lacks {DISTRIBUTION_COLUMN}", change))
    for fk in schema.get_foreign_keys(table):
        found += _foreign_key_gap(table, fk["constrained_columns"], fk["referred_table"], fk["referred_columns"])
    return found


def _unique_keys(schema: Inspector, table: str) -> list[tuple[str, list[str]]]:
    keys = [("primary key", list(schema.get_pk_constraint(table)["constrained_columns"]))]
    constraints = schema.get_unique_constraints(table)
    keys += [(f"unique {u['name']}", list(u["column_names"])) for u in constraints]
    # A unique constraint shows as a unique index too: once is enough. (Expression columns are None.)
    named = {u["name"] for u in constraints}
    keys += [
        (f"unique index {i['name']}", [c for c in i["column_names"] if c])
        for i in schema.get_indexes(table)
        if i["unique"] and i["name"] not in named
    ]
    return keys


def _foreign_key_gap(table: str, columns: list[str], referred: str, referred_columns: list[str]) -> list[Gap]:
    what = f"foreign key ({', '.join(columns)}) -> {referred}"
    if referred in REFERENCE:
        return []
    if referred in LOCAL:
        return [Gap(table, f"{what}, a coordinator table", "drop it (the apply transaction checks it)")]
    if DISTRIBUTION_COLUMN in columns and DISTRIBUTION_COLUMN in referred_columns:
        return []
    return [
        Gap(
            table,
            f"{what} does not join on {DISTRIBUTION_COLUMN}",
            f"({DISTRIBUTION_COLUMN}, {', '.join(columns)}) -> {referred}({DISTRIBUTION_COLUMN}, "
            f"{', '.join(referred_columns)}) where both rows share a partition; else drop it and let the "
            "apply transaction check it",
        )
    ]


def distribute_sql(partitions: int) -> list[str]:
    """The DDL, once `gaps()` is empty: every partition's rows in one shard group (P shards, several
    partitions to a shard at times; `isolate_tenant_to_new_shard` gives one its own before it is moved
    with `citus_move_shard_placement`: shards move, rows are never re-hashed)."""
    sql = [f"SELECT create_reference_table('{t}');" for t in REFERENCE]
    sql.append(f"SELECT create_distributed_table('{ANCHOR}', '{DISTRIBUTION_COLUMN}', shard_count => {partitions});")
    sql += [
        f"SELECT create_distributed_table('{t}', '{DISTRIBUTION_COLUMN}', colocate_with => '{ANCHOR}');"
        for t in DISTRIBUTED
        if t != ANCHOR
    ]
    sql += [f"SELECT citus_add_local_table_to_metadata('{t}');" for t in LOCAL if t != "alembic_version"]
    return sql


def main() -> None:
    from ledgerq.shared.db import make_engine
    from ledgerq.shared.settings import Settings

    settings = Settings()
    engine = make_engine(settings, pool_size=1)
    found = gaps(engine)
    print(f"ledgerq on Citus: {len(found)} schema changes before the tables can be distributed")
    for gap in found:
        print(f"- {gap.line()}")
    print("then:")
    for statement in distribute_sql(settings.partitions):
        print(f"  {statement}")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
