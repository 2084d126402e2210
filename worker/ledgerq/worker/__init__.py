"""The partition owner: takes a partition's commands in order and applies them to the ledger."""
