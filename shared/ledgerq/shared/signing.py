"""HMAC signatures on queued commands: Redis is not trusted with money.

The API (or the in-process client) signs each command's canonical JSON with
`LEDGERQ_SIGNING_KEY`; the worker checks the signature before the job may
touch the ledger. `LEDGERQ_SIGNING_KEYS_PREVIOUS` (comma-separated) are still
accepted, so the key can be rotated without a stop: add the new key and list
the old one as previous everywhere, then drop the previous once the queues
have drained.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from ledgerq.shared.commands import canonical_json


def sign(payload: dict[str, Any], key: str) -> str:
    return sign_canonical(canonical_json(payload).encode(), key)


def sign_canonical(canonical: bytes, key: str) -> str:
    return hmac.new(key.encode(), canonical, hashlib.sha256).hexdigest()


def verify_canonical(canonical: bytes, signature: object, keys: list[str]) -> bool:
    """Whether `signature` is the HMAC of the canonical JSON by one of `keys` (the worker hashes the
    same bytes, so it passes them in already encoded)."""
    if not isinstance(signature, str):
        return False
    return any(hmac.compare_digest(sign_canonical(canonical, key), signature) for key in keys)
