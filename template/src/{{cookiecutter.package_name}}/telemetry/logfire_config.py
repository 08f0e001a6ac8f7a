"""Logfire (OpenTelemetry) configuration: where it goes, which traces are kept, what is scrubbed.

Export needs no code here: with LOGFIRE_TOKEN Logfire ships to its backend, with
OTEL_EXPORTER_OTLP_ENDPOINT (or the per-signal variables) `logfire.configure` installs the
OpenTelemetry SDK's OTLP exporters itself, and in development its console prints everything.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import logfire
from opentelemetry.propagate import set_global_textmap
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .. import __version__
from .late import LateSpanIds, now_ns
from .tenant import current_tenant

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.trace import SpanProcessor

    from ..settings import LogLevel, Settings
    from .sampling import TracePolicy

# Logfire's level names: standard logging's `critical` is Logfire's `fatal`.
LOGFIRE_LEVELS: dict[LogLevel, logfire.LevelName] = {
    "debug": "debug",
    "info": "info",
    "warning": "warning",
    "error": "error",
    "critical": "fatal",
}
SERVICE_NAME = "{{ cookiecutter.project_slug }}"
# OpenTelemetry's default is 10 s per export attempt, retried until that deadline: with the
# collector down, shutdown would hang that long. 2 s bounds it (override with the same variable).
DEFAULT_OTLP_TIMEOUT_SECONDS = "2"
# Logfire's name for a baggage entry on a span or log that has an attribute of the same name.
BAGGAGE_CONFLICT_PREFIX = "baggage_conflict."


def keep_tenant_ids(match: logfire.ScrubMatch) -> Any:
    """Keep the request's tenant ids, and nothing else that merely shares their names.

    `session_id` looks like a credential to Logfire. An attribute named after a tenant id is kept
    only when its value is the id the middleware accepted for the current request (its baggage,
    `current_tenant()`), so `extra={"session_id": cookie}` is redacted like any other secret,
    inside a request or not. Logfire renames the request's id `baggage_conflict.<name>` on a
    record that has a field of that name. Scrubbing runs as the span or log ends, in its context.
    """
    path = match.path
    if len(path) != 2 or path[0] != "attributes" or not isinstance(path[1], str):
        return None
    tenant_id = current_tenant().get(path[1].removeprefix(BAGGAGE_CONFLICT_PREFIX))
    if tenant_id is not None and match.value == tenant_id:
        return match.value
    return None


def configure_logfire(
    settings: Settings,
    policy: TracePolicy,
    *,
    additional_span_processors: Sequence[SpanProcessor] = (),
    metric_readers: Sequence[MetricReader] = (),
) -> None:
    """Configure Logfire for this process; tests pass their in-memory exporter and reader here."""
    os.environ.setdefault("OTEL_EXPORTER_OTLP_TIMEOUT", DEFAULT_OTLP_TIMEOUT_SECONDS)
    # Only W3C tracecontext crosses the process boundary. The default propagator also reads the
    # `baggage` header, which would let any client set `account_id` (or anything) on our spans.
    set_global_textmap(TraceContextTextMapPropagator())
    level = LOGFIRE_LEVELS[settings.effective_log_level]
    logfire.configure(
        # Runs without a token and without network; LOGFIRE_TOKEN or OTEL_EXPORTER_OTLP_ENDPOINT
        # turn export on.
        send_to_logfire="if-token-present",
        service_name=SERVICE_NAME,
        service_version=__version__,
        environment=settings.environment,
        console=logfire.ConsoleOptions(min_log_level=level, show_project_link=False)
        if settings.run_mode == "development"
        else False,
        min_level=level,
        sampling=policy.sampling_options(),
        # Spans recorded after the fact keep their request's ids and times (sampling.py).
        advanced=logfire.AdvancedOptions(id_generator=LateSpanIds(), ns_timestamp_generator=now_ns),
        scrubbing=logfire.ScrubbingOptions(callback=keep_tenant_ids),
        distributed_tracing=settings.distributed_tracing,
        # No source inspection of `logfire.info(f"...")` calls: it costs on every call.
        inspect_arguments=False,
        additional_span_processors=additional_span_processors,
        metrics=logfire.MetricsOptions(additional_readers=metric_readers),
    )
