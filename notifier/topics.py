"""The MQTT topics the daemon and the stack use, built in one place.

A workflow's completion goes to ``<topic_root>/<subtopic>/<execution name>``, where the
subtopic is that of the instance's MQTT connection it was given (the instance's id, or
``<instance>/<n>`` for its further connections); the status forwarder also publishes every status
change to ``<topic_root>/status/<stateMachine>/<execution name>`` for dashboards. (The
token Lambdas, shipped apart from the daemon, scope their tokens to the same filters.)
"""

from __future__ import annotations

STATUS_SUBTOPIC = "status"


def completion_topic(topic_root: str, subtopic: str, execution_name: str) -> str:
    """Where the completion of execution ``execution_name`` started by ``subtopic`` goes."""
    return f"{topic_root}/{subtopic}/{execution_name}"


def completions_filter(topic_root: str, subtopic: str) -> str:
    """Every completion for ``subtopic`` and the subtopics below it: what a daemon token for
    the instance ``subtopic`` may receive."""
    return f"{topic_root}/{subtopic}/#"


def connection_subtopic(instance_id: str, index: int) -> str:
    """The subtopic of the instance's MQTT connection ``index``: the instance's own for the
    first, one below it for each other, so that all stay within what its token receives."""
    return instance_id if index == 0 else f"{instance_id}/{index}"


def connection_filter(topic_root: str, subtopic: str) -> str:
    """What the connection of ``subtopic`` subscribes to: its completions only, not those of
    the subtopics below it."""
    return f"{topic_root}/{subtopic}/+"


def completed_execution(topic: str, topic_root: str, subtopic: str) -> str | None:
    """The execution name ``topic`` is the completion topic of for ``subtopic``; None if
    it is no such topic."""
    name = topic.removeprefix(f"{topic_root}/{subtopic}/")
    return name if name != topic and name and "/" not in name else None


def status_filter(topic_root: str) -> str:
    """Every status change, of every execution."""
    return f"{topic_root}/{STATUS_SUBTOPIC}/#"
