"""Infrastructure of match runs: the job engine (Dramatiq on Redis, or a local process pool
when ``REDIS_URL`` is unset) and the progress-event channel. Imports neither ``flows`` nor
``routes``: the job function is handed in by :mod:`service.worker` / :mod:`service.app`."""

from service.jobs.engine import DramatiqEngine, JobEngine, LocalPoolEngine, make_engine
from service.jobs.events import (
    DatabaseEventChannel,
    Event,
    EventChannel,
    RedisEventChannel,
    make_event_channel,
)

__all__ = [
    "DatabaseEventChannel",
    "DramatiqEngine",
    "Event",
    "EventChannel",
    "JobEngine",
    "LocalPoolEngine",
    "RedisEventChannel",
    "make_engine",
    "make_event_channel",
]
