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
  metrics, labelled by route template. Probes and scrapes are left out of all of it;
- a request whose trace is not recorded (sampling.py) holds its log records; if it failed or was
  slow, its SERVER span is recorded once it is over, with the ids, times and records it had.
"""

from __future__ import annotations

import logging
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

import logfire
from opentelemetry import context, propagate, trace
from opentelemetry.trace import SpanKind, StatusCode

from .logs import HeldRecords, hold_records
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
from .sampling import KEPT_BECAUSE, recorded_as

if TYPE_CHECKING:
    from collections.abc import Iterable

    from opentelemetry.context import Context
    from opentelemetry.util.types import AttributeValue
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from .sampling import TracePolicy
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


@dataclass(slots=True)
class _Request:
    """What one request did, as the middleware saw it."""

    scope: Scope
    method: str
    status: int
    error: BaseException | None
    duration: float
    tenant: dict[str, str]
    # Why its trace is exported whatever the sampling: "error", "slow" or None.
    kept_because: str | None = None

    def attributes(self, route: str | None) -> dict[str, AttributeValue]:
        """The SERVER span's HTTP semantic-convention attributes."""
        scope = self.scope
        attributes: dict[str, AttributeValue] = {
            "http.request.method": self.method,
            "http.response.status_code": self.status,
            "url.path": scope["path"],
            "url.scheme": scope["scheme"],
            "network.protocol.version": scope["http_version"],
        }
        if route:
            attributes["http.route"] = route
        if self.method == OTHER_METHOD:
            attributes["http.request.method_original"] = scope["method"]
        failed_as = error_type(self.status, self.error)
        if failed_as is not None:
            attributes["error.type"] = failed_as
        return attributes


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
            current = context.get_current()  # the request's baggage
            parent = propagate.extract(carrier, current) if carrier else current
            start_ns = time.time_ns()
            with (
                self.tracer.start_as_current_span(
                    span_name(method, route=None),
                    context=parent,
                    kind=SpanKind.SERVER,
                    # Until the router has run, the span shows the raw path (the console prints it).
                    attributes={"logfire.msg": f"{scope['method']} {scope['path']}"},
                    start_time=start_ns,
                    record_exception=False,
                    set_status_on_exception=False,
                ) as span,
                self._held_records(span) as held,
            ):
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
                    request = _Request(scope, method, status, error, duration, tenant)
                    self._finish(span, request, held)
                    if held is not None:
                        self._record_late(span, parent, start_ns, request, held)

    def _held_records(self, span: trace.Span) -> AbstractContextManager[HeldRecords | None]:
        """An unrecorded request holds its records, unless every trace goes to a collector."""
        if span.is_recording() or not self.policy.holds_unrecorded_requests:
            return nullcontext()
        return hold_records()

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

    def _finish(self, span: trace.Span, request: _Request, held: HeldRecords | None) -> None:
        route = route_template(request.scope)
        failed_as = error_type(request.status, request.error)
        if span.is_recording():  # else nothing would read them
            span.update_name(span_name(request.method, route))
            span.set_attributes(request.attributes(route))
            if failed_as is not None:
                span.set_status(StatusCode.ERROR)
                if request.error is not None:
                    span.record_exception(request.error)

        if failed_as is not None or self.access_log:
            # `GET /items/{item_id} 404 in 1.2 ms account_id=acct-42`: readable on the console;
            # the JSON line and the Logfire log carry the same facts as fields.
            scope = request.scope
            status, milliseconds = request.status, request.duration * 1000
            line = (scope["method"], route or scope["path"], status, milliseconds)
            ids = "".join(f" {name}={value}" for name, value in request.tenant.items())
            fields = {"http.route": route, "http.response.status_code": status}
            if failed_as is not None:
                fields["error.type"] = failed_as
                error = request.error
                logger.error("%s %s %d in %.1f ms%s", *line, ids, exc_info=error, extra=fields)
            else:
                logger.info("%s %s %d in %.1f ms%s", *line, ids, extra=fields)

        request.kept_because = (
            "error"
            if failed_as is not None or (held is not None and held.error_logged)
            else "slow"
            if request.duration > self.policy.slow_seconds
            else None
        )
        exported = self.policy.exports(
            recorded=span.is_recording(), kept_because=request.kept_because
        )
        trace_id = format(span.get_span_context().trace_id, "032x")
        labels = (request.method, route or UNMATCHED_ROUTE, str(request.status))
        REQUEST_DURATION.labels(*labels).observe(
            request.duration, exemplar={"trace_id": trace_id} if exported else None
        )
        outcome = "error" if failed_as is not None else "success"
        TENANT_REQUESTS.labels(self.accounts.label(request.tenant.get("account_id")), outcome).inc()

    def _record_late(
        self,
        unrecorded: trace.Span,
        parent: Context,
        start_ns: int,
        request: _Request,
        held: HeldRecords,
    ) -> None:
        """The SERVER span of a failed or slow request that was not recorded, after the fact."""
        if request.kept_because is None:
            return
        route = route_template(request.scope)
        attributes = {**request.attributes(route), KEPT_BECAUSE: request.kept_because}
        with recorded_as(unrecorded.get_span_context()):
            span = self.tracer.start_span(
                span_name(request.method, route),
                context=parent,
                kind=SpanKind.SERVER,
                attributes=attributes,
                start_time=start_ns,
            )
        if error_type(request.status, request.error) is not None:
            span.set_status(StatusCode.ERROR)
        if request.error is not None:
            span.record_exception(request.error)
        with trace.use_span(span):
            held.send_to_logfire()
        # Now, as a recorded request's span ends once its records (the 5xx line too) are written.
        span.end()

    def _rejected(self, attribute: str) -> None:
        """Counts a dropped tenant header value, and says so at most once a minute per header."""
        HEADER_REJECTIONS.labels(attribute).inc()
        now = time.monotonic()
        last = self._last_rejection_log.get(attribute)
        if last is None or now - last >= REJECTION_LOG_INTERVAL_SECONDS:
            self._last_rejection_log[attribute] = now
            logger.warning(self._rejection_messages[attribute])
