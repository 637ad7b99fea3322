from datetime import UTC, datetime, timedelta

from notifier.ids import is_txn_id, new_txn_id, txn_time


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
