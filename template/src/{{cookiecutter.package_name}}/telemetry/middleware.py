"""The request hot path: ONE pure-ASGI layer for tenant context, the SERVER span and RED metrics.

Everything per request happens here, in a single pass, so its cost is easy to see and to tune:
- one loop over the request headers picks up tenant ids, `traceparent`/`tracestate` and `baggage`;
- an incoming `baggage` header is removed: clients must not be able to set span attributes;
- tenant ids go into a context variable for the JSON log lines and, when the request is traced,
  into OTel baggage, which Logfire copies onto every span and log of the request;
- one SERVER span named after the route template, read from `scope["route"]` once the router ran:
  built finished by spans.py once the request is over (the direct path), or started and ended
  through Logfire's tracer;
- an unsampled request skips all attribute, span and exemplar work.
"""

from __future__ import annotations

from time import perf_counter, time_ns
from typing import TYPE_CHECKING

from opentelemetry import context, propagate, trace
from opentelemetry.trace import INVALID_SPAN_CONTEXT, SpanKind, StatusCode

from .metrics import KNOWN_METHODS, OTHER_METHOD, UNMATCHED_ROUTE, HttpMetrics
from .sampling import decide, mark_sampled, request_span
from .spans import error_type, server_span_message, server_span_name
from .tenant import TenantHeaders, reset_request_tenant, set_request_tenant, with_tenant_baggage

if TYPE_CHECKING:
    from collections.abc import Iterable

    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from .spans import RequestSpans


class TelemetryMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: HttpMetrics,
        tenant_headers: TenantHeaders,
        untraced_paths: Iterable[str] = (),
        sample_rate: float = 1.0,
        request_spans: RequestSpans | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.tenant_headers = tenant_headers
        # Probes and scrapes are neither traced nor counted: they would drown the real traffic.
        self.untraced_paths = frozenset(untraced_paths)
        self.tracer = trace.get_tracer(__name__)
        # Head sampling happens here, not in start_span: see sampling.py for why.
        self.sample_rate = sample_rate
        # None: the SERVER span goes through Logfire's tracer (see spans.py for when).
        self.request_spans = request_spans

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.untraced_paths:
            await self.app(scope, receive, send)
            return

        tenant: dict[str, str] = {}
        carrier: dict[str, str] | None = None
        has_baggage = False
        by_header = self.tenant_headers.by_header
        for name, value in scope["headers"]:
            attribute = by_header.get(name)
            if attribute is not None:
                tenant_id = self.tenant_headers.accept(value)
                if tenant_id is not None:
                    tenant.setdefault(attribute, tenant_id)
                else:
                    self.metrics.header_rejections.labels(attribute).inc()
            elif name == b"traceparent" or name == b"tracestate":
                if carrier is None:
                    carrier = {}
                carrier[name.decode("ascii")] = value.decode("latin-1")
            elif name == b"baggage":
                has_baggage = True
        if has_baggage:
            scope = dict(scope)
            scope["headers"] = [h for h in scope["headers"] if h[0] != b"baggage"]

        # The global propagator is W3C tracecontext only (logfire_config.py); Logfire wraps it so
        # that DISTRIBUTED_TRACING=false ignores incoming trace ids.
        ctx = propagate.extract(carrier) if carrier is not None else context.get_current()
        method: str = scope["method"]
        method_original: str | None = None
        if method not in KNOWN_METHODS:
            # Metrics and span names see `_OTHER`; the span keeps what the client sent as well.
            method, method_original = OTHER_METHOD, method
        # An empty context (the usual case: no incoming trace) has no span to look up.
        parent = trace.get_current_span(ctx).get_span_context() if ctx else INVALID_SPAN_CONTEXT
        span: trace.Span
        sampled = decide(self.sample_rate, parent)
        # Set: this request's spans take the direct path (spans.py).
        request_spans = self.request_spans if sampled else None
        # Set: a real span, started and ended through Logfire's tracer.
        through_logfire = sampled and request_spans is None
        if sampled and tenant:
            # Logfire copies baggage onto every span and log of a recorded trace; an unsampled
            # one records nothing, so it skips building the baggage.
            ctx = with_tenant_baggage(tenant, ctx)
        if through_logfire:
            # The route is only known once the router ran: the span is renamed then. Until
            # that, the message shows the raw path (Logfire's console prints spans at start).
            span = self.tracer.start_span(
                method,
                context=mark_sampled(ctx),
                kind=SpanKind.SERVER,
                attributes={
                    "logfire.msg": server_span_message(method, method_original, scope["path"])
                },
            )
        else:
            span = request_span(parent, sampled=sampled)
        token = context.attach(trace.set_span_in_context(span, ctx))
        tenant_token = set_request_tenant(tenant) if tenant else None
        self.metrics.request_started(method)
        status = 500
        error: BaseException | None = None

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        start_ns = time_ns() if request_spans is not None else 0
        start = perf_counter()
        try:
            await self.app(scope, receive, send_with_status)
        except BaseException as exc:
            if through_logfire:
                span.record_exception(exc)
            error = exc
            raise
        finally:
            duration = perf_counter() - start
            route: str | None = getattr(scope.get("route"), "path", None)
            # Sampled requests only: the duration histogram links to their trace.
            exemplar_trace_id: str | None = None
            if request_spans is not None:
                span_context = span.get_span_context()
                request_spans.end_server_span(
                    span_context,
                    parent,
                    method=method,
                    method_original=method_original,
                    route=route,
                    status=status,
                    path=scope["path"],
                    scheme=scope["scheme"],
                    http_version=scope["http_version"],
                    tenant=tenant,
                    start=start_ns,
                    end=start_ns + int(duration * 1e9),
                    error=error,
                )
                exemplar_trace_id = format(span_context.trace_id, "032x")
            elif through_logfire:
                span.update_name(server_span_name(method, route))
                span.set_attributes(
                    {
                        "logfire.msg": server_span_message(method, method_original, scope["path"]),
                        "http.request.method": method,
                        "http.response.status_code": status,
                        "url.path": scope["path"],
                        "url.scheme": scope["scheme"],
                        "network.protocol.version": scope["http_version"],
                    }
                )
                if route:
                    span.set_attribute("http.route", route)
                if method_original is not None:
                    span.set_attribute("http.request.method_original", method_original)
                failed_as = error_type(status, error)
                if failed_as is not None:
                    span.set_attribute("error.type", failed_as)
                    span.set_status(StatusCode.ERROR)
                exemplar_trace_id = format(span.get_span_context().trace_id, "032x")
            self.metrics.request_finished(
                method,
                route or UNMATCHED_ROUTE,
                status,
                duration,
                tenant.get("account_id"),
                exemplar_trace_id,
            )
            if through_logfire:
                span.end()
            context.detach(token)
            if tenant_token is not None:
                reset_request_tenant(tenant_token)
