"""Prometheus RED metrics, in a registry owned by the app (not prometheus-client's global one).

Two modes, chosen once at startup (nothing changes per request):
- one process (the default: one uvicorn per container, scale by replicas): `InMemoryHttpMetrics`
  keeps the per-request values as plain numbers, updated in batches, and turns them into metric
  families only when /metrics is scraped. The duration histogram carries exemplars;
- several worker processes (gunicorn, see gunicorn.conf.py): PROMETHEUS_MULTIPROC_DIR is set and
  `MultiprocessHttpMetrics` uses prometheus-client's metrics, whose values live in files there;
  each scrape merges all of them. prometheus-client drops exemplars in this mode, and per-process
  metrics (process_cpu_seconds_total, ...) are left out: one scrape reaches one worker, so they
  would describe a different process each time.

Both expose the same series. A prometheus-client update takes a lock and a few calls, and a
request makes four: 27 k instructions, a twentieth of what the bare app spends on a request. That
is why the one-process mode keeps what changes on every request out of them.
"""

from __future__ import annotations

import gzip
import os
import threading
import time
from abc import ABC, abstractmethod
from bisect import bisect_left
from collections import deque
from collections.abc import Awaitable, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.samples import Exemplar
from starlette.requests import Request
from starlette.responses import Response

# Same buckets as OTel's http.server.request.duration advice, plus 7.5 and 10 s.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
# The label for any other method (the semantic conventions' value): clients choose methods.
OTHER_METHOD = "_OTHER"
UNMATCHED_ROUTE = "unmatched"

DURATION = "http_server_request_duration_seconds"
DURATION_HELP = "Duration of HTTP server requests."
DURATION_LABELS = ("http_request_method", "http_route", "http_response_status_code")
ACTIVE = "http_server_active_requests"
ACTIVE_HELP = "Number of HTTP server requests in progress."
TENANT_REQUESTS = "tenant_requests"
TENANT_REQUESTS_HELP = (
    "Requests per tenant account: the first TENANT_METRICS_MAX_ACCOUNTS ids, then `other`."
)
TENANT_LABELS = ("account_id", "outcome")
# `le` label values as prometheus-client writes them (`0.005`, `1.0`, `+Inf`).
_BUCKET_NAMES = (*(repr(bound) for bound in DURATION_BUCKETS), "+Inf")


def multiprocess_dir() -> str | None:
    """PROMETHEUS_MULTIPROC_DIR from the process environment (not `.env`).

    prometheus-client reads the variable itself when it is first imported and from then on keeps
    every value in files there, so only the real environment can switch the mode.
    """
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def http_metrics(
    registry: CollectorRegistry, *, max_accounts: int, multiprocess_dir: str | None = None
) -> HttpMetrics:
    """The service's metrics for the mode `multiprocess_dir` selects (see the module docstring)."""
    if multiprocess_dir is None:
        return InMemoryHttpMetrics(registry, max_accounts=max_accounts)
    return MultiprocessHttpMetrics(registry, max_accounts=max_accounts, path=multiprocess_dir)


class HttpMetrics(ABC):
    """What the middleware records: requests in progress, their duration, tenant accounts."""

    multiprocess_dir: str | None = None

    def __init__(self, registry: CollectorRegistry, *, max_accounts: int) -> None:
        self.registry = registry
        # Rare (a client sent a bad tenant header): prometheus-client's counter in both modes.
        self.header_rejections = Counter(
            "tenant_header_rejections",
            "Tenant header values dropped because of invalid characters or length.",
            ["header"],
            registry=registry,
        )
        self._max_accounts = max_accounts
        self._accounts: set[str] = set()

    @abstractmethod
    def request_started(self, method: str) -> None: ...

    @abstractmethod
    def request_finished(
        self,
        method: str,
        route: str,
        status: int,
        duration: float,
        account_id: str | None,
        trace_id: str | None,
    ) -> None:
        """`trace_id` (sampled requests only) becomes the duration bucket's exemplar."""

    def _tenant_labels(self, account_id: str | None, status: int) -> tuple[str, str]:
        """`account_id` is the id itself for the first `max_accounts` ids seen, then `other`."""
        outcome = "error" if status >= 500 else "success"
        if account_id is None:
            return "none", outcome
        if account_id not in self._accounts:
            if len(self._accounts) >= self._max_accounts:
                return "other", outcome
            self._accounts.add(account_id)
        return account_id, outcome


# A finished request not counted yet: method, route, status, duration, account id, trace id
# (sampled requests only) and when it ended.
_Finished = tuple[str, str, int, float, str | None, str | None, float]
# Finished requests are counted in batches of this many, and whenever /metrics is scraped.
_FOLD_EVERY = 256
# A bucket's latest exemplar: trace id, duration, when the request ended. Made into an `Exemplar`
# only when scraped: most are replaced by a later request in the same bucket before that.
_ExemplarFacts = tuple[str, float, float]


class InMemoryHttpMetrics(HttpMetrics):
    """One process: plain numbers, read at scrape time.

    A finished request is only queued; the numbers are updated in batches (`_fold`), before every
    scrape and whenever _FOLD_EVERY requests are waiting. Inside a loaded server the same update
    took several times longer per request than in a batch, where it runs warm in the CPU's
    caches. The in-progress gauge is updated at once. Each duration series is one list: a count
    per bucket (+Inf last), then the sum.
    """

    def __init__(self, registry: CollectorRegistry, *, max_accounts: int) -> None:
        super().__init__(registry, max_accounts=max_accounts)
        self._durations: dict[tuple[str, str, str], list[float]] = {}
        self._exemplars: dict[tuple[str, str, str], list[_ExemplarFacts | None]] = {}
        self._active: dict[str, int] = {}
        self._tenant_requests: dict[tuple[str, str], int] = {}
        # Appended by the event loop, emptied by whoever folds (a scrape may run in another
        # thread: the separate metrics port); the lock keeps folds and scrapes apart.
        self._finished: deque[_Finished] = deque()
        self._lock = threading.Lock()
        registry.register(self)
        ProcessCollector(registry=registry)

    def request_started(self, method: str) -> None:
        self._active[method] = self._active.get(method, 0) + 1

    def request_finished(
        self,
        method: str,
        route: str,
        status: int,
        duration: float,
        account_id: str | None,
        trace_id: str | None,
    ) -> None:
        self._active[method] -= 1
        ended = time.time() if trace_id is not None else 0.0
        self._finished.append((method, route, status, duration, account_id, trace_id, ended))
        if len(self._finished) >= _FOLD_EVERY:
            with self._lock:
                self._fold()

    def _fold(self) -> None:
        """Counts the queued requests (call with the lock held)."""
        finished = self._finished
        for _ in range(len(finished)):
            method, route, status, duration, account_id, trace_id, ended = finished.popleft()
            key = (method, route, str(status))
            values = self._durations.get(key)
            if values is None:
                values = self._durations[key] = [0.0] * (len(_BUCKET_NAMES) + 1)
                self._exemplars[key] = [None] * len(_BUCKET_NAMES)
            bucket = bisect_left(DURATION_BUCKETS, duration)  # the first bound >= duration
            values[bucket] += 1
            values[-1] += duration
            if trace_id is not None:
                self._exemplars[key][bucket] = (trace_id, duration, ended)
            tenant_key = self._tenant_labels(account_id, status)
            self._tenant_requests[tenant_key] = self._tenant_requests.get(tenant_key, 0) + 1

    @staticmethod
    def _families() -> tuple[HistogramMetricFamily, GaugeMetricFamily, CounterMetricFamily]:
        return (
            HistogramMetricFamily(DURATION, DURATION_HELP, labels=DURATION_LABELS),
            GaugeMetricFamily(ACTIVE, ACTIVE_HELP, labels=("http_request_method",)),
            CounterMetricFamily(TENANT_REQUESTS, TENANT_REQUESTS_HELP, labels=TENANT_LABELS),
        )

    def describe(self) -> list[Metric]:
        """The names this collector exposes, so the registry can refuse duplicates."""
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        duration, active, tenant_requests = self._families()
        with self._lock:
            self._fold()
            series = [
                (key, values[:], self._exemplars[key][:]) for key, values in self._durations.items()
            ]
            tenant_counts = list(self._tenant_requests.items())
        for key, values, exemplars in series:
            buckets: list[tuple[str, float] | tuple[str, float, Exemplar]] = []
            cumulative = 0.0
            for name, count, exemplar in zip(_BUCKET_NAMES, values, exemplars, strict=False):
                cumulative += count
                if exemplar is None:
                    buckets.append((name, cumulative))
                else:
                    trace_id, value, ended = exemplar
                    buckets.append(
                        (name, cumulative, Exemplar({"trace_id": trace_id}, value, ended))
                    )
            duration.add_metric(key, buckets, sum_value=values[-1])
        for method, count in list(self._active.items()):
            active.add_metric((method,), count)
        for tenant_key, count in tenant_counts:
            tenant_requests.add_metric(tenant_key, count)
        yield from (duration, active, tenant_requests)


class MultiprocessHttpMetrics(HttpMetrics):
    """Several worker processes: prometheus-client's metrics, whose values live in `path`.

    Label children are cached per label tuple: `labels()` on every request would take a lock and
    build a tuple each time, and the set of routes, methods and statuses is small.
    """

    def __init__(self, registry: CollectorRegistry, *, max_accounts: int, path: str) -> None:
        super().__init__(registry, max_accounts=max_accounts)
        self.multiprocess_dir = path
        self.duration = Histogram(
            DURATION, DURATION_HELP, DURATION_LABELS, buckets=DURATION_BUCKETS, registry=registry
        )
        self.active = Gauge(
            ACTIVE,
            ACTIVE_HELP,
            ["http_request_method"],
            registry=registry,
            # Across worker processes: the sum over the live ones. A worker that dies mid-request
            # leaves its count behind until gunicorn's child_exit hook removes its file.
            multiprocess_mode="livesum",
        )
        self.tenant_requests = Counter(
            TENANT_REQUESTS, TENANT_REQUESTS_HELP, TENANT_LABELS, registry=registry
        )
        self._duration_children: dict[tuple[str, str, str], Histogram] = {}
        self._active_children: dict[str, Gauge] = {}
        self._tenant_children: dict[tuple[str, str], Counter] = {}

    def request_started(self, method: str) -> None:
        child = self._active_children.get(method)
        if child is None:
            child = self._active_children[method] = self.active.labels(method)
        child.inc()

    def request_finished(
        self,
        method: str,
        route: str,
        status: int,
        duration: float,
        account_id: str | None,
        trace_id: str | None,  # prometheus-client drops exemplars in this mode
    ) -> None:
        self._active_children[method].dec()
        key = (method, route, str(status))
        child = self._duration_children.get(key)
        if child is None:
            child = self._duration_children[key] = self.duration.labels(*key)
        child.observe(duration)
        tenant_key = self._tenant_labels(account_id, status)
        counter = self._tenant_children.get(tenant_key)
        if counter is None:
            counter = self._tenant_children[tenant_key] = self.tenant_requests.labels(*tenant_key)
        counter.inc()


def multiprocess_registry(path: str) -> CollectorRegistry:
    """A registry that merges the values every worker process wrote to `path`, at collect time."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return registry


def metrics_endpoint(metrics: HttpMetrics) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint serving the service's metrics.

    OpenMetrics (with exemplars) when the scraper asks for it, gzip when it accepts it (Prometheus
    does both). In multiprocess mode every scrape gets a fresh registry over all workers' files.
    """
    registry, path = metrics.registry, metrics.multiprocess_dir

    async def endpoint(request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        body = encoder(registry if path is None else multiprocess_registry(path))
        headers = {"Content-Type": content_type, "Vary": "Accept-Encoding"}
        if gzip_accepted(request.headers.get("accept-encoding", "")):
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        return Response(body, headers=headers)

    return endpoint
