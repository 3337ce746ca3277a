"""Prometheus metrics, in one registry per daemon (tests build as many daemons as they like)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.decisions = Counter(
            "callgate_decisions",
            "Decisions made, by client, action and decision",
            ["client", "action", "decision"],
            registry=r,
        )
        self.agi_sessions = Counter(
            "callgate_agi_sessions", "FastAGI sessions by outcome", ["outcome"], registry=r
        )
        self.agi_session_seconds = Histogram(
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
