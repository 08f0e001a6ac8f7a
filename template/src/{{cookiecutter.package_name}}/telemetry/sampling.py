"""Head sampling decided by the middleware, before any span object exists.

Logfire's sampler, `ParentBased(TraceIdRatioBased(rate))`, decides inside `start_span`: after the
tracer has copied the attributes, generated ids, counted the span in the SDK's own metrics and
wrapped it for Logfire. That is most of a span's cost, paid for 9 requests out of 10 in production
only to be thrown away. So the middleware decides first (`decide`): an unsampled request gets a
bare `NonRecordingSpan` with fresh ids (its log lines still carry a trace_id and span_id). A sampled
one gets the same with the sampled flag when spans.py builds its spans (the direct path), or a
real span through Logfire, started in a context marked by `mark_sampled` so that `HeadSampler`
keeps it. Every other span (children, work outside requests) is sampled exactly as Logfire's own
sampler would.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from opentelemetry import context, trace
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import DEFAULT_TRACE_STATE, NonRecordingSpan, SpanContext, TraceFlags

if TYPE_CHECKING:
    from collections.abc import Sequence

    from opentelemetry.trace import Link, SpanKind, TraceState
    from opentelemetry.util.types import Attributes

_SAMPLED_BY_MIDDLEWARE = context.create_key("sampled-by-middleware")
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_LOCAL = False  # a span context's `is_remote` for the ids made here


class HeadSampler(Sampler):
    """`ParentBased(TraceIdRatioBased(rate))`, but keeps the requests the middleware chose."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._delegate = ParentBased(TraceIdRatioBased(rate))

    def should_sample(
        self,
        parent_context: context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if (
            parent_context is not None
            and parent_context.get(_SAMPLED_BY_MIDDLEWARE)
            and not trace.get_current_span(parent_context).get_span_context().is_valid
        ):
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, trace_state)
        return self._delegate.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"HeadSampler(rate={self.rate})"


def decide(rate: float, parent: SpanContext) -> bool:
    """Whether a request is traced: the caller's decision if it sent a trace, else `rate`."""
    if parent.is_valid:
        return parent.trace_flags.sampled
    return rate >= 1.0 or random.random() < rate  # noqa: S311 - sampling, not security


def mark_sampled(ctx: context.Context) -> context.Context:
    return context.set_value(_SAMPLED_BY_MIDDLEWARE, True, ctx)  # noqa: FBT003


def request_span(parent: SpanContext, *, sampled: bool) -> NonRecordingSpan:
    """The request's span identity without an SDK span: fresh ids, the parent's trace if any.

    Unsampled, it only gives the log lines their trace_id and span_id. Sampled (the direct path,
    spans.py), it is what spans started inside the request take as their parent.
    """
    if parent.is_valid:
        trace_id, trace_state = parent.trace_id, parent.trace_state
    else:
        trace_id, trace_state = random.getrandbits(128) or 1, DEFAULT_TRACE_STATE
    span_id = random.getrandbits(64) or 1
    flags = _SAMPLED if sampled else _NOT_SAMPLED
    # Positional: keyword arguments made this constructor a third slower, on every request.
    return NonRecordingSpan(SpanContext(trace_id, span_id, _LOCAL, flags, trace_state))
