"""Which workers are alive: each ``cdmo worker`` beats once a loop into a Redis sorted set
(member = its id, score = the time of its last beat); readers count the beats younger than a
window. Infrastructure only (no flows, no routes), like the rest of :mod:`service.jobs`.

Without Redis there are no separate workers: the API's local pool runs the jobs, and
:func:`local_workers_seen` counts it.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

WORKERS_KEY = "workers"


def worker_id() -> str:
    """``host:pid``, the same shape as a run's ``worker_id``."""
    return f"{socket.gethostname()}:{os.getpid()}"


class WorkerRegistry:
    """Beats and counts in ``{prefix}workers`` (a sorted set: worker id -> unix time)."""

    def __init__(self, client: Any, *, prefix: str) -> None:
        self.client = client
        self.key = prefix + WORKERS_KEY

    def beat(self, worker: str, *, now: float | None = None) -> None:
        self.client.zadd(self.key, {worker: time.time() if now is None else now})

    def leave(self, worker: str) -> None:
        self.client.zrem(self.key, worker)

    def seen(self, within_s: float, *, now: float | None = None) -> list[str]:
        """Workers that beat within the last ``within_s`` seconds; older entries are dropped
        (a worker killed with -9 never leaves)."""
        now = time.time() if now is None else now
        self.client.zremrangebyscore(self.key, "-inf", now - 10 * within_s)
        members = self.client.zrangebyscore(self.key, now - within_s, "+inf")
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)
