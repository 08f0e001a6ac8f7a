"""Standard logging{% if cookiecutter.with_loguru %} and loguru{% endif %} into Logfire; JSON lines on stdout in production.

One pipeline: {% if cookiecutter.with_loguru %}loguru records are forwarded to standard logging, whose {% endif %}root logger has
- a Logfire handler: records become Logfire logs (with trace context and tenant attributes) when
  their trace is sampled;
- in production only, a stdout handler writing one JSON object per line for EVERY record at or
  above LOG_LEVEL, sampled or not, with trace_id/span_id and the tenant ids (json_lines.py).
In development Logfire's console prints the same records readably.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import logfire
{%- if cookiecutter.with_loguru %}
from loguru import logger as loguru_logger
{%- endif %}
from opentelemetry import trace
from opentelemetry.trace import TraceFlags

from .json_lines import {% if cookiecutter.with_loguru %}RECORD_ATTRIBUTES, {% endif %}JsonFormatter, JsonLinesHandler, flush_on_sigterm

if TYPE_CHECKING:
{%- if cookiecutter.with_loguru %}
    from loguru import Message
{% endif %}
    from ..settings import Settings
    from .spans import RequestSpans

# Marks the handlers installed here, so that configuring again (tests) replaces them.
_OWNED = "_service_telemetry_handler"


class SampledLogfireHandler(logfire.LogfireLoggingHandler):
    """Logfire's handler, skipped inside an unsampled trace, whose logs the sampler drops anyway.

    Inside a sampled trace, with the direct path on (spans.py), the record becomes its log span
    there; records that do not fit it, and records outside any trace (startup, shutdown), go to
    Logfire. Checked in `handle`, before the handler's lock and filter machinery: most records of a
    production service take one of the early exits.
    """

    def __init__(self, request_spans: RequestSpans | None = None) -> None:
        super().__init__()
        self.request_spans = request_spans

    def handle(self, record: logging.LogRecord) -> bool:
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            # `trace_flags` is sometimes a plain int (some span contexts are built that way).
            if not span_context.trace_flags & TraceFlags.SAMPLED:
                return False
            if self.request_spans is not None and self.request_spans.log(record, span_context):
                return True
        return super().handle(record)


@dataclass(frozen=True, slots=True)
class EventRoute:
    """Where events.py writes directly: valid while the root logger has `handlers` and no other."""

    handlers: list[logging.Handler]
    json_lines: JsonLinesHandler | None
    request_spans: RequestSpans | None


_event_route: EventRoute | None = None


def event_route() -> EventRoute | None:
    """The destinations configure_logging set up (None before it ran)."""
    return _event_route


def configure_logging(settings: Settings, request_spans: RequestSpans | None = None) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _OWNED, False):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(settings.effective_log_level.upper())
    # httpx (and its successor httpx2) log every request at INFO with its full URL, query-string
    # secrets included.
    for http_client in ("httpx", "httpx2"):
        logging.getLogger(http_client).setLevel(logging.WARNING)
    # Connection-level chatter would bury the service's own debug records.
    for chatty in ("asyncio", "httpcore", "aiosqlite", "multipart"):
        logging.getLogger(chatty).setLevel(logging.INFO)

    to_logfire = SampledLogfireHandler(request_spans)
    handlers: list[logging.Handler] = [to_logfire]
    to_stdout = None
    if settings.environment == "production":
        to_stdout = JsonLinesHandler(sys.stdout)
        to_stdout.setFormatter(JsonFormatter())
        flush_on_sigterm()
        handlers.append(to_stdout)
    for handler in handlers:
        setattr(handler, _OWNED, True)
        root.addHandler(handler)
    global _event_route  # replaced whole, like the handlers
    _event_route = EventRoute(handlers, to_stdout, request_spans)
{%- if cookiecutter.with_loguru %}
    _bridge_loguru()


_loguru_sink: list[int] = []


def _bridge_loguru() -> None:
    """Send loguru records through standard logging: one way out for every record."""
    if _loguru_sink:
        return
    # loguru's default sink writes its own format to stderr: replace it.
    loguru_logger.remove()
    _loguru_sink.append(loguru_logger.add(_forward_to_logging, level=0, format="{message}"))


def _forward_to_logging(message: Message) -> None:
    record = message.record
    target = logging.getLogger(record["name"] or "loguru")
    level = record["level"].no
    if not target.isEnabledFor(level):
        return
    exception = record["exception"]
    exc_info = None
    if exception is not None and exception.type is not None and exception.value is not None:
        exc_info = (exception.type, exception.value, exception.traceback)
    extra = {k: v for k, v in record["extra"].items() if k not in RECORD_ATTRIBUTES}
    target.handle(
        target.makeRecord(
            target.name,
            level,
            record["file"].path,
            record["line"],
            record["message"],
            (),
            exc_info,
            func=record["function"],
            extra=extra,
        )
    )
{%- endif %}
