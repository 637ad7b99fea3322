"""The AWS transport: aiobotocore clients (:mod:`.clients`), the fast path for the hottest
calls (:mod:`.fast_calls`, over :mod:`.http_connections`), the Step Functions read budget
(:mod:`.ratelimit`) and the token issuer's client (:mod:`.iot_tokens`). Imports nothing of
the daemon above it."""
