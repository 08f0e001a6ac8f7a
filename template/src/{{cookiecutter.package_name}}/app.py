"""Application factory: `create_app()` (also usable as `uvicorn --factory <pkg>.app:create_app`)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
{%- if cookiecutter.with_redis %}
from functools import partial
{%- endif %}
from typing import TYPE_CHECKING

import logfire
from fastapi import FastAPI
{%- if cookiecutter.metrics_separate_port %}
from prometheus_client import start_http_server
{%- endif %}

from . import __version__
from .api import {% if cookiecutter.with_pydantic_ai %}agent, {% endif %}{% if cookiecutter.with_redis %}counters, {% endif %}health, items{% if cookiecutter.with_sqlalchemy %}, notes{% endif %}{% if cookiecutter.with_httpx %}, upstream{% endif %}
{%- if cookiecutter.with_sqlalchemy %}
from .db import Database
{%- endif %}
{%- if cookiecutter.with_httpx %}
from .http_client import create_http_client
{%- endif %}
{%- if cookiecutter.with_redis %}
from .redis_client import create_redis_client, ping
{%- endif %}
from .settings import Settings
from .telemetry import configure_telemetry
from .telemetry.failures import internal_server_error
from .telemetry.metrics import {% if cookiecutter.metrics_separate_port %}multiprocess_dir{% else %}metrics_endpoint{% endif %}
from .telemetry.middleware import TelemetryMiddleware
from .telemetry.openapi import document_tenant_headers
from .telemetry.tenant import TenantHeaders

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.trace import SpanProcessor

logger = logging.getLogger(__name__)

# Probes and scrapes: not traced, not counted.
UNTRACED_PATHS = ("/healthz", "/readyz", "/metrics")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
{%- if cookiecutter.with_sqlalchemy or cookiecutter.with_redis %}
    # Pools and clients belong to the event loop that serves: opened here, closed below. None of
    # them connects yet, so the service starts while a datastore is down and /readyz names it.
{%- endif %}
{%- if cookiecutter.with_sqlalchemy %}
    database = Database(settings.database_url, timeout_seconds=settings.database_timeout_seconds)
    app.state.database = database
    app.state.readiness_checks["database"] = database.ping
{%- endif %}
{%- if cookiecutter.with_redis %}
    redis = create_redis_client(settings)
    app.state.redis = redis
    app.state.readiness_checks["redis"] = partial(ping, redis)
{%- endif %}
{%- if cookiecutter.metrics_separate_port %}
    # Under gunicorn (multiprocess mode) the master serves the merged metrics of all workers on
    # METRICS_PORT (gunicorn.conf.py): a worker must not take the port.
    metrics_server = (
        start_http_server(settings.metrics_port, addr=settings.host)[0]
        if multiprocess_dir() is None
        else None
    )
{%- endif %}
{%- if cookiecutter.with_httpx %}
    # One client for every outgoing call: it pools connections (routes get it as `HttpClient`).
    app.state.http_client = create_http_client()
{%- endif %}
    app.state.ready = True
    logger.info(
        "service.started",
        extra={"environment": settings.environment, "run_mode": settings.run_mode},
    )
    try:
        yield
    finally:
        app.state.ready = False
        logger.info("service.stopping")
{%- if cookiecutter.with_httpx %}
        await app.state.http_client.aclose()
{%- endif %}
{%- if cookiecutter.with_redis %}
        await redis.aclose()
{%- endif %}
{%- if cookiecutter.with_sqlalchemy %}
        await database.dispose()
{%- endif %}
{%- if cookiecutter.metrics_separate_port %}
        if metrics_server is not None:
            metrics_server.shutdown()
            metrics_server.server_close()
{%- endif %}
        # uvicorn re-raises SIGTERM once shutdown is done, so atexit hooks never run: without this
        # flush the last spans, logs and metrics would be lost. Bounded: the collector may be down.
        logfire.force_flush(timeout_millis=int(settings.shutdown_flush_timeout_seconds * 1000))


def create_app(
    settings: Settings | None = None,
    *,
    additional_span_processors: Sequence[SpanProcessor] = (),
    metric_readers: Sequence[MetricReader] = (),
) -> FastAPI:
    """Build the service. Tests pass in-memory span processors / metric readers (see tests/)."""
    settings = settings or Settings()
    policy = configure_telemetry(
        settings,
        additional_span_processors=additional_span_processors,
        metric_readers=metric_readers,
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
        # TelemetryMiddleware is the one telemetry layer: FastAPI's own would duplicate its spans
        # and error logs (telemetry/middleware.py says why it is not the other way round).
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # The 500 of an unhandled exception names its trace (X-Trace-Id), as every response does.
        exception_handlers={Exception: internal_server_error},
    )
    app.state.settings = settings
    app.state.ready = False
    # What /readyz checks (api/health.py): add one for each dependency a request cannot do without.
{%- if cookiecutter.with_sqlalchemy or cookiecutter.with_redis %}
    # The lifespan adds the datastores' checks when it opens their clients.
{%- endif %}
    readiness_checks: dict[str, health.ReadinessCheck] = {}
    app.state.readiness_checks = readiness_checks
{%- if cookiecutter.with_pydantic_ai %}
    app.state.agent = agent.build_agent(settings.ai_model)
{%- endif %}

    app.include_router(health.router)
    app.include_router(items.router)
{%- if cookiecutter.with_httpx %}
    app.include_router(upstream.router)
{%- endif %}
{%- if cookiecutter.with_sqlalchemy %}
    app.include_router(notes.router)
{%- endif %}
{%- if cookiecutter.with_redis %}
    app.include_router(counters.router)
{%- endif %}
{%- if cookiecutter.with_pydantic_ai %}
    app.include_router(agent.router)
{%- endif %}
{%- if not cookiecutter.metrics_separate_port %}
    # A plain route, not a mount: a mounted ASGI app answers /metrics with a 307 to /metrics/.
    app.add_route("/metrics", metrics_endpoint, include_in_schema=False)
{%- endif %}
    document_tenant_headers(app, settings.tenant_headers)
    app.add_middleware(
        TelemetryMiddleware,
        tenant_headers=TenantHeaders.from_names(
            settings.tenant_headers,
            max_length=settings.tenant_id_max_length,
            trusted_callers=settings.tenant_caller_networks,
        ),
        policy=policy,
        metric_accounts=settings.tenant_metrics_accounts,
        access_log=settings.effective_access_log,
        untraced_paths=UNTRACED_PATHS,
    )
    return app
