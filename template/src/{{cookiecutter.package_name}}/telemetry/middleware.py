"""The request path: ONE pure-ASGI layer for tenant context, the SERVER span and RED metrics.

Per request, in this order:
- one pass over the headers picks up the tenant ids (validated; from trusted callers only, see
  tenant.py), `traceparent`/`tracestate`, and removes an incoming `baggage` header: clients must
  not be able to set span attributes;
- the tenant ids become baggage (`logfire.set_baggage`), which Logfire copies onto every span and
  log of the request;
- one SERVER span through Logfire's tracer, renamed after the route template once the router ran
  (`GET /items/{item_id}`), with the HTTP semantic-convention attributes;
- a log line for every 5xx or exception (and for every request with ACCESS_LOG on), and the RED
  metrics, labelled by route template. Probes and scrapes are left out of all of it.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import logfire
from opentelemetry import context, propagate, trace
from opentelemetry.trace import SpanKind, StatusCode

from .metrics import (
    ACTIVE_REQUESTS,
    HEADER_REJECTIONS,
    KNOWN_METHODS,
    OTHER_METHOD,
    REQUEST_DURATION,
    TENANT_REQUESTS,
    UNMATCHED_ROUTE,
    AccountLabels,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from .logfire_config import TracePolicy
    from .tenant import TenantHeaders

logger = logging.getLogger(__name__)
# A client sending bad tenant headers on every request gets one warning per header per minute.
REJECTION_LOG_INTERVAL_SECONDS = 60.0


def route_template(scope: Scope) -> str | None:
    """The matched route's template; FastAPI's own pages (/docs, /openapi.json) by their path."""
    route = scope.get("route")
    if route is not None:
        return str(route.path)
    if scope.get("endpoint") is not None and not scope.get("path_params"):
        return str(scope["path"])
    return None


def span_name(method: str, route: str | None) -> str:
    """`GET /items/{item_id}`; a method the conventions do not know is named `HTTP`."""
    name = "HTTP" if method == OTHER_METHOD else method
    return f"{name} {route}" if route else name


def error_type(status: int, error: BaseException | None) -> str | None:
    """The semantic conventions' `error.type`: the exception's class, else a 5xx status."""
    if error is not None:
        return type(error).__qualname__
    return str(status) if status >= 500 else None


class TelemetryMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        tenant_headers: TenantHeaders,
        policy: TracePolicy,
        metric_accounts: Iterable[str],
        access_log: bool = False,
        untraced_paths: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.tenant_headers = tenant_headers
        self.policy = policy
        self.accounts = AccountLabels(metric_accounts)
        self.access_log = access_log
        self.untraced_paths = frozenset(untraced_paths)
        self.tracer = trace.get_tracer(__name__)
        self._last_rejection_log: dict[str, float] = {}
        # Whole messages, not `%s` arguments: Logfire scrubs a log's arguments, and an argument
        # `session_id` looks like a credential to it.
        self._rejection_messages = {
            attribute: f"Dropped an invalid {attribute} header value "
            "(see tenant_header_rejections_total)"
            for attribute in tenant_headers.by_header.values()
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.untraced_paths:
            await self.app(scope, receive, send)
            return

        tenant, carrier, scope = self._read_headers(scope)
        method = scope["method"] if scope["method"] in KNOWN_METHODS else OTHER_METHOD
        status = 500
        error: BaseException | None = None

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with logfire.set_baggage(**tenant):
            # The global propagator is W3C tracecontext only (logfire_config.py); Logfire wraps it
            # so that DISTRIBUTED_TRACING=false ignores incoming trace ids.
            parent = propagate.extract(carrier, context.get_current()) if carrier else None
            with self.tracer.start_as_current_span(
                span_name(method, route=None),
                context=parent,
                kind=SpanKind.SERVER,
                # Until the router has run, the span shows the raw path (the console prints it).
                attributes={"logfire.msg": f"{scope['method']} {scope['path']}"},
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                active = ACTIVE_REQUESTS.labels(method)
                active.inc()
                start = time.perf_counter()
                try:
                    await self.app(scope, receive, send_with_status)
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    duration = time.perf_counter() - start
                    active.dec()
                    self._finish(span, scope, method, status, error, duration, tenant)

    def _read_headers(self, scope: Scope) -> tuple[dict[str, str], dict[str, str], Scope]:
        """The valid tenant ids, the trace context headers, and the scope without `baggage`.

        The tenant headers of a caller that may not set them are removed too (see tenant.py).
        """
        tenant: dict[str, str] = {}
        carrier: dict[str, str] = {}
        trusted = self.tenant_headers.trusts(scope.get("client"))
        removed: set[bytes] = set()
        for name, value in scope["headers"]:
            attribute = self.tenant_headers.by_header.get(name)
            if attribute is not None and not trusted:
                removed.add(name)
            elif attribute is not None:
                tenant_id = self.tenant_headers.accept(value)
                if tenant_id is None:
                    self._rejected(attribute)
                else:
                    tenant.setdefault(attribute, tenant_id)
            elif name in (b"traceparent", b"tracestate"):
                carrier[name.decode("ascii")] = value.decode("latin-1")
            elif name == b"baggage":
                removed.add(name)
        if removed:
            # Never seen by the app or any instrumentation: clients set no span attributes.
            headers = [header for header in scope["headers"] if header[0] not in removed]
            scope = {**scope, "headers": headers}
        return tenant, carrier, scope

    def _finish(
        self,
        span: trace.Span,
        scope: Scope,
        method: str,
        status: int,
        error: BaseException | None,
        duration: float,
        tenant: dict[str, str],
    ) -> None:
        route = route_template(scope)
        span.update_name(span_name(method, route))
        span.set_attributes(
            {
                "http.request.method": method,
                "http.response.status_code": status,
                "url.path": scope["path"],
                "url.scheme": scope["scheme"],
                "network.protocol.version": scope["http_version"],
            }
        )
        if route:
            span.set_attribute("http.route", route)
        if method == OTHER_METHOD:
            span.set_attribute("http.request.method_original", scope["method"])
        failed_as = error_type(status, error)
        failed = failed_as is not None
        if failed_as is not None:
            span.set_attribute("error.type", failed_as)
            span.set_status(StatusCode.ERROR)
            if error is not None:
                span.record_exception(error)

        if failed or self.access_log:
            # `GET /items/{item_id} 404 in 1.2 ms account_id=acct-42`: readable on the console;
            # the JSON line and the Logfire log carry the same facts as fields.
            line = (scope["method"], route or scope["path"], status, duration * 1000)
            ids = "".join(f" {name}={value}" for name, value in tenant.items())
            fields = {"http.route": route, "http.response.status_code": status}
            if failed_as is not None:
                fields["error.type"] = failed_as
                logger.error("%s %s %d in %.1f ms%s", *line, ids, exc_info=error, extra=fields)
            else:
                logger.info("%s %s %d in %.1f ms%s", *line, ids, extra=fields)

        trace_id = span.get_span_context().trace_id
        keep = self.policy.keeps(trace_id, failed=failed, duration=duration)
        REQUEST_DURATION.labels(method, route or UNMATCHED_ROUTE, str(status)).observe(
            duration, exemplar={"trace_id": format(trace_id, "032x")} if keep else None
        )
        outcome = "error" if failed else "success"
        TENANT_REQUESTS.labels(self.accounts.label(tenant.get("account_id")), outcome).inc()

    def _rejected(self, attribute: str) -> None:
        """Counts a dropped tenant header value, and says so at most once a minute per header."""
        HEADER_REJECTIONS.labels(attribute).inc()
        now = time.monotonic()
        last = self._last_rejection_log.get(attribute)
        if last is None or now - last >= REJECTION_LOG_INTERVAL_SECONDS:
            self._last_rejection_log[attribute] = now
            logger.warning(self._rejection_messages[attribute])
