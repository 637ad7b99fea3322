"""Fixtures for the state machine tests; the harness itself is in sfn_harness.py."""

from sfn_harness import aws_env, local_lambdas, stack

__all__ = ["aws_env", "local_lambdas", "stack"]
