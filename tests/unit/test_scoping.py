"""What the API stores for any key is exactly what the worker accepts (property tests, no I/O)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ledgerq.shared.commands import AMOUNT_MAX, COMMAND_ADAPTER
from ledgerq.shared.scoping import is_own, parse_stored, scope_command, shown_id, stored_id

ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-"
ids = st.text(alphabet=ID_CHARS, min_size=1, max_size=128)
# What `ledgerq keys create --prefix` accepts: empty (a plain key) or up to 128 id characters.
prefixes = st.one_of(st.just(""), st.text(alphabet=ID_CHARS, min_size=1, max_size=128))
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.text(alphabet=st.characters(exclude_characters="\x00", exclude_categories=["Cs"])),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.text(alphabet=st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=8),
            inner,
            max_size=3,
        )
    ),
    max_leaves=10,
)


@st.composite
def bodies(draw: st.DrawFn, prefix: str) -> dict[str, Any]:
    """A valid command body as a client of a key with `prefix` would send it."""
    kind = draw(st.sampled_from(["deposit", "withdraw", "transfer"]))
    account = prefix + draw(ids.map(lambda s: s[: 128 - len(prefix)] or "a"))
    body: dict[str, Any] = {
        "id": draw(ids),
        "type": kind,
        "account_id": account,
        "amount": draw(st.integers(1, AMOUNT_MAX)),
        "currency": draw(st.sampled_from(["USD", "EUR", "JPY"])),
    }
    if kind == "transfer":
        body["to_account_id"] = prefix + draw(
            ids.filter(lambda s: prefix + s != account).map(lambda s: s[: 128 - len(prefix)] or "b")
        )
    if draw(st.booleans()):
        body["reference"] = draw(
            st.text(alphabet=st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=256)
        )
    if draw(st.booleans()):
        body["metadata"] = draw(
            st.dictionaries(
                st.text(alphabet=st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=8),
                json_values,
                max_size=4,
            )
        )
    return body


def as_jsonb_gives_it_back(text: str) -> int | float:
    exact = Decimal(text)
    return int(exact) if exact == exact.to_integral_value() else float(text)


@settings(max_examples=500)
@given(st.data())
def test_every_stored_payload_parses_back_to_the_command_the_api_accepted(data: st.DataObject) -> None:
    prefix = data.draw(prefixes)
    body = data.draw(bodies(prefix))
    if body.get("type") == "transfer" and body["to_account_id"] == body["account_id"]:
        return
    accepted = COMMAND_ADAPTER.validate_python(body)  # the API's validation
    stored = scope_command(prefix, accepted)
    # What Postgres keeps (jsonb numerics: an integral float comes back as an int) and the worker reads.
    payload = json.loads(json.dumps(stored.payload()), parse_float=as_jsonb_gives_it_back)
    parsed = parse_stored(payload)
    assert parsed.model_dump(exclude={"metadata"}) == stored.model_dump(exclude={"metadata"})
    assert parsed.metadata == payload.get("metadata")


@given(prefixes, ids)
def test_a_keys_own_ids_round_trip_and_never_look_foreign(prefix: str, client_id: str) -> None:
    stored = stored_id(prefix, client_id)
    assert shown_id(prefix, stored) == client_id
    assert (stored == client_id) is (prefix == "")


@given(prefixes.filter(bool), prefixes, ids)
def test_another_keys_command_is_shown_so_that_it_reads_back_and_cannot_collide(
    prefix: str, other: str, client_id: str
) -> None:
    foreign = stored_id(other, client_id)
    if other == prefix:
        return
    shown = shown_id(prefix, foreign)
    assert not is_own(prefix, foreign)
    assert stored_id(prefix, shown) == foreign
    assert shown != client_id  # never the same as this key's own id `client_id`


def test_a_stored_id_with_a_malformed_scope_is_refused_not_parsed() -> None:
    body = {"type": "deposit", "account_id": "a", "amount": 1, "currency": "USD"}
    for bad in ("/x", "sh op/x", "a/b/c"):
        try:
            parse_stored({**body, "id": bad})
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad!r}")


def test_metadata_that_jsonb_spells_longer_is_still_accepted_by_the_worker() -> None:
    """173 bytes of `1e300`s at the door are 4,303 bytes once jsonb gives them back as digits."""
    body = {"id": "m", "type": "deposit", "account_id": "a", "amount": 1, "currency": "USD"}
    accepted = COMMAND_ADAPTER.validate_python({**body, "metadata": {f"k{i}": 1e300 for i in range(14)}})
    payload = json.loads(json.dumps(accepted.payload()), parse_float=as_jsonb_gives_it_back)
    assert len(json.dumps(payload["metadata"])) > 4096
    assert parse_stored(payload).amount == 1


@st.composite
def transaction_bodies(draw: st.DrawFn, prefix: str) -> dict[str, Any]:
    """A valid multi-leg transaction: 2..32 distinct accounts, non-zero legs summing to zero."""
    accounts = draw(
        st.lists(ids.map(lambda s: prefix + (s[: 128 - len(prefix)] or "a")), min_size=2, max_size=32, unique=True)
    )
    amounts = [draw(st.integers(1, 10**12)) * draw(st.sampled_from([1, -1])) for _ in accounts[:-1]]
    last = -sum(amounts)
    if last == 0:
        amounts[0] += 1 if amounts[0] > 0 else -1
        last = -sum(amounts)
    legs = [{"account_id": a, "amount": n} for a, n in zip(accounts, [*amounts, last], strict=True)]
    return {"id": draw(ids), "type": "transaction", "currency": "USD", "legs": legs}


@settings(max_examples=300)
@given(st.data())
def test_every_stored_transaction_parses_back_to_the_one_accepted(data: st.DataObject) -> None:
    prefix = data.draw(prefixes)
    accepted = COMMAND_ADAPTER.validate_python(data.draw(transaction_bodies(prefix)))
    stored = scope_command(prefix, accepted)
    payload = json.loads(json.dumps(stored.payload()), parse_float=as_jsonb_gives_it_back)
    assert parse_stored(payload) == stored
