"""`ledgerq webhooks`: deliver the events outbox to webhook endpoints, at least once, signed."""
