"""Prometheus RED metrics, in a registry owned by the app (not prometheus-client's global one)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.exposition import choose_encoder
from starlette.requests import Request
from starlette.responses import Response

# Same buckets as OTel's http.server.request.duration advice, plus 7.5 and 10 s.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
UNMATCHED_ROUTE = "unmatched"


class HttpMetrics:
    """The service's Prometheus metrics.

    Label children are cached per label tuple: `labels()` on every request would take a lock and
    build a tuple each time, and the set of routes, methods and statuses is small.
    """

    def __init__(self, registry: CollectorRegistry, *, max_accounts: int) -> None:
        self.registry = registry
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


def metrics_endpoint(registry: CollectorRegistry) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint serving `registry`; OpenMetrics (with exemplars) when the scraper asks for it."""

    async def metrics(request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(registry), headers={"Content-Type": content_type})

    return metrics
