"""The Archive workflow's file metadata step.

It simulates looking at a file: whether it may be archived and its quality
(0-100) are random, unless the execution input fixes them with ``archive``
(bool) and ``quality`` (int).
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime
from typing import Any


def file_metadata(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    archive = event.get("archive")
    if not isinstance(archive, bool):
        archive = random.random() < 0.5  # nosec B311  # simulated metadata, not security
    quality = event.get("quality")
    if isinstance(quality, bool) or not isinstance(quality, int) or not 0 <= quality <= 100:
        quality = random.randint(0, 100)  # nosec B311  # simulated metadata
    return {
        "FileId": str(uuid.uuid4()),
        "Timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "Archive": archive,
        "Quality": quality,
        "ApprovalNeeded": event.get("approval_needed") is True,
    }
