"""Operators' tooling: the `ledgerq` command line, `ledgerq dev` and its embedded servers, `verify`.

It may import every other part (the CLI loads `ledgerq.api` and `ledgerq.worker` lazily, by name);
nothing in `ledgerq.shared`, `ledgerq.api` or `ledgerq.worker` imports it.
"""
