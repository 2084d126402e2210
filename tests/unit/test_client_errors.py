"""The client distribution's errors mirror the server's: every code the API answers has a client class
of the same name and code, so a backend catches by type with only `ledgerq-client` installed."""

from __future__ import annotations

import ledgerq_client
from ledgerq.shared import errors as server
from ledgerq_client.errors import ERRORS_BY_CODE
from tests.unit.test_readme_codes import error_codes


def server_classes() -> list[type[server.LedgerError]]:
    found, todo = [], [server.LedgerError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo += cls.__subclasses__()
    return found


def test_every_code_the_api_answers_has_a_client_class_of_the_same_name() -> None:
    for cls in server_classes():
        if cls.code not in error_codes() or (cls.code == "invalid_request" and cls is server.RequestError):
            continue
        mirror = getattr(ledgerq_client, cls.__name__, None)
        assert mirror is not None, f"ledgerq_client has no {cls.__name__}"
        assert mirror.code == cls.code, cls.__name__
        assert ERRORS_BY_CODE[cls.code].__name__ == cls.__name__ or cls.code == "invalid_request"


def test_the_client_families_match_the_servers() -> None:
    assert issubclass(ledgerq_client.ValidationFailed, ledgerq_client.InvalidRequest)
    assert issubclass(ledgerq_client.IdempotencyConflict, ledgerq_client.Conflict)
    assert issubclass(ledgerq_client.QueueFull, ledgerq_client.TransientFault)
    assert issubclass(ledgerq_client.UnknownAccount, ledgerq_client.Rejection)
    assert ERRORS_BY_CODE["invalid_request"] is ledgerq_client.InvalidRequest
