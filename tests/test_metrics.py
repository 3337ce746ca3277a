"""The lock-free hot-path metrics expose exactly what prometheus_client's own would."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from callgate.metrics import LoopCounter, LoopHistogram

BUCKETS = (0.0001, 0.00025, 0.001, 0.5, 10.0)
# On a bound (le is "less than or equal"), between bounds, below the first, above the last.
OBSERVED = (0.0001, 0.00025, 0.0002, 0.00000001, 0.7, 10.0, 10.5, 0.0)


def exposition(registry: CollectorRegistry) -> list[str]:
    """The samples, without the ``_created`` ones prometheus_client adds and ours omit."""
    lines = generate_latest(registry).decode().splitlines()
    return [line for line in lines if "_created" not in line]


def test_histogram_matches_prometheus_client() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    loop_histogram = LoopHistogram("h_seconds", "help", BUCKETS, ours)
    histogram = Histogram("h_seconds", "help", buckets=BUCKETS, registry=theirs)
    for value in OBSERVED:
        loop_histogram.observe(value)
        histogram.observe(value)
    assert exposition(ours) == exposition(theirs)


def test_counter_matches_prometheus_client() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    loop_counter = LoopCounter("c", "help", ["client", "outcome"], ours)
    counter = Counter("c", "help", ["client", "outcome"], registry=theirs)
    for labels, amount in ((("a", "x"), 1), (("b", "x"), 3), (("a", "x"), 2), (("a", "y"), 1)):
        loop_counter.labels(*labels).inc(amount)
        counter.labels(*labels).inc(amount)
    assert exposition(ours) == exposition(theirs)
    assert ours.get_sample_value("c_total", {"client": "a", "outcome": "x"}) == 3


def test_wrong_labels_are_refused_and_names_collide_as_usual() -> None:
    registry = CollectorRegistry()
    counter = LoopCounter("c", "help", ["client"], registry)
    with pytest.raises(ValueError, match="takes labels"):
        counter.labels("a", "b")
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Counter("c", "help", registry=registry)


def test_decisions_have_a_client_series_only_for_the_clients_labelled() -> None:
    from callgate.metrics import OTHER_CLIENT, Metrics

    metrics = Metrics()
    metrics.decisions.labels("acme", "pickup", "allow").inc()  # nothing labelled yet
    metrics.decisions.label_clients({"acme"}.__contains__)
    for client in ("acme", "globex", "-", "x" * 64):
        metrics.decisions.labels(client, "pickup", "allow").inc()
    registry = metrics.registry
    labels = {"action": "pickup", "decision": "allow"}
    assert registry.get_sample_value("callgate_decisions_total", {"client": "acme", **labels}) == 1
    other = {"client": OTHER_CLIENT, **labels}
    assert registry.get_sample_value("callgate_decisions_total", other) == 4
    assert (
        registry.get_sample_value("callgate_decisions_total", {"client": "globex", **labels})
        is None
    )


def test_audit_losses_are_read_from_their_source_at_each_scrape() -> None:
    from callgate.metrics import Metrics

    metrics, counts = Metrics(), {"rejected": 2}
    metrics.audit_lost.read_from(lambda: counts)
    sample = {"reason": "rejected"}
    assert metrics.registry.get_sample_value("callgate_audit_events_lost_total", sample) == 2
    counts["rejected"] = 3
    assert metrics.registry.get_sample_value("callgate_audit_events_lost_total", sample) == 3
