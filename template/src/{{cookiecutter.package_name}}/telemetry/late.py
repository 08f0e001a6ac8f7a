"""Recording a request after it is over: what sampling.py decided not to record at its start.

A request that was not recorded and then failed or was slow gets its SERVER span now, through
Logfire's tracer, as it would have had it: the trace and span ids its JSON lines, exemplar and
callees already carry (`recorded_as`, through `LateSpanIds`), its real start and end, its
exception, and its held log records at the times they were written (`at_time`, through
`now_ns`). Logfire is configured with both (logfire_config.py).

Work that runs after a response (Starlette's background tasks) gets a `request.background` child
span here too, of the SERVER span recorded either way.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

import logfire
from opentelemetry import trace
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import SpanKind, StatusCode

from .exchange import span_name
from .sampling import KEPT_BECAUSE

if TYPE_CHECKING:
    from opentelemetry.context import Context

    from .exchange import Exchange
    from .logs import HeldRecords

BACKGROUND_SPAN = "request.background"

_next_span_ids: ContextVar[tuple[int, int] | None] = ContextVar("next_span_ids", default=None)
_pinned_time_ns: ContextVar[int | None] = ContextVar("pinned_time_ns", default=None)


def record_late(
    tracer: trace.Tracer,
    unrecorded: trace.Span,
    parent: Context,
    exchange: Exchange,
    held: HeldRecords,
) -> None:
    """The SERVER span of a failed or slow request that was not recorded, after the fact."""
    if exchange.kept_because is None:
        return
    attributes = {**exchange.attributes(), KEPT_BECAUSE: exchange.kept_because}
    with recorded_as(unrecorded.get_span_context()):
        span = tracer.start_span(
            span_name(exchange.method, exchange.route),
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
            start_time=exchange.start_ns,
        )
    exchange.mark_failure(span)
    with trace.use_span(span):
        held.send_to_logfire()
    span.end(end_time=exchange.end_ns)
    if exchange.background_end_ns:
        record_background(tracer, trace.set_span_in_context(span, parent), exchange)


def record_background(tracer: trace.Tracer, server: Context, exchange: Exchange) -> None:
    """The `request.background` child span, from the response to the end of the ASGI call."""
    span = tracer.start_span(
        BACKGROUND_SPAN,
        context=server,
        attributes={"http.route": exchange.route} if exchange.route else None,
        start_time=exchange.background_start_ns,
    )
    error = exchange.background_error
    if error is not None:
        span.set_attribute("error.type", type(error).__qualname__)
        span.set_status(StatusCode.ERROR)
        span.record_exception(error)
    span.end(end_time=exchange.background_end_ns)


class LateSpanIds(IdGenerator):
    """Logfire's own id generator, except for a span recorded after the fact (`recorded_as`)."""

    def __init__(self) -> None:
        self._random = logfire.AdvancedOptions().id_generator

    def generate_span_id(self) -> int:
        ids = _next_span_ids.get()
        if ids is None:
            return self._random.generate_span_id()
        _next_span_ids.set(None)  # for this one span only
        return ids[1]

    def generate_trace_id(self) -> int:
        ids = _next_span_ids.get()
        return self._random.generate_trace_id() if ids is None else ids[0]


def now_ns() -> int:
    """Logfire's clock: the time, or the one `at_time` pins for a record emitted late."""
    pinned = _pinned_time_ns.get()
    return time.time_ns() if pinned is None else pinned


@contextmanager
def recorded_as(span_context: trace.SpanContext) -> Iterator[None]:
    """The next span started here takes these trace and span ids (needs `LateSpanIds`)."""
    token = _next_span_ids.set((span_context.trace_id, span_context.span_id))
    try:
        yield
    finally:
        _next_span_ids.reset(token)


@contextmanager
def at_time(time_ns: int) -> Iterator[None]:
    """Spans and logs started here are stamped `time_ns` (needs `now_ns` as Logfire's clock)."""
    token = _pinned_time_ns.set(time_ns)
    try:
        yield
    finally:
        _pinned_time_ns.reset(token)
