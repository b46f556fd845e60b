"""Progress publishing: throttled at the source, coalesced, the final state always delivered.

Events go to Channels groups named by `group_name`: one per job, per knowledge base and per answer task.

channels-redis `group_send` costs one Redis round trip per group, so a job publishes at most
one event per KB_PROGRESS_INTERVAL (a few per second) and only the latest numbers: updates in
between are coalesced into the next event. `publish(..., final=True)` always goes out.
"""

import json
import logging
import time
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings

logger = logging.getLogger(__name__)

EVENT_TYPE = "progress.event"


def group_name(kind: str, key: int | str) -> str:
    """The Channels group of one watched thing: `kind` is "job", "kb" (key: the slug) or "answer"."""
    return f"{kind}-{key}"


def send_to_groups(groups: list[str], payload: dict[str, Any]) -> None:
    """Send one event to several groups; a broken channel layer never breaks the caller.

    Each event carries `sent_at` (Unix time of publishing), so a subscriber can tell how late it is,
    and `text`, the payload as JSON: encoded once here, not by each of a group's many sockets.
    """
    layer = get_channel_layer()
    if layer is None:
        return
    payload = {**payload, "sent_at": time.time()}
    try:
        message = {"type": EVENT_TYPE, "payload": payload, "text": json.dumps(payload)}
        for group in groups:
            async_to_sync(layer.group_send)(group, message)
    except Exception:
        logger.warning("progress publish to %s failed", groups, exc_info=True)


class ProgressThrottle:
    """Publishes a job's state at most once per interval, plus every final state."""

    def __init__(self, groups: list[str], interval: float | None = None):
        self.groups = groups
        self.interval = settings.KB_PROGRESS_INTERVAL if interval is None else interval
        self.last_sent = 0.0
        self.sent = 0

    def publish(self, payload: dict[str, Any], *, final: bool = False, force: bool = False) -> bool:
        now = time.monotonic()
        if not (final or force) and now - self.last_sent < self.interval:
            return False
        self.last_sent = now
        self.sent += 1
        send_to_groups(self.groups, payload)
        return True
