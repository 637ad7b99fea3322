from __future__ import annotations

from notifier.apikeys import ApiKey, ApiKeys, hash_key, new_key


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def keys(clock: FakeClock, rate: float = 1.0, burst: int = 2) -> tuple[ApiKeys, str]:
    secret = new_key()
    config = {"ci": ApiKey("ci", hash_key(secret), rate, burst)}
    return ApiKeys(config, clock), secret


def test_missing_or_wrong_key_is_401() -> None:
    api_keys, secret = keys(FakeClock())
    assert api_keys.check(None).status == 401
    assert api_keys.check("").status == 401
    assert api_keys.check(secret + "x").status == 401
    assert api_keys.check(hash_key(secret)).status == 401  # the hash is not the key
    verdict = api_keys.check(secret)
    assert (verdict.status, verdict.key_name) == (200, "ci")


def test_rate_limit_allows_a_burst_then_429_until_tokens_return() -> None:
    clock = FakeClock()
    api_keys, secret = keys(clock, rate=0.5, burst=2)
    assert [api_keys.check(secret).status for _ in range(2)] == [200, 200]
    limited = api_keys.check(secret)
    assert limited.status == 429 and limited.retry_after == 2
    clock.now += 2
    assert api_keys.check(secret).status == 200
    assert api_keys.check(secret).status == 429


def test_each_key_has_its_own_bucket() -> None:
    clock = FakeClock()
    first, second = new_key(), new_key()
    api_keys = ApiKeys(
        {
            "a": ApiKey("a", hash_key(first), 1, 1),
            "b": ApiKey("b", hash_key(second), 1, 1),
        },
        clock,
    )
    assert api_keys.check(first).status == 200
    assert api_keys.check(first).status == 429
    assert api_keys.check(second).status == 200
