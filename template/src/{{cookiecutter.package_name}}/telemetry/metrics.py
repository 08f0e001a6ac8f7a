"""Prometheus RED metrics, in prometheus_client's default registry.

A metric you define anywhere in the service (`Counter("orders_created", ...)` at module level)
lands in the same registry and shows on /metrics next to these. Under gunicorn
(PROMETHEUS_MULTIPROC_DIR set, see gunicorn.conf.py) every worker writes its values to files there
and each scrape merges all of them; prometheus_client drops exemplars in that mode.

Names and labels follow OpenTelemetry's HTTP semantic conventions as Prometheus spells them
(`http.server.request.duration` -> `http_server_request_duration_seconds`). The route label is the
route TEMPLATE (`/items/{item_id}`), never the raw path: one series per route, not per URL.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterable

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.requests import Request
from starlette.responses import Response

from .tenant import TENANT_ATTRIBUTES

# `_created` series double the series count and nothing here reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Same buckets as OTel's http.server.request.duration advice, plus 7.5 and 10 s.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
# The label for any other method (the semantic conventions' value): clients choose methods.
OTHER_METHOD = "_OTHER"
UNMATCHED_ROUTE = "unmatched"

REQUEST_DURATION = Histogram(
    "http_server_request_duration_seconds",
    "Duration of HTTP server requests.",
    ["http_request_method", "http_route", "http_response_status_code"],
    buckets=DURATION_BUCKETS,
)
ACTIVE_REQUESTS = Gauge(
    "http_server_active_requests",
    "Number of HTTP server requests in progress.",
    ["http_request_method"],
    # Across gunicorn workers: the sum over the live ones (gunicorn.conf.py reaps dead workers).
    multiprocess_mode="livesum",
)
# Label values no account id can take: ids are letters, digits and `._:-` (tenant.py).
NO_ACCOUNT = "~none"
OTHER_ACCOUNT = "~other"
TENANT_REQUESTS = Counter(
    "tenant_requests",
    "Requests per tenant account: the accounts in TENANT_METRICS_ACCOUNTS by id, any other as "
    f"`{OTHER_ACCOUNT}`, none as `{NO_ACCOUNT}`.",
    ["account_id", "outcome"],
)
# WebSocket connections last minutes, not milliseconds: counted apart from the request duration.
WEBSOCKET_CONNECTIONS = Counter(
    "websocket_server_connections",
    "WebSocket connections by route and how they ended: closed, rejected (never accepted), error.",
    ["http_route", "outcome"],
)
ACTIVE_WEBSOCKETS = Gauge(
    "websocket_server_active_connections",
    "Number of open WebSocket connections.",
    multiprocess_mode="livesum",
)
HEADER_REJECTIONS = Counter(
    "tenant_header_rejections",
    "Tenant header values dropped because of invalid characters or length.",
    ["header"],
)
# Every header's series exists from the start at 0, so that rate() sees the first rejection.
for _attribute in TENANT_ATTRIBUTES:
    HEADER_REJECTIONS.labels(_attribute)


class AccountLabels:
    """`account_id` label values: the configured accounts by their id, any other as `~other`.

    Account ids come from clients: each new one would add series forever. A cap on "the first N
    ids seen" would depend on arrival order, so pods would disagree and restarts reshuffle; a list
    configured alike on every pod (TENANT_METRICS_ACCOUNTS) labels each account the same way
    everywhere and always. Empty by default: then no account id is on /metrics at all.
    """

    def __init__(self, accounts: Iterable[str]) -> None:
        self.accounts = frozenset(accounts)

    def label(self, account_id: str | None) -> str:
        if account_id is None:
            return NO_ACCOUNT
        return account_id if account_id in self.accounts else OTHER_ACCOUNT


def multiprocess_dir() -> str | None:
    """PROMETHEUS_MULTIPROC_DIR from the process environment (not `.env`).

    prometheus_client reads the variable itself when it is first imported, so only the real
    environment can switch the mode.
    """
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def registry_to_serve() -> CollectorRegistry:
    """The default registry, or in multiprocess mode one that merges every worker's files."""
    path = multiprocess_dir()
    if path is None:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return registry


async def metrics_endpoint(request: Request) -> Response:
    """/metrics: OpenMetrics (with exemplars) when the scraper asks for it, gzip if accepted."""
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    body = encoder(registry_to_serve())
    headers = {"Content-Type": content_type, "Vary": "Accept-Encoding"}
    if gzip_accepted(request.headers.get("accept-encoding", "")):
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    return Response(body, headers=headers)
