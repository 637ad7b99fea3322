"""Request bodies: one JSON object, not nested deeper than the daemon passes on."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.requests.bodies import MAX_DEPTH, InvalidBodyError, depth, parse_object


def nested(levels: int) -> bytes:
    return ('{"a":' * (levels - 1) + "{}" + "}" * (levels - 1)).encode()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\xff", "not JSON"),
        (b"{", "not JSON"),
        (b"[1]", "must be a JSON object"),
        (nested(MAX_DEPTH + 1), f"deeper than {MAX_DEPTH}"),
        (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", f"deeper than {MAX_DEPTH}"),
        (b'{"n": ' + b"1" * 4301 + b"}", "integer of more than 4300 digits"),
        (b'{"s": "\\udc00x"}', "lone UTF-16 surrogate"),
        (b'{"s": ["\\ud83d"]}', "lone UTF-16 surrogate"),
        (b'{"n": Infinity}', "not a JSON number"),
        (b'{"n": -1e999}', "too large to be a float"),
    ],
)
def test_what_is_refused_and_why(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidBodyError, match=message):
        parse_object(raw)


def test_as_deep_as_allowed_is_fine() -> None:
    body = parse_object(nested(MAX_DEPTH))
    assert depth(body, MAX_DEPTH + 1) == MAX_DEPTH
    assert parse_object(b'{"a": [1, {"b": []}], "c": "x"}') == json.loads(
        '{"a": [1, {"b": []}], "c": "x"}'
    )


def test_depth_is_counted_without_recursion() -> None:
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    assert depth(deep, 10) == 10  # stops counting at the limit
    assert depth("scalar", 10) == 0 and depth({}, 10) == 1


def test_a_surrogate_pair_is_one_character() -> None:
    assert parse_object(b'{"s": "\\ud83d\\ude00"}') == {"s": "\U0001f600"}


TEXT = st.text(st.characters(exclude_categories=()))  # lone surrogates too
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda inner: st.lists(inner) | st.dictionaries(TEXT, inner),
)


@settings(max_examples=60, deadline=None)  # a loaded machine is no failure
@given(st.binary() | st.dictionaries(TEXT, JSON_VALUES).map(
    lambda body: json.dumps(body).encode()
))  # fmt: skip
def test_any_body_is_an_object_that_can_be_sent_on_or_a_reason(raw: bytes) -> None:
    """Whatever arrives: a dict that JSON-encodes to UTF-8 again, or InvalidBodyError."""
    try:
        body = parse_object(raw)
    except InvalidBodyError:
        return
    json.dumps(body, ensure_ascii=False, allow_nan=False).encode()
