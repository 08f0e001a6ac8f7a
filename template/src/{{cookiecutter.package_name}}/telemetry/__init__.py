"""Everything the service emits about itself: traces, logs and metrics (read README.md first)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

{% if cookiecutter.with_httpx or cookiecutter.with_sqlalchemy or cookiecutter.with_asyncpg or cookiecutter.with_redis or cookiecutter.with_pydantic_ai or cookiecutter.with_system_metrics -%}
from .instrumentations import instrument_libraries
{% endif -%}
from .logfire_config import configure_logfire
from .logs import configure_logging
from .sampling import TracePolicy
from .tenant import current_tenant

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.trace import SpanProcessor

    from ..settings import Settings

__all__ = ["TracePolicy", "configure_telemetry", "current_tenant"]


def configure_telemetry(
    settings: Settings,
    *,
    additional_span_processors: Sequence[SpanProcessor] = (),
    metric_readers: Sequence[MetricReader] = (),
) -> TracePolicy:
    """Configure Logfire, the instrumented libraries and logging; returns the trace policy."""
    policy = TracePolicy(
        mode=settings.trace_sampling,
        rate=settings.trace_sample_rate,
        slow_seconds=settings.slow_request_seconds,
    )
    configure_logfire(
        settings,
        policy,
        additional_span_processors=additional_span_processors,
        metric_readers=metric_readers,
    )
{%- if cookiecutter.with_httpx or cookiecutter.with_sqlalchemy or cookiecutter.with_asyncpg or cookiecutter.with_redis or cookiecutter.with_pydantic_ai or cookiecutter.with_system_metrics %}
    instrument_libraries({% if cookiecutter.with_httpx %}settings{% endif %})
{%- endif %}
    configure_logging(settings.effective_log_level, json_lines=settings.run_mode == "production")
    return policy
