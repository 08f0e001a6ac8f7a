"""Everything the service emits about itself: traces, logs and metrics (README.md, "Telemetry").

Read in this order:
- `middleware.py`: the request path, one ASGI layer (tenant ids, SERVER span, metrics, log line);
  `exchange.py` holds what one request did and how it is named;
- `tenant.py`: which headers carry the tenant ids, which values and callers are accepted;
- `sampling.py`: which traces are kept; `late.py`: recording a failed or slow request after the
  fact when they were not;
- `logs.py`: std logging{% if cookiecutter.with_loguru %} and loguru{% endif %} into Logfire, and JSON lines on stdout;
- `failures.py`: one error line per exception, under the request's trace;
- `metrics.py`: the Prometheus metrics and `/metrics`;
- `logfire_config.py`: `logfire.configure()`: service, environment, export, scrubbing;
{%- if cookiecutter.with_httpx or cookiecutter.with_sqlalchemy or cookiecutter.with_asyncpg or cookiecutter.with_redis or cookiecutter.with_pydantic_ai or cookiecutter.with_system_metrics %}
- `instrumentations.py`: the libraries instrumented{% if cookiecutter.with_httpx %}; `outgoing.py`: tenant ids on outgoing calls{% endif %};
{%- endif %}
- `openapi.py`: the tenant headers in the OpenAPI schema.
"""

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
