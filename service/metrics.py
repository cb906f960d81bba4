"""Prometheus metrics: request counts and latencies by route template (not raw path).

Several API processes behind one port (``cdmo serve --workers N``, ``make stack``) share their
metrics through prometheus_client's multiprocess mode: with ``PROMETHEUS_MULTIPROC_DIR`` set
(an empty folder, before the processes start) every process writes its values there and
``/metrics`` answers the sum over all of them, whichever process serves the scrape.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class Metrics:
    """One registry per app, so several apps (tests) never clash on global collectors."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._runs: _RunsCollector | None = None
        self.requests = Counter(
            "cdmo_http_requests_total",
            "HTTP requests.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "cdmo_http_request_duration_seconds",
            "HTTP request latency.",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.market_version = Gauge(
            "cdmo_market_version",
            "Market version at the last snapshot.",
            registry=self.registry,
            multiprocess_mode="max",
        )

    def watch_runs(self, read: Callable[[], RunsState]) -> None:
        """Expose the match runs' state, read from the database at each scrape (runs execute
        in worker processes: the database is where their figures meet)."""
        self._runs = _RunsCollector(read)
        self.registry.register(self._runs)

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            combined = CollectorRegistry()
            MultiProcessCollector(combined)
            if self._runs is not None:  # read from the database: the same in every process
                combined.register(self._runs)
            return generate_latest(combined)
        return generate_latest(self.registry)


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def _send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(scope["method"], template, str(status)).inc()
            self.metrics.latency.labels(scope["method"], template).observe(
                time.perf_counter() - start
            )


@dataclass
class RunsState:
    """What the runs collector reports; built by :func:`service.app` from the database."""

    by_status: dict[str, int] = field(default_factory=dict)
    queue_depth: int = 0
    heartbeat_age_s: dict[str, float] = field(default_factory=dict)  # active run -> age
    durations_s: list[float] = field(default_factory=list)  # recent finished runs
    gaps: list[float] = field(default_factory=list)
    phase_s: dict[str, list[float]] = field(default_factory=dict)


_DURATION_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
_GAP_BUCKETS = (0.0001, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
_PHASE_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 600)


def _buckets(values: list[float], buckets: tuple[float, ...]) -> list[tuple[str, float]]:
    counts = [sum(1 for v in values if v <= b) for b in buckets]
    return [*((str(b), c) for b, c in zip(buckets, counts, strict=True)), ("+Inf", len(values))]


def _histogram(
    name: str, doc: str, values: list[float], buckets: tuple[float, ...]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc)
    family.add_metric([], _buckets(values, buckets), sum(values))
    return family


class _RunsCollector(Collector):
    def __init__(self, read: Callable[[], RunsState]) -> None:
        self.read = read

    def collect(self) -> Iterator[object]:  # type: ignore[override]
        try:
            state = self.read()
        except Exception:  # noqa: BLE001 - a scrape must not fail because the DB blinked
            return
        runs = GaugeMetricFamily("cdmo_runs", "Match runs by status.", labels=["status"])
        for status, n in sorted(state.by_status.items()):
            runs.add_metric([status], n)
        yield runs
        yield GaugeMetricFamily(
            "cdmo_runs_queue_depth", "Match runs waiting for a worker.", value=state.queue_depth
        )
        beats = GaugeMetricFamily(
            "cdmo_run_heartbeat_age_seconds",
            "Seconds since the worker of an active run last beat.",
            labels=["run_id"],
        )
        for run_id, age in sorted(state.heartbeat_age_s.items()):
            beats.add_metric([run_id], age)
        yield beats
        yield _histogram(
            "cdmo_run_duration_seconds",
            "Wall time of recent finished runs.",
            state.durations_s,
            _DURATION_BUCKETS,
        )
        yield _histogram(
            "cdmo_run_final_gap", "Final optimality gap of recent runs.", state.gaps, _GAP_BUCKETS
        )
        phases = HistogramMetricFamily(
            "cdmo_run_phase_seconds", "Seconds per phase of recent runs.", labels=["phase"]
        )
        for phase, values in sorted(state.phase_s.items()):
            phases.add_metric([phase], _buckets(values, _PHASE_BUCKETS), sum(values))
        yield phases
