"""Prometheus metrics of one server (its own registry, so several apps in one process, as in
the tests, never share counters)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from stageguard.runtime import package_version
from stageguard.runtime.engine import Runtime

# Decisions with precomputed metrics take microseconds; scorers can take seconds.
DECISION_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
REQUEST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _RuntimeCollector(Collector):
    """Read at scrape time from the runtime and its notifier (no bookkeeping per call)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        rt = self.runtime
        webhooks = rt.notifier_stats()
        sent = CounterMetricFamily("stageguard_webhooks_sent", "Webhook POSTs delivered")
        sent.add_metric([], webhooks.sent)
        yield sent
        dropped = CounterMetricFamily("stageguard_webhooks_dropped", "Webhook notifications "
                                      "given up (refused url, full queue, failed delivery)")
        dropped.add_metric([], webhooks.dropped)
        yield dropped
        stages = GaugeMetricFamily("stageguard_stages_loaded", "Stages being served")
        stages.add_metric([], rt.stage_count)
        yield stages
        errors = GaugeMetricFamily("stageguard_registry_load_errors", "Registry entries that "
                                   "could not be loaded (previous versions keep serving)")
        errors.add_metric([], len(rt.load_errors))
        yield errors
        sync = rt.sync_status()
        revision = GaugeMetricFamily("stageguard_registry_revision", "The registry revision "
                                     "this server serves")
        revision.add_metric([], sync.revision)
        yield revision
        stale = GaugeMetricFamily("stageguard_registry_staleness_seconds", "Seconds since the "
                                  "registry was last read successfully")
        stale.add_metric([], sync.staleness if sync.staleness is not None else float("nan"))
        yield stale
        failing = GaugeMetricFamily("stageguard_registry_sync_failures", "Consecutive failed "
                                    "reads of the registry (0: in sync)")
        failing.add_metric([], sync.failures)
        yield failing
        shadow = rt.shadow.snapshot()
        decided = CounterMetricFamily("stageguard_shadow_decisions", "Requests a shadow "
                                      "candidate also decided", labels=["project", "stage"])
        for (project, stage), count in sorted(shadow.decided.items()):
            decided.add_metric([project, stage], count)
        yield decided
        differ = CounterMetricFamily(
            "stageguard_shadow_disagreements", "Shadow decisions whose status differs from the "
            "serving version's", labels=["project", "stage", "from_status", "to_status"])
        for labels, count in sorted(shadow.disagreements.items()):
            differ.add_metric(list(labels), count)
        yield differ
        if rt.decision_log is not None:
            stats = rt.decision_log.stats()
            events = CounterMetricFamily("stageguard_decision_log_events", "Decision-log "
                                         "events by sink and outcome",
                                         labels=["sink", "outcome"])
            retries = CounterMetricFamily("stageguard_decision_log_retries", "Failed batch "
                                          "writes tried again", labels=["sink"])
            events.add_metric(["log", "dropped"], stats.dropped)
            for name, sink in sorted(stats.sinks.items()):
                events.add_metric([name, "delivered"], sink.delivered)
                events.add_metric([name, "dropped"], sink.dropped)
                retries.add_metric([name], sink.retried)
            yield events
            yield retries
        info = GaugeMetricFamily("stageguard_build_info", "stageguard version",
                                 labels=["version"])
        info.add_metric([package_version()], 1)
        yield info


class ServerMetrics:
    def __init__(self, runtime: Runtime) -> None:
        # `_created` series double the output and nobody graphs them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        self.decisions = Counter("stageguard_decisions", "Decisions by stage and status",
                                 ["project", "stage", "status"], registry=self.registry)
        self.decision_seconds = Histogram(
            "stageguard_decision_seconds", "Time to decide (the runtime's execution_time)",
            ["project", "stage"], buckets=DECISION_BUCKETS, registry=self.registry)
        self.requests = Counter("stageguard_http_requests", "HTTP requests by route and code",
                                ["method", "route", "code"], registry=self.registry)
        self.request_seconds = Histogram(
            "stageguard_http_request_seconds", "HTTP request latency in the server",
            ["route"], buckets=REQUEST_BUCKETS, registry=self.registry)
        self._runtime_collector = _RuntimeCollector(runtime)
        self.registry.register(self._runtime_collector)
        # Label lookups cost more than the increment: each label set's children are kept.
        self._children: dict[tuple[object, ...], tuple[Any, Any]] = {}

    def _count(self, counter: Counter, histogram: Histogram, labels: tuple[str, ...],
               histogram_labels: tuple[str, ...], seconds: float) -> None:
        key = (counter, *labels)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (counter.labels(*labels),
                                              histogram.labels(*histogram_labels))
        children[0].inc()
        children[1].observe(seconds)

    def decision(self, project: str, stage: str, status: str, seconds: float) -> None:
        self._count(self.decisions, self.decision_seconds, (project, stage, status),
                    (project, stage), seconds)

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        self._count(self.requests, self.request_seconds, (method, route, str(status)),
                    (route,), seconds)

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # One of several workers (serve --workers): the counters and histograms of all of
            # them, from their shared files, and this worker's view of the registry (the same
            # in every replica, up to a poll interval).
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            registry.register(self._runtime_collector)
            return generate_latest(registry)
        return generate_latest(self.registry)
