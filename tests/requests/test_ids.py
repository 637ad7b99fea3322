from datetime import UTC, datetime, timedelta

import pytest

from notifier.requests.ids import is_keyed, is_txn_id, keyed_txn_id, new_txn_id, txn_time


def test_ids_are_unique_sorted_and_valid() -> None:
    ids = [new_txn_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(is_txn_id(i) and len(i) == 26 for i in ids)


def test_id_time_is_now() -> None:
    assert abs(txn_time(new_txn_id()) - datetime.now(UTC)) < timedelta(minutes=1)


def test_rejects_non_ids() -> None:
    for value in (
        "",
        "x" * 26,
        "01ARZ3NDEKTSV4RRFFQ69G5FA",
        "01arz3ndektsv4rrffq69g5fav",
        "../etc",
    ):
        assert not is_txn_id(value)


def test_keyed_ids_are_the_same_everywhere_and_never_a_ulid() -> None:
    keyed = keyed_txn_id("hello", "order-42", None)
    assert keyed == keyed_txn_id("hello", "order-42", None)
    assert is_txn_id(keyed) and is_keyed(keyed) and len(keyed) == 26
    others = {
        keyed_txn_id("hello", "order-43", None),
        keyed_txn_id("p1", "order-42", None),
        keyed_txn_id("hello", "order-42", "ci"),
        keyed_txn_id("hello", "order-42", "other"),
    }
    assert keyed not in others and len(others) == 4
    ulids = [new_txn_id() for _ in range(1000)]
    assert not any(is_keyed(u) for u in ulids)
    with pytest.raises(ValueError, match="time-ordered"):
        txn_time(keyed)
