"""Which traces leave the process: the same ordinary ones in every service, and every failure.

TRACE_SAMPLING=service (the default) decides in each service, by one rule for the whole fleet:
- An ordinary request is recorded when its trace id falls in the LOGFIRE_TRACE_SAMPLE_RATE share
  (OpenTelemetry's TraceIdRatioBased test). Every service applies the same test to the same trace
  id, so the traces kept are complete from edge to leaf. A caller's `sampled` flag is not
  followed: a caller that recorded everything does not make every service behind it export it.
- A request that is not recorded costs next to nothing: its spans are OpenTelemetry's no-op spans
  and its std-logging records wait in a small buffer (logs.py) instead of going through Logfire.
- When such a request answers 5xx, raises, logs an error or is slower than SLOW_REQUEST_SECONDS,
  its SERVER span is recorded after the fact (late.py): with the ids it had all along (so its
  JSON lines, its exemplar and its callers point at it), its real start and end, its exception
  and its held records. What is lost: the child spans of that request.
- Work outside requests (startup, background loops) is recorded and goes through Logfire's tail
  sampling: a trace with an error or a slow one is kept, `rate` of the others; a log record
  outside any span is always kept.

TRACE_SAMPLING=collector records and exports every trace; an OpenTelemetry Collector running the
`tail_sampling` processor then keeps whole traces across services (deploy/collector/).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import logfire
from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import SpanKind

if TYPE_CHECKING:
    from logfire.sampling import TailSamplingSpanInfo
    from opentelemetry.context import Context
    from opentelemetry.trace import Link
    from opentelemetry.trace.span import TraceState
    from opentelemetry.util.types import Attributes

    from ..settings import SamplingMode

# On a span recorded after the fact: why its trace is kept (`error` or `slow`).
KEPT_BECAUSE = "sampling.kept_because"


class SameDecisionInEveryService(Sampler):
    """The trace id against `rate`, whatever the caller decided; children follow their parent."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        by_trace_id = TraceIdRatioBased(rate)
        self._decide = ParentBased(
            root=by_trace_id,
            remote_parent_sampled=by_trace_id,
            remote_parent_not_sampled=by_trace_id,
        )

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        outside_requests = (
            kind is not SpanKind.SERVER
            and not trace.get_current_span(parent_context).get_span_context().is_valid
        )
        if outside_requests or (attributes is not None and KEPT_BECAUSE in attributes):
            # Tail sampling decides on work outside requests; a late span is kept by definition.
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)
        return self._decide.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"SameDecisionInEveryService(rate={self.rate})"


@dataclass(frozen=True, slots=True)
class TracePolicy:
    mode: SamplingMode
    rate: float
    slow_seconds: float

    @property
    def holds_unrecorded_requests(self) -> bool:
        """Whether a request that is not recorded may still be exported once it is over."""
        return self.mode == "service"

    def exports(self, *, recorded: bool, kept_because: str | None) -> bool:
        """Whether a request's trace will exist where traces are kept: an exemplar may name it."""
        if self.mode == "collector":
            # Every trace is recorded; the collector's policies keep the failed and slow ones.
            return kept_because is not None
        return recorded or kept_because is not None

    def sampling_options(self) -> logfire.SamplingOptions:
        if self.mode == "collector":
            return logfire.SamplingOptions(head=ALWAYS_ON)
        # At rate 1 every trace is kept: a tail buffer would only cost.
        tail = self._whole_trace_rate if self.rate < 1.0 else None
        return logfire.SamplingOptions(head=SameDecisionInEveryService(self.rate), tail=tail)

    def _whole_trace_rate(self, span: TailSamplingSpanInfo) -> float:
        """Logfire's tail sampling, for the traces it buffers: those that start in this process."""
        attributes = span.span.attributes or {}
        if KEPT_BECAUSE in attributes or span.level >= "error" or span.duration > self.slow_seconds:
            return 1.0
        if span.span.parent is None and attributes.get("logfire.span_type") == "log":
            return 1.0  # a record outside any span: startup, shutdown
        # The same test as the head sampler's: a request recorded at the edge passes at once.
        return self.rate
