"""Prometheus metrics, in one registry per daemon (tests build as many daemons as they like).

The three metrics every FastAGI session updates (``callgate_decisions``,
``callgate_agi_sessions``, ``callgate_agi_session_seconds``) are ``LoopCounter`` and
``LoopHistogram``: plain integers updated on the event loop, read when the registry is scraped.
prometheus_client's own take a lock on every update, which the hot path does not need: every
update happens on the event-loop thread. The exposition is the same (``_total``, ``_bucket``,
``_sum``, ``_count``), without the optional ``_created`` samples.

A label that callers choose is bounded: ``callgate_decisions`` has a ``client`` series only for
the clients with a stored policy (``label_clients``); every other client id, well-formed or not,
is counted under ``client="(other)"`` (``OTHER_CLIENT``, which no client id can be). A flood of
made-up client ids then adds no series, and a scrape stays small and quick.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Final, cast

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


OTHER_CLIENT: Final = "(other)"
"""The ``client`` label of every client without a stored policy (not a valid client id, so it
never collides with one)."""


def _no_client(_: str) -> bool:
    return False


class ClientLoopCounter(LoopCounter):
    """A ``LoopCounter`` whose first label is a client id: a series of its own only for a client
    ``label_clients`` accepts, ``OTHER_CLIENT`` for the rest."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        super().__init__(name, documentation, labelnames, registry)
        self._labelled: Callable[[str], bool] = _no_client

    def label_clients(self, labelled: Callable[[str], bool]) -> None:
        """``labelled(client_id)``: whether the client gets series of its own (the daemon passes
        ``PolicyRegistry.has_policy``; until then every client is ``OTHER_CLIENT``)."""
        self._labelled = labelled

    def labelled(self, client_id: str) -> bool:
        """Whether ``client_id`` has series of its own."""
        return self._labelled(client_id)

    def labels(self, *values: str) -> LoopCount:
        if values and not self._labelled(values[0]):
            values = (OTHER_CLIENT, *values[1:])
        return super().labels(*values)


class SampledCounter(Collector):
    """A labelled counter kept elsewhere (a dict of counts), read at each scrape."""

    def __init__(
        self, name: str, documentation: str, labelname: str, registry: CollectorRegistry
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelname = labelname
        self._source: Callable[[], Mapping[str, int]] = dict
        registry.register(self)

    def read_from(self, source: Callable[[], Mapping[str, int]]) -> None:
        self._source = source

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self._name, self._documentation, labels=[self._labelname])

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=[self._labelname])
        for value, count in sorted(self._source().items()):
            family.add_metric([value], count)
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
        self.decisions = ClientLoopCounter(
            "callgate_decisions",
            f"Decisions made, by client ({OTHER_CLIENT} for those without a stored policy),"
            " action and decision",
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
        self.audit_lost = SampledCounter(
            "callgate_audit_events_lost",
            "Audit events not stored, by reason (queue_full, closed, store_error, rejected)",
            "reason",
            registry=r,
        )
        """Read from ``AuditRepository.lost_counts`` (wired by the daemon)."""
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
        # Several Asterisk servers and instances: each PBX's Manager here, and the store
        self.ami_pbx_state = Gauge(
            "callgate_ami_pbx_state",
            "Per PBX: 1 for this instance's Manager state (connected, disconnected, auth_failed,"
            " standby: another instance enforces)",
            ["pbx", "state"],
            registry=r,
        )
        self.ami_enforcing = Gauge(
            "callgate_ami_enforcing",
            "Per PBX: 1 while this instance enforces on it (holds its enforcement lock)",
            ["pbx"],
            registry=r,
        )
        self.store_reachable = Gauge(
            "callgate_store_reachable",
            "1 while the store is reachable (PostgreSQL: the change feed connected, caught up)",
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
