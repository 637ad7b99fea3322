"""Request bodies: one JSON object, not nested deeper than the daemon passes on."""

from __future__ import annotations

import json

import pytest

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
