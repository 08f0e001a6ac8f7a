"""Prometheus RED metrics, in a registry owned by the app (not prometheus-client's global one).

Two modes, chosen once at startup (nothing changes per request):
- one process (the default: one uvicorn per container, scale by replicas): values live in memory,
  /metrics serves the app's registry, the duration histogram carries exemplars;
- several worker processes (gunicorn, see gunicorn.conf.py): PROMETHEUS_MULTIPROC_DIR is set, every
  process writes its values to files there, and each scrape merges all of them. prometheus-client
  drops exemplars in this mode, and per-process metrics (process_cpu_seconds_total, ...) are left
  out: one scrape reaches one worker, so they would describe a different process each time.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.requests import Request
from starlette.responses import Response

# Same buckets as OTel's http.server.request.duration advice, plus 7.5 and 10 s.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
UNMATCHED_ROUTE = "unmatched"


def multiprocess_dir() -> str | None:
    """PROMETHEUS_MULTIPROC_DIR from the process environment (not `.env`).

    prometheus-client reads the variable itself when it is first imported and from then on keeps
    every value in files there, so only the real environment can switch the mode.
    """
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class HttpMetrics:
    """The service's Prometheus metrics.

    Label children are cached per label tuple: `labels()` on every request would take a lock and
    build a tuple each time, and the set of routes, methods and statuses is small.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        max_accounts: int,
        multiprocess_dir: str | None = None,
    ) -> None:
        self.registry = registry
        self.multiprocess_dir = multiprocess_dir
        self.duration = Histogram(
            "http_server_request_duration_seconds",
            "Duration of HTTP server requests.",
            ["http_request_method", "http_route", "http_response_status_code"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.active = Gauge(
            "http_server_active_requests",
            "Number of HTTP server requests in progress.",
            ["http_request_method"],
            registry=registry,
            # Across worker processes: the sum over the live ones. A worker that dies mid-request
            # leaves its count behind until gunicorn's child_exit hook removes its file.
            multiprocess_mode="livesum",
        )
        self.tenant_requests = Counter(
            "tenant_requests",
            "Requests per tenant account: the first TENANT_METRICS_MAX_ACCOUNTS ids, then `other`.",
            ["account_id", "outcome"],
            registry=registry,
        )
        self.header_rejections = Counter(
            "tenant_header_rejections",
            "Tenant header values dropped because of invalid characters or length.",
            ["header"],
            registry=registry,
        )
        if multiprocess_dir is None:
            ProcessCollector(registry=registry)
        self._max_accounts = max_accounts
        self._accounts: set[str] = set()
        self._duration_children: dict[tuple[str, str, str], Histogram] = {}
        self._active_children: dict[str, Gauge] = {}
        self._tenant_children: dict[tuple[str, str], Counter] = {}

    @staticmethod
    def method_label(method: str) -> str:
        return method if method in KNOWN_METHODS else "_OTHER"

    def active_for(self, method: str) -> Gauge:
        child = self._active_children.get(method)
        if child is None:
            child = self._active_children[method] = self.active.labels(method)
        return child

    def duration_for(self, method: str, route: str, status: int) -> Histogram:
        key = (method, route, str(status))
        child = self._duration_children.get(key)
        if child is None:
            child = self._duration_children[key] = self.duration.labels(*key)
        return child

    def count_tenant(self, account_id: str | None, status: int) -> None:
        if account_id is None:
            account = "none"
        elif account_id in self._accounts:
            account = account_id
        elif len(self._accounts) < self._max_accounts:
            self._accounts.add(account_id)
            account = account_id
        else:
            account = "other"
        key = (account, "error" if status >= 500 else "success")
        child = self._tenant_children.get(key)
        if child is None:
            child = self._tenant_children[key] = self.tenant_requests.labels(*key)
        child.inc()


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
