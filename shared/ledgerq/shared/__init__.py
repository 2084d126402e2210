"""ledgerq's contract: commands, money, routing, errors, schema, settings, key names.

Nothing here imports `api` or `worker`; both import this.
"""
