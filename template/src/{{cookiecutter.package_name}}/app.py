"""Application factory: `create_app()` (also usable as `uvicorn --factory <pkg>.app:create_app`)."""

from __future__ import annotations

import gc
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import logfire
from fastapi import FastAPI
from prometheus_client import CollectorRegistry{% if cookiecutter.metrics_separate_port %}, start_http_server{% endif %}

from . import __version__
from .api import {% if cookiecutter.with_pydantic_ai %}agent, {% endif %}health, items{% if cookiecutter.with_sqlalchemy %}, notes{% endif %}
{%- if cookiecutter.with_sqlalchemy %}
from .db import Database
{%- endif %}
from .settings import Settings
from .telemetry import configure_telemetry
from .telemetry.events import EventLog
from .telemetry.metrics import http_metrics, {% if not cookiecutter.metrics_separate_port %}metrics_endpoint, {% endif %}multiprocess_dir
from .telemetry.middleware import TelemetryMiddleware
from .telemetry.tenant import TenantHeaders

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.trace import SpanProcessor

{% if cookiecutter.metrics_separate_port %}    from .telemetry.metrics import HttpMetrics
{% endif %}    from .telemetry.spans import RequestSpans

events = EventLog(__name__)

# Probes and scrapes: not traced, not counted.
UNTRACED_PATHS = ("/healthz", "/readyz", "/metrics")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
{%- if cookiecutter.with_sqlalchemy %}
    database: Database = app.state.database
    await database.create_schema()
{%- endif %}
{%- if cookiecutter.metrics_separate_port %}
    metrics: HttpMetrics = app.state.metrics
    # Under gunicorn (multiprocess mode) the master serves the merged metrics of all workers on
    # METRICS_PORT (gunicorn.conf.py): a worker must not take the port.
    metrics_server = (
        start_http_server(settings.metrics_port, addr=settings.host, registry=metrics.registry)[0]
        if metrics.multiprocess_dir is None
        else None
    )
{%- endif %}
    # What startup built (modules, the app, Logfire's and OpenTelemetry's machinery) lives as long
    # as the process. Frozen, it is no longer walked by every full garbage collection under load
    # (bench/run.py: production p99 about a third lower).
    gc.freeze()
    app.state.ready = True
    events.info("service.started", environment=settings.environment)
    try:
        yield
    finally:
        app.state.ready = False
        events.info("service.stopping")
{%- if cookiecutter.with_sqlalchemy %}
        await database.dispose()
{%- endif %}
{%- if cookiecutter.metrics_separate_port %}
        if metrics_server is not None:
            metrics_server.shutdown()
            metrics_server.server_close()
{%- endif %}
        # uvicorn re-raises SIGTERM once shutdown is done, so atexit hooks never run: without this
        # flush the last spans, logs and metrics would be lost. Bounded, both flushes together:
        # the collector may be down.
        deadline = time.monotonic() + settings.shutdown_flush_timeout_seconds
        request_spans: RequestSpans | None = app.state.request_spans
        if request_spans is not None:
            request_spans.force_flush(int(settings.shutdown_flush_timeout_seconds * 1000))
        remaining_millis = int(max(0.0, deadline - time.monotonic()) * 1000)
        logfire.force_flush(timeout_millis=remaining_millis)


def create_app(
    settings: Settings | None = None,
    *,
    additional_span_processors: Sequence[SpanProcessor] = (),
    metric_readers: Sequence[MetricReader] = (),
) -> FastAPI:
    """Build the service. Tests pass in-memory span processors / metric readers (see tests/)."""
    settings = settings or Settings()
    request_spans = configure_telemetry(
        settings,
        additional_span_processors=additional_span_processors,
        metric_readers=metric_readers,
    )
    metrics = http_metrics(
        CollectorRegistry(),
        max_accounts=settings.tenant_metrics_max_accounts,
        multiprocess_dir=multiprocess_dir(),
    )

    app = FastAPI(
        title="{{ cookiecutter.project_name }}",
{%- if cookiecutter.description | length <= 77 %}
        description="{{ cookiecutter.description }}",
{%- elif cookiecutter.description | length <= 86 %}
        description=(
            "{{ cookiecutter.description }}"
        ),
{%- else %}
        description=(
            "{{ cookiecutter.description | wordwrap(84, break_long_words=False, wrapstring=' "\n            "') }}"
        ),
{%- endif %}
        version=__version__,
        lifespan=lifespan,
        # TelemetryMiddleware is the one telemetry layer; FastAPI's own would duplicate its spans.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.request_spans = request_spans
    app.state.ready = False
{%- if cookiecutter.with_sqlalchemy %}
    app.state.database = Database(settings.database_url)
{%- endif %}
{%- if cookiecutter.with_pydantic_ai %}
    app.state.agent = agent.build_agent(settings.ai_model)
{%- endif %}

    app.include_router(health.router)
    app.include_router(items.router)
{%- if cookiecutter.with_sqlalchemy %}
    app.include_router(notes.router)
{%- endif %}
{%- if cookiecutter.with_pydantic_ai %}
    app.include_router(agent.router)
{%- endif %}
{%- if not cookiecutter.metrics_separate_port %}
    # A plain route, not a mount: a mounted ASGI app answers /metrics with a 307 to /metrics/.
    app.add_route("/metrics", metrics_endpoint(metrics), include_in_schema=False)
{%- endif %}
    app.add_middleware(
        TelemetryMiddleware,
        metrics=metrics,
        tenant_headers=TenantHeaders.from_names(
            settings.tenant_headers, max_length=settings.tenant_id_max_length
        ),
        untraced_paths=UNTRACED_PATHS,
        sample_rate=settings.trace_sample_rate,
        request_spans=request_spans,
    )
    return app
