"""Everything the service emits about itself: traces, logs and metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

{% if cookiecutter.with_httpx or cookiecutter.with_sqlalchemy or cookiecutter.with_asyncpg or cookiecutter.with_redis or cookiecutter.with_pydantic_ai or cookiecutter.with_system_metrics -%}
from .instrumentations import instrument_libraries
{% endif -%}
from .logfire_config import configure_logfire
from .logs import configure_logging
from .spans import RequestSpans, request_spans_for

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.trace import SpanProcessor

    from ..settings import Settings


def configure_telemetry(
    settings: Settings,
    *,
    additional_span_processors: Sequence[SpanProcessor] = (),
    metric_readers: Sequence[MetricReader] = (),
) -> RequestSpans | None:
    """Configure Logfire, libraries and logging; the direct path for request spans, if on."""
    configure_logfire(
        settings,
        additional_span_processors=additional_span_processors,
        metric_readers=metric_readers,
    )
    request_spans = request_spans_for(
        settings, additional_span_processors, server_scope=f"{__package__}.middleware"
    )
{%- if cookiecutter.with_httpx or cookiecutter.with_sqlalchemy or cookiecutter.with_asyncpg or cookiecutter.with_redis or cookiecutter.with_pydantic_ai or cookiecutter.with_system_metrics %}
    instrument_libraries()
{%- endif %}
    configure_logging(settings, request_spans)
    return request_spans
