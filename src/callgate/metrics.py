"""Prometheus metrics, in one registry per daemon (tests build as many daemons as they like).

The three metrics every FastAGI session updates (``callgate_decisions``,
``callgate_agi_sessions``, ``callgate_agi_session_seconds``) are ``LoopCounter`` and
``LoopHistogram``: plain integers updated on the event loop, read when the registry is scraped.
prometheus_client's own take a lock on every update, which the hot path does not need: every
update happens on the event-loop thread. The exposition is the same (``_total``, ``_bucket``,
``_sum``, ``_count``), without the optional ``_created`` samples.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, utils
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


_go_float = cast(Callable[[float], str], utils.floatToGoString)
"""How prometheus_client writes a bucket's ``le`` (``0.0001``, ``+Inf``)."""


class LoopCount:
    """One labelled child of a ``LoopCounter``."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount


class LoopCounter(Collector):
    """A labelled counter updated from the event loop only (no lock); ``labels(...).inc()``."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], LoopCount] = {}
        registry.register(self)

    def labels(self, *values: str) -> LoopCount:
        if len(values) != len(self._labelnames):
            raise ValueError(f"{self._name} takes labels {self._labelnames}")
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = LoopCount()
        return child

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for values, child in list(self._children.items()):
            family.add_metric(values, child.value)
        yield family


class LoopHistogram(Collector):
    """A histogram updated from the event loop only (no lock); ``observe(seconds)``."""

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = tuple(sorted(buckets))
        self._counts = [0] * (len(self._bounds) + 1)  # the last one: above every bound (+Inf)
        self._sum = 0.0
        registry.register(self)

    def observe(self, amount: float) -> None:
        # Prometheus buckets are "less than or equal": the first bound >= amount.
        self._counts[bisect_left(self._bounds, amount)] += 1
        self._sum += amount

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self._name, self._documentation)

    def collect(self) -> Iterator[Metric]:
        counts, total = list(self._counts), self._sum
        cumulative, buckets = 0, []
        for bound, count in zip((*self._bounds, float("inf")), counts, strict=True):
            cumulative += count
            buckets.append((_go_float(bound), float(cumulative)))
        yield HistogramMetricFamily(
            self._name, self._documentation, buckets=buckets, sum_value=total
        )


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.decisions = LoopCounter(
            "callgate_decisions",
            "Decisions made, by client, action and decision",
            ["client", "action", "decision"],
            registry=r,
        )
        self.agi_sessions = LoopCounter(
            "callgate_agi_sessions", "FastAGI sessions by outcome", ["outcome"], registry=r
        )
        self.agi_session_seconds = LoopHistogram(
            "callgate_agi_session_seconds",
            "FastAGI session time, environment to close",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.agi_active = Gauge("callgate_agi_active_sessions", "FastAGI sessions open", registry=r)
        self.http_requests = Counter(
            "callgate_http_requests",
            "HTTP requests by method, route and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.ami_connected = Gauge(
            "callgate_ami_connected", "1 while the Manager connection is logged in", registry=r
        )
        self.ami_state = Gauge(
            "callgate_ami_state",
            "Manager connection state: 1 for the current one (connected, disconnected,"
            " auth_failed)",
            ["state"],
            registry=r,
        )
        self.spy_sessions = Gauge(
            "callgate_spy_sessions_active",
            "Listen/whisper sessions in progress",
            ["client", "mode"],
            registry=r,
        )
        self.revocations = Counter(
            "callgate_revocations",
            "Sessions ended because a policy change withdrew them",
            ["client", "mode"],
            registry=r,
        )
        self.revocation_seconds = Histogram(
            "callgate_revocation_seconds",
            "Policy change acknowledged to Hangup action sent",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
