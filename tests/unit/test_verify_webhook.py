"""`ledgerq_client.verify_webhook` accepts exactly what ledgerq's sender signs, and refuses a tampered
body, another secret, a stale or future timestamp, and a missing or malformed header, with a code
saying which."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from werkzeug.datastructures import Headers as WerkzeugHeaders

from ledgerq.shared.event_view import event_body
from ledgerq.webhooks.send import signature as server_signature
from ledgerq_client import Event, WebhookSignatureError, sign_webhook, verify_webhook

SECRET = "whsec_0123456789abcdef0123456789abcdef"
NOW = 1_750_000_000
EVENT: dict[str, Any] = {
    "id": 7_205_759_403_792_793_601,
    "type": "command.applied",
    "command_id": "order-981",
    "accounts": ["buyer-7", "seller-3"],
    "at": datetime(2025, 6, 15, 15, 6, 40, 123456, tzinfo=UTC),
    "data": {"type": "transfer", "status": "applied", "partition": 2, "result": {"entries": []}},
}
BODY = event_body(EVENT)


def delivery(body: bytes = BODY, secret: str = SECRET, t: int = NOW) -> dict[str, str]:
    """The headers ledgerq's sender puts on a delivery of `body`."""
    return {
        "Content-Type": "application/json",
        "Ledgerq-Event-Id": str(EVENT["id"]),
        "Ledgerq-Event-Type": str(EVENT["type"]),
        "Ledgerq-Attempt": "1",
        "Ledgerq-Signature": server_signature(secret, t, body),
    }


def refused(headers: Any, body: bytes = BODY, secret: str | list[str] = SECRET, **kwargs: Any) -> str:
    with pytest.raises(WebhookSignatureError) as error:
        verify_webhook(secret, headers, body, now=NOW, **kwargs)
    assert str(error.value) == error.value.detail and error.value.detail
    return error.value.code


def test_a_delivery_signed_by_the_server_verifies_and_parses() -> None:
    """The sender's own signing function and body: the client's check and parsing agree with them."""
    event = verify_webhook(SECRET, delivery(), BODY, now=NOW)
    assert event == Event(
        id=EVENT["id"],
        type="command.applied",
        command_id="order-981",
        accounts=["buyer-7", "seller-3"],
        at=EVENT["at"],
        data=EVENT["data"],
    )
    assert sign_webhook(SECRET, NOW, BODY) == server_signature(SECRET, NOW, BODY)


def test_a_tampered_body_is_refused() -> None:
    for tampered in (BODY.replace(b"order-981", b"order-982"), BODY + b" ", BODY[:-1], b""):
        assert refused(delivery(), tampered) == "signature_mismatch"


def test_another_secret_is_refused() -> None:
    assert refused(delivery(secret="whsec_someone_else")) == "signature_mismatch"
    assert refused(delivery(), secret=SECRET.upper()) == "signature_mismatch"


def test_a_timestamp_outside_the_tolerance_is_refused_either_way() -> None:
    """A replayed delivery (old) and a clock far ahead (future); at the bound it still passes."""
    assert refused(delivery(t=NOW - 301)) == "timestamp_out_of_tolerance"
    assert refused(delivery(t=NOW + 301)) == "timestamp_out_of_tolerance"
    assert verify_webhook(SECRET, delivery(t=NOW - 300), BODY, now=NOW).id == EVENT["id"]
    assert verify_webhook(SECRET, delivery(t=NOW + 300), BODY, now=NOW).id == EVENT["id"]
    assert refused(delivery(t=NOW - 31), tolerance_s=30) == "timestamp_out_of_tolerance"
    assert verify_webhook(SECRET, delivery(t=NOW - 3600), BODY, now=NOW, tolerance_s=3601).id == EVENT["id"]


def test_the_tolerance_is_checked_against_the_clock_by_default() -> None:
    import time

    fresh = delivery(t=int(time.time()))
    assert verify_webhook(SECRET, fresh, BODY).id == EVENT["id"]
    with pytest.raises(WebhookSignatureError) as stale:
        verify_webhook(SECRET, delivery(t=NOW), BODY)  # signed in 2025
    assert stale.value.code == "timestamp_out_of_tolerance"


def test_a_missing_header_is_refused() -> None:
    headers = delivery()
    del headers["Ledgerq-Signature"]
    assert refused(headers) == "signature_missing"
    assert refused({}) == "signature_missing"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        "v1=" + "0" * 64,  # no t
        f"t={NOW}",  # no v1
        f"t={NOW},v0=" + "0" * 64,  # only a scheme it does not know
        f"t=,v1={'0' * 64}",
        f"t=-{NOW},v1={'0' * 64}",
        f"t={NOW}.5,v1={'0' * 64}",
        f"t=١٢٣,v1={'0' * 64}",  # digits, but not ASCII ones
        f"t={NOW},t={NOW + 1},v1={'0' * 64}",  # two timestamps
        f"t={NOW},v1=abc",  # not a SHA-256 digest
        f"t={NOW},v1={'é' * 64}",  # not ASCII: compare_digest would raise TypeError
        f"t={NOW},v1={'0' * 64}," + "x" * 5000,
    ],
)
def test_a_malformed_header_is_refused(value: str) -> None:
    assert refused({"Ledgerq-Signature": value}) == "signature_malformed"


def test_headers_are_matched_without_regard_to_case_in_any_mapping() -> None:
    """A plain dict in any case, and the header types of Django, Flask (Werkzeug) and Starlette."""
    from django.http.request import HttpHeaders
    from starlette.datastructures import Headers as StarletteHeaders

    signed = delivery()["Ledgerq-Signature"]
    shapes: list[Any] = [
        {"ledgerq-signature": signed},
        {"LEDGERQ-SIGNATURE": signed},
        {"LeDgErQ-SiGnAtUrE": signed},
        HttpHeaders({"HTTP_LEDGERQ_SIGNATURE": signed, "CONTENT_TYPE": "application/json"}),
        WerkzeugHeaders([("ledgerq-signature", signed)]),
        StarletteHeaders(raw=[(b"ledgerq-signature", signed.encode())]),
    ]
    for headers in shapes:
        assert verify_webhook(SECRET, headers, BODY, now=NOW).id == EVENT["id"], type(headers)


def test_rotation_several_signatures_or_several_secrets() -> None:
    """Any one v1= value matching is enough, and any one of several secrets; uppercase hex too."""
    old, new = "whsec_old", "whsec_new"
    both = f"{sign_webhook(old, NOW, BODY)},v1={sign_webhook(new, NOW, BODY).split('v1=')[1]}"
    assert both.count("v1=") == 2
    assert verify_webhook(new, {"Ledgerq-Signature": both}, BODY, now=NOW).id == EVENT["id"]
    assert verify_webhook(old, {"Ledgerq-Signature": both}, BODY, now=NOW).id == EVENT["id"]
    assert verify_webhook([old, new], delivery(secret=new), BODY, now=NOW).id == EVENT["id"]
    assert verify_webhook((old, new), delivery(secret=old), BODY, now=NOW).id == EVENT["id"]
    assert refused(delivery(secret="whsec_third"), secret=[old, new]) == "signature_mismatch"
    stamp, mac = delivery()["Ledgerq-Signature"].split(",")
    upper = f"{stamp},v1={mac.removeprefix('v1=').upper()}"
    assert verify_webhook(SECRET, {"Ledgerq-Signature": upper}, BODY, now=NOW).id == EVENT["id"]
    spaced = delivery()["Ledgerq-Signature"].replace(",", " , ")
    assert verify_webhook(SECRET, {"Ledgerq-Signature": spaced}, BODY, now=NOW).id == EVENT["id"]


def test_a_signed_body_that_is_no_event_is_refused() -> None:
    for body in (b"not json", b"[]", b'{"id": 1}', b"\xff\xfe"):
        headers = {"Ledgerq-Signature": sign_webhook(SECRET, NOW, body)}
        assert refused(headers, body) == "invalid_body"


def test_misuse_fails_loudly_not_as_a_bad_signature() -> None:
    """A decoded body, no secret or a tolerance of zero is the receiver's bug: a TypeError or ValueError."""
    with pytest.raises(TypeError, match="raw body bytes"):
        verify_webhook(SECRET, delivery(), BODY.decode(), now=NOW)  # type: ignore[arg-type]  # on purpose
    for secret in ("", [], [SECRET, ""]):
        with pytest.raises(ValueError, match="no webhook secret") as no_secret:
            verify_webhook(secret, delivery(), BODY, now=NOW)
        assert not isinstance(no_secret.value, WebhookSignatureError)
    with pytest.raises(ValueError, match="tolerance_s") as no_tolerance:
        verify_webhook(SECRET, delivery(), BODY, now=NOW, tolerance_s=0)
    assert not isinstance(no_tolerance.value, WebhookSignatureError)
