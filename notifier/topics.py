"""The MQTT topics the daemon and the stack use, built in one place.

A workflow's completion goes to ``<topic_root>/<subtopic>/<execution name>``, where the
subtopic is the instance that started it; the status forwarder also publishes every status
change to ``<topic_root>/status/<stateMachine>/<execution name>`` for dashboards. (The
token Lambdas, shipped apart from the daemon, scope their tokens to the same filters.)
"""

from __future__ import annotations

STATUS_SUBTOPIC = "status"


def completion_topic(topic_root: str, subtopic: str, execution_name: str) -> str:
    """Where the completion of execution ``execution_name`` started by ``subtopic`` goes."""
    return f"{topic_root}/{subtopic}/{execution_name}"


def completions_filter(topic_root: str, subtopic: str) -> str:
    """Every completion for the instance ``subtopic``."""
    return f"{topic_root}/{subtopic}/#"


def status_filter(topic_root: str) -> str:
    """Every status change, of every execution."""
    return f"{topic_root}/{STATUS_SUBTOPIC}/#"
