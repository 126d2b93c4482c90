"""Where metric values come from when the caller did not pass them: scorers.

A scorer is a callable taking a `ScoreRequest` and returning a metric value (a number, a
label, a list of labels, or None). Sources, in order: scorers registered in code
(`Scorers.register`), then the `stageguard.scorers` entry-point group (entry point name =
metric name), then the built-ins below. Values the caller passes with the payload come
before all of them (the runtime looks there first).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import TYPE_CHECKING

from stageguard.runtime import pii
from stageguard.runtime.catalog import canonical_name
from stageguard.runtime.model import HttpScorerSpec, MetricSpec

if TYPE_CHECKING:
    from stageguard.runtime.http_scorer import HttpService

log = logging.getLogger("stageguard.scorers")

ENTRY_POINT_GROUP = "stageguard.scorers"


@dataclass(frozen=True, slots=True)
class ScoreRequest:
    metric: str
    input: str
    output: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    # The invocation's deadline as a `time.perf_counter()` instant: the decision stops
    # waiting then whatever a scorer does, and a scorer that looks at it can stop working
    # too (the built-in ones do), which frees its thread for the next invocation.
    deadline: float | None = None


Scorer = Callable[[ScoreRequest], object]


def _pii_input(req: ScoreRequest) -> object:
    return list(pii.detect(req.input, req.deadline))


def _pii_output(req: ScoreRequest) -> object:
    return list(pii.detect(req.output, req.deadline))


BUILTIN_SCORERS: Mapping[str, Scorer] = MappingProxyType({
    "input_pii": _pii_input,
    "output_pii": _pii_output,
    "input_length": lambda req: len(req.input),
    "output_length": lambda req: len(req.output),
})


class Scorers:
    """Looks up the scorer for a metric. Thread-safe for lookups; register before serving."""

    def __init__(self, *, entry_point_group: str | None = ENTRY_POINT_GROUP,
                 builtins: bool = True, http_connections: int = 32) -> None:
        self._registered: dict[str, Scorer] = {}
        # Scorers that policies declare (`scorer "http://…"`): one service per url, shared
        # by every stage and version that names it, kept until `close`.
        self._http: dict[tuple[str, str, str | None], Scorer] = {}
        self._services: dict[str, HttpService] = {}
        self._http_connections = http_connections
        self._http_lock = threading.Lock()
        self._group = entry_point_group
        self._entry_points: dict[str, Scorer] | None = None
        self._builtins = BUILTIN_SCORERS if builtins else {}

    def register(self, metric: str, scorer: Scorer) -> None:
        self._registered[canonical_name(metric)] = scorer

    def _load_entry_points(self) -> dict[str, Scorer]:
        loaded: dict[str, Scorer] = {}
        if self._group:
            for ep in entry_points(group=self._group):
                try:
                    loaded[canonical_name(ep.name)] = ep.load()
                except Exception as exc:  # a broken plugin must not take the runtime down
                    log.error("scorer entry point %s (%s) failed to load: %s", ep.name,
                              ep.value, exc)
        return loaded

    def find(self, metric: str, spec: MetricSpec | None = None) -> Scorer | None:
        """The scorer for `metric`: registered in code, else the one its declaration
        (`spec`) names, else an entry point, else a built-in."""
        if metric in self._registered:
            return self._registered[metric]
        if spec is not None and spec.scorer is not None:
            return self.http(metric, spec.scorer)
        if self._entry_points is None:
            self._entry_points = self._load_entry_points()
        return self._entry_points.get(metric) or self._builtins.get(metric)

    def http(self, metric: str, spec: HttpScorerSpec) -> Scorer:
        key = (metric, spec.url, spec.field)
        found = self._http.get(key)
        if found is None:
            from stageguard.runtime.http_scorer import HttpScorer, HttpService

            with self._http_lock:
                service = self._services.get(spec.url)
                if service is None:
                    service = self._services[spec.url] = HttpService(
                        spec.url, max_connections=self._http_connections)
                found = self._http.setdefault(key, HttpScorer(service, metric, spec.field))
        return found

    @property
    def services(self) -> dict[str, HttpService]:
        """The HTTP services declared scorers use, by url."""
        return dict(self._services)

    def close(self) -> None:
        """Close the HTTP services' connections."""
        with self._http_lock:
            services, self._services, self._http = list(self._services.values()), {}, {}
        for service in services:
            service.close()
