"""AWS's errors as the daemon answers them: an :class:`AwsError` names the operation and
AWS's error code, and says whether it is throttling (a 503 to retry, not a 502)."""

from __future__ import annotations

from botocore.exceptions import ClientError

from notifier.aws.clients import error_code

RATE_LIMITED = "RateLimited"
"""The code of an :class:`AwsError` for a Step Functions call this daemon did not make because
its share of the account's reads (``sfn_read_rate``) or starts (``sfn_start_rate``) was
spent: a 503 like AWS's throttling."""
# What botocore's retry handler treats as throttling; reaching us means its retries ran out.
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
        RATE_LIMITED,
    }
)


class AwsError(Exception):
    def __init__(self, operation: str, code: str, message: str) -> None:
        super().__init__(f"{operation}: {code}: {message}")
        self.operation = operation
        self.code = code
        self.message = message

    @property
    def throttled(self) -> bool:
        return self.code in THROTTLING_CODES

    @classmethod
    def wrap(cls, operation: str, exc: Exception) -> AwsError:
        if isinstance(exc, ClientError):
            message = str(exc.response.get("Error", {}).get("Message", ""))
            return cls(operation, error_code(exc) or "Unknown", message)
        return cls(operation, type(exc).__name__, str(exc))
