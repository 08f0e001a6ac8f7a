"""The request path: ONE pure-ASGI layer for tenant context, the SERVER span and RED metrics.

Per request, in this order:
- one pass over the headers picks up the tenant ids (validated; from trusted callers only, see
  tenant.py), `traceparent`/`tracestate`, and removes an incoming `baggage` header: clients must
  not be able to set span attributes;
- the tenant ids become baggage (`logfire.set_baggage`), which Logfire copies onto every span and
  log of the request;
- one SERVER span through Logfire's tracer, renamed after the route template once the router ran
  (`GET /items/{item_id}`), with the HTTP semantic-convention attributes. The response names the
  trace in `X-Trace-Id`, whether the trace is exported or not: every JSON line carries it;
- the request is over when its response is sent: its duration, metrics, log line and span end
  as the last chunk is handed to the server, so a client holding its response finds the request
  counted. What the ASGI call does afterwards (Starlette's background tasks) is background work: a
  `request.background` child span, and a failure there is an error line and span, never a 5xx;
- a log line for every 5xx or exception (and for every request with ACCESS_LOG on), and the RED
  metrics, labelled by route template. A client that goes away before its response is sent is
  499, no error. Probes and scrapes are left out of all of it;
- a request whose trace is not recorded (sampling.py) holds its log records; if it failed or was
  slow, its SERVER span is recorded once it is over, with the ids, times and records it had
  (late.py).
WebSocket connections get the same tenant context, a `WS /route` SERVER span for the whole
connection, the same sampling, and their own metrics (`websocket_server_*`).

FastAPI's own telemetry (`FastAPI(telemetry=...)`) is switched off in app.py: its request span
starts before any middleware can set the tenant baggage, ends a disconnect as an error, cannot
hold an unrecorded request's records or record it late, and logs each exception a second time.
Measured in-process, its request span alone costs about what this whole layer does.
"""

from __future__ import annotations

import logging
import time
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING

import logfire
from opentelemetry import context, propagate, trace
from opentelemetry.trace import SpanKind, format_trace_id

from .exchange import (
    CLIENT_CLOSED_REQUEST,
    CLIENT_GONE,
    WEBSOCKET,
    Exchange,
    route_template,
    span_name,
)
from .failures import TRACE_ID_HEADER, mark_reported
from .late import record_background, record_late
from .logs import HeldRecords, hold_records
from .metrics import (
    ACTIVE_REQUESTS,
    ACTIVE_WEBSOCKETS,
    HEADER_REJECTIONS,
    KNOWN_METHODS,
    OTHER_METHOD,
    REQUEST_DURATION,
    TENANT_REQUESTS,
    UNMATCHED_ROUTE,
    WEBSOCKET_CONNECTIONS,
    AccountLabels,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from opentelemetry.context import Context
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from .sampling import TracePolicy
    from .tenant import TenantHeaders

logger = logging.getLogger(__name__)
# A client sending bad tenant headers on every request gets one warning per header per minute.
REJECTION_LOG_INTERVAL_SECONDS = 60.0
# The ASGI call returns microseconds after the response when there is no background work: work
# after it that takes longer than this (or fails) gets its own span.
BACKGROUND_SPAN_MIN_SECONDS = 0.001
_TRACE_ID_HEADER = TRACE_ID_HEADER.lower().encode("ascii")


def with_trace_id_header(message: Message, trace_id: str) -> Message:
    """A response start or WebSocket accept that names the trace in `X-Trace-Id`."""
    headers = [*message.get("headers", ()), (_TRACE_ID_HEADER, trace_id.encode("ascii"))]
    return {**message, "headers": headers}


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
        if scope["type"] == "http" and scope["path"] not in self.untraced_paths:
            await self._request(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._connection(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _request(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"] if scope["method"] in KNOWN_METHODS else OTHER_METHOD
        with self._exchange(scope, method) as (request, span, held):
            active = ACTIVE_REQUESTS.labels(method)
            active.inc()

            def finish() -> None:
                self._finish(span, request, held)
                active.dec()

            async def send_and_finish(message: Message) -> None:
                if message["type"] == "http.response.start":
                    request.status = message["status"]
                    message = with_trace_id_header(message, request.trace_id)
                elif message["type"] == "http.response.body" and not message.get("more_body"):
                    # Before the last chunk goes out: a client holding its response finds it in
                    # the metrics, the line and the span, and a disconnect is no loss.
                    finish()
                    await send(message)
                    request.sent_ns = time.time_ns()
                    return
                await send(message)

            async def receive_and_watch() -> Message:
                message = await receive()
                if message["type"] == "http.disconnect" and not request.over:
                    request.client_gone = True
                return message

            try:
                await self.app(request.scope, receive_and_watch, send_and_finish)
            except BaseException as exc:
                if request.over:
                    request.background_error = exc
                else:
                    request.error = exc
                raise
            finally:
                if not request.over:  # it raised, or returned without a whole response
                    finish()
                self._after_response(span, request)

    async def _connection(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A WebSocket connection: one SERVER span from the handshake to the close."""
        with self._exchange(scope, WEBSOCKET) as (connection, span, held):
            ACTIVE_WEBSOCKETS.inc()

            async def send_and_watch(message: Message) -> None:
                if message["type"] == "websocket.accept":
                    connection.accepted = True
                    message = with_trace_id_header(message, connection.trace_id)
                await send(message)

            try:
                await self.app(connection.scope, receive, send_and_watch)
            except BaseException as exc:
                connection.error = exc
                raise
            finally:
                ACTIVE_WEBSOCKETS.dec()
                self._finish(span, connection, held)

    @contextmanager
    def _exchange(
        self, scope: Scope, method: str
    ) -> Iterator[tuple[Exchange, trace.Span, HeldRecords | None]]:
        """The tenant baggage, the SERVER span and held records of one request or connection.

        The caller ends the span (`_finish`); an unrecorded one that failed or was slow is then
        recorded late, on the way out.
        """
        tenant, carrier, scope = self._read_headers(scope)
        with logfire.set_baggage(**tenant):
            parent = self._parent(carrier)
            exchange = Exchange(scope, method, tenant, time.perf_counter(), time.time_ns())
            with (
                self._start_span(exchange, parent) as span,
                self._held_records(span) as held,
            ):
                exchange.trace_id = format_trace_id(span.get_span_context().trace_id)
                try:
                    yield exchange, span, held
                finally:
                    if held is not None:
                        record_late(self.tracer, span, parent, exchange, held)

    def _parent(self, carrier: dict[str, str]) -> Context:
        """The caller's trace context, with the request's baggage."""
        # The global propagator is W3C tracecontext only (logfire_config.py); Logfire wraps it so
        # that DISTRIBUTED_TRACING=false ignores incoming trace ids.
        current = context.get_current()  # the request's baggage
        return propagate.extract(carrier, current) if carrier else current

    def _start_span(
        self, exchange: Exchange, parent: Context
    ) -> AbstractContextManager[trace.Span]:
        """The SERVER span, current until the ASGI call returns; `_finish` ends it."""
        scope = exchange.scope
        verb = scope["method"] if not exchange.websocket else WEBSOCKET
        return self.tracer.start_as_current_span(
            span_name(exchange.method, route=None),
            context=parent,
            kind=SpanKind.SERVER,
            # Until the router has run, the span shows the raw path (the console prints it).
            attributes={"logfire.msg": f"{verb} {scope['path']}"},
            start_time=exchange.start_ns,
            record_exception=False,
            set_status_on_exception=False,
            end_on_exit=False,
        )

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

    def _finish(self, span: trace.Span, exchange: Exchange, held: HeldRecords | None) -> None:
        """The request is over (its response is sent): its span, line and metrics."""
        exchange.over = True
        exchange.duration = time.perf_counter() - exchange.start
        exchange.recorded = span.is_recording()  # until it ends, below
        if isinstance(exchange.error, CLIENT_GONE):
            exchange.client_gone = True
        if exchange.client_gone and not exchange.websocket:
            exchange.status = CLIENT_CLOSED_REQUEST
        exchange.route = route = route_template(exchange.scope)
        failed_as = exchange.failed_as()
        if exchange.recorded:  # else nothing would read them
            span.update_name(span_name(exchange.method, route))
            span.set_attributes(exchange.attributes())
            exchange.mark_failure(span)

        if failed_as is not None or self.access_log:
            self._log_line(exchange, route, failed_as)
        if exchange.error is not None:
            # Logged above, or a client that went away: either way not for the server to log.
            mark_reported(exchange.error, exchange.trace_id)

        exchange.kept_because = (
            "error"
            if failed_as is not None or (held is not None and held.error_logged)
            else "slow"
            if exchange.duration > self.policy.slow_seconds and not exchange.websocket
            else None
        )
        if exchange.websocket:
            outcome = "error" if failed_as else "closed" if exchange.accepted else "rejected"
            WEBSOCKET_CONNECTIONS.labels(route or UNMATCHED_ROUTE, outcome).inc()
        else:
            exported = self.policy.exports(
                recorded=exchange.recorded, kept_because=exchange.kept_because
            )
            labels = (exchange.method, route or UNMATCHED_ROUTE, str(exchange.status))
            REQUEST_DURATION.labels(*labels).observe(
                exchange.duration, exemplar={"trace_id": exchange.trace_id} if exported else None
            )
            outcome = (
                "error" if failed_as else "client_closed" if exchange.client_gone else "success"
            )
            account = self.accounts.label(exchange.tenant.get("account_id"))
            TENANT_REQUESTS.labels(account, outcome).inc()
        # After its line: a span ends once its records are written.
        exchange.end_ns = time.time_ns()
        span.end(end_time=exchange.end_ns)

    def _log_line(self, exchange: Exchange, route: str | None, failed_as: str | None) -> None:
        # `GET /items/{item_id} 404 in 1.2 ms account_id=acct-42`: readable on the console; the
        # JSON line and the Logfire log carry the same facts as fields.
        scope = exchange.scope
        verb = scope["method"] if not exchange.websocket else WEBSOCKET
        result: str | int = exchange.status
        if exchange.websocket:
            result = "failed" if failed_as else "closed" if exchange.accepted else "rejected"
        line = (verb, route or scope["path"], result, exchange.duration * 1000)
        ids = "".join(f" {name}={value}" for name, value in exchange.tenant.items())
        fields: dict[str, object] = {"http.route": route}
        if not exchange.websocket:
            fields["http.response.status_code"] = exchange.status
        if failed_as is not None:
            fields["error.type"] = failed_as
            error = exchange.error
            logger.error("%s %s %s in %.1f ms%s", *line, ids, exc_info=error, extra=fields)
        else:
            logger.info("%s %s %s in %.1f ms%s", *line, ids, extra=fields)

    def _after_response(self, span: trace.Span, request: Exchange) -> None:
        """Background work: its failure is logged; it gets a span when it failed or took time."""
        error = request.background_error
        end_ns = time.time_ns()
        took_ns = end_ns - request.background_start_ns
        if error is None and took_ns < BACKGROUND_SPAN_MIN_SECONDS * 1e9:
            return
        request.background_end_ns = end_ns
        if error is not None:
            route = request.route
            line = (request.scope["method"], route or request.scope["path"])
            ids = "".join(f" {name}={value}" for name, value in request.tenant.items())
            fields = {"http.route": route, "error.type": type(error).__qualname__}
            logger.error("%s %s background work failed%s", *line, ids, exc_info=error, extra=fields)
            mark_reported(error, request.trace_id)
            request.kept_because = "error"
        if request.recorded:
            record_background(self.tracer, trace.set_span_in_context(span), request)

    def _rejected(self, attribute: str) -> None:
        """Counts a dropped tenant header value, and says so at most once a minute per header."""
        HEADER_REJECTIONS.labels(attribute).inc()
        now = time.monotonic()
        last = self._last_rejection_log.get(attribute)
        if last is None or now - last >= REJECTION_LOG_INTERVAL_SECONDS:
            self._last_rejection_log[attribute] = now
            logger.warning(self._rejection_messages[attribute])
