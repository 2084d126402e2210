"""The HTTP service and the in-process client: validate, dedupe, enqueue, read status and balances.

Imports `shared` only; it names the worker's job function as a string.
"""
