"""Standard logging{% if cookiecutter.with_loguru %} and loguru{% endif %} into Logfire; JSON lines on stdout in production.

One pipeline: {% if cookiecutter.with_loguru %}loguru records are forwarded to standard logging, whose {% endif %}root logger has
- a Logfire handler: records become Logfire logs (with trace context and tenant attributes) when
  their trace is sampled;
- in production only, a stdout handler writing one JSON object per line for EVERY record at or
  above LOG_LEVEL, sampled or not, with trace_id/span_id and the tenant ids.
In development Logfire's console prints the same records readably.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import TYPE_CHECKING, Any

import logfire
{%- if cookiecutter.with_loguru %}
from loguru import logger as loguru_logger
{%- endif %}
from opentelemetry import trace
from opentelemetry.trace import TraceFlags

from .tenant import TENANT_ATTRIBUTES, current_tenant

if TYPE_CHECKING:
{%- if cookiecutter.with_loguru %}
    from loguru import Message
{% endif %}
    from ..settings import Settings

# Attributes every LogRecord has; anything else came with `extra=` and is a structured field
# (except uvicorn's `color_message`, a copy of the message with terminal colour codes).
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "color_message",
}
# Marks the handlers installed here, so that configuring again (tests) replaces them.
_OWNED = "_service_telemetry_handler"


# Extras named like credentials are redacted on stdout, as Logfire's scrubbing does for spans.
_SECRET_KEY = re.compile(
    r"password|passwd|secret|auth(?!ors?\b)|credential|private[._ -]?key|api[._ -]?key|"
    r"session|cookie|token|jwt|csrf|xsrf|ssn|credit[._ -]?card",
    re.IGNORECASE,
)
REDACTED = "[redacted]"
_secret_keys: dict[str, bool] = {}


def _is_secret_key(key: str) -> bool:
    """Whether an extra's name looks like a credential (cached: services log few distinct keys)."""
    secret = _secret_keys.get(key)
    if secret is None:
        secret = _secret_keys[key] = (
            key not in TENANT_ATTRIBUTES and _SECRET_KEY.search(key) is not None
        )
    return secret


# One encoder for every line: `json.dumps(..., default=str)` would build a new one per record.
_encode_json = json.JSONEncoder(default=str).encode
_second_cache: tuple[int, str] = (-1, "")


def _utc_timestamp(created: float) -> str:
    """ISO 8601 in UTC with milliseconds (`2026-01-02T03:04:05.678+00:00`).

    Formats the date and time once per second, not once per record: a `datetime` per line was a
    quarter of this formatter's cost.
    """
    global _second_cache  # a one-entry cache, replaced atomically
    second = int(created)
    # Rounded to the microsecond first, as `datetime.fromtimestamp` does.
    micros = round((created - second) * 1_000_000)
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    cached_second, prefix = _second_cache
    if cached_second != second:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second_cache = (second, prefix)
    return f"{prefix}.{micros // 1000:03d}+00:00"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, trace ids, tenant ids, extras."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": _utc_timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            line["trace_id"] = format(span_context.trace_id, "032x")
            line["span_id"] = format(span_context.span_id, "016x")
        line.update(current_tenant())
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and key not in line:
                line[key] = REDACTED if _is_secret_key(key) else value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return _encode_json(line)


class SampledTracesOnly(logging.Filter):
    """Skips the Logfire handler inside an unsampled trace, whose logs the sampler drops anyway.

    Records outside any trace (startup, shutdown) always pass.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        span_context = trace.get_current_span().get_span_context()
        # `trace_flags` is sometimes a plain int (some span contexts are built that way): mask it.
        return not span_context.is_valid or bool(span_context.trace_flags & TraceFlags.SAMPLED)


def configure_logging(settings: Settings) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _OWNED, False):
            root.removeHandler(handler)
    root.setLevel(settings.effective_log_level.upper())
    # httpx (and its successor httpx2) log every request at INFO with its full URL, query-string
    # secrets included.
    for http_client in ("httpx", "httpx2"):
        logging.getLogger(http_client).setLevel(logging.WARNING)
    # Connection-level chatter would bury the service's own debug records.
    for chatty in ("asyncio", "httpcore", "aiosqlite", "multipart"):
        logging.getLogger(chatty).setLevel(logging.INFO)

    to_logfire = logfire.LogfireLoggingHandler()
    to_logfire.addFilter(SampledTracesOnly())
    handlers: list[logging.Handler] = [to_logfire]
    if settings.environment == "production":
        to_stdout = logging.StreamHandler(sys.stdout)
        to_stdout.setFormatter(JsonFormatter())
        handlers.append(to_stdout)
    for handler in handlers:
        setattr(handler, _OWNED, True)
        root.addHandler(handler)
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
    extra = {k: v for k, v in record["extra"].items() if k not in _RECORD_ATTRIBUTES}
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
