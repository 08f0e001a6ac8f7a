"""Standard logging{% if cookiecutter.with_loguru %} and loguru{% endif %} into Logfire; JSON lines on stdout in production.

One way out for every record: {% if cookiecutter.with_loguru %}loguru forwards to standard logging, whose {% endif %}root logger has
- Logfire's handler: a record becomes a Logfire log, with the trace context and tenant ids, and is
  exported with its trace (development: printed on the console). Inside a request whose trace is
  not recorded (sampling.py) the record waits in the request's `HeldRecords` instead: it reaches
  Logfire only if the request turns out failed or slow;
- in production, a stdout handler writing one JSON object per line for EVERY record at or above
  LOG_LEVEL, whether its trace is exported or not, with trace_id, span_id and the tenant ids.
  Its fields are scrubbed by Logfire's own scrubber, so stdout and spans redact the same things.
An exception the middleware already reported for its request is not logged again (failures.py):
the server's own "Exception in ASGI application" copy is dropped, by both handlers and by uvicorn's
logger itself (gunicorn's uvicorn worker gives that logger gunicorn's handlers).
Python warnings are captured into logging too, so they come out the same way.
"""

from __future__ import annotations

import io
import logging
import sys
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import logfire
{%- if cookiecutter.with_loguru %}
from loguru import logger as loguru_logger
{%- endif %}
from opentelemetry import trace
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from .failures import DropReported
from .late import at_time
from .logfire_config import BAGGAGE_CONFLICT_PREFIX
from .tenant import current_tenant

# Marks the handlers installed here, so that configuring again (tests) replaces them.
_OWNED = "_service_telemetry_handler"
# Fields every line has; the record's other fields (its `extra=`) are scrubbed. Tracebacks are
# not, as Logfire leaves a span's exception alone.
_UNSCRUBBED = frozenset({"timestamp", "level", "logger", "message", "exc_info", "stack_info"})
# uvicorn adds `color_message`, its message with terminal colour codes: never a field of a line.
_LEFT_OUT = (*RESERVED_ATTRS, "color_message")
# One instance, so that configuring again adds no second copy to uvicorn's logger.
_DROP_REPORTED = DropReported()
# Records a request holds at most (the latest are kept: they are the ones nearest a failure).
MAX_HELD_RECORDS = 100


class HeldRecords:
    """The std-logging records of one request that is not recorded, until it is over."""

    def __init__(self) -> None:
        self.records: deque[tuple[ToLogfire, logging.LogRecord]] = deque(maxlen=MAX_HELD_RECORDS)
        self.error_logged = False
        self.open = True

    def add(self, handler: ToLogfire, record: logging.LogRecord) -> None:
        self.records.append((handler, record))
        self.error_logged = self.error_logged or record.levelno >= logging.ERROR

    def send_to_logfire(self) -> None:
        """Emits the records into the current span, each at the time it was logged."""
        for handler, record in self.records:
            with at_time(int(record.created * 1e9)):
                handler.send(record)
        self.records.clear()


_held_records: ContextVar[HeldRecords | None] = ContextVar("held_records", default=None)


@contextmanager
def hold_records() -> Iterator[HeldRecords]:
    """Std-logging records of the request running here wait in the returned HeldRecords."""
    held = HeldRecords()
    token = _held_records.set(held)
    try:
        yield held
    finally:
        held.open = False  # a task the request left running logs as if outside it
        _held_records.reset(token)


class ToLogfire(logfire.LogfireLoggingHandler):
    """Logfire's handler, except that an unrecorded request's records wait in its HeldRecords.

    Logfire formats, inspects and scrubs a record before it learns that its span is not recorded:
    holding the record instead is what makes an unrecorded request cheap.
    """

    def emit(self, record: logging.LogRecord) -> None:
        held = _held_records.get()
        if held is not None and held.open:
            held.add(self, record)
        else:
            self.send(record)

    def send(self, record: logging.LogRecord) -> None:
        super().emit(record)


class JsonLines(JsonFormatter):
    """python-json-logger's formatter, plus trace and tenant ids, with Logfire's scrubbing."""

    def __init__(self) -> None:
        super().__init__(
            ["levelname", "name", "message"],
            rename_fields={"levelname": "level", "name": "logger"},
            reserved_attrs=_LEFT_OUT,
            timestamp=True,
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        log_data["level"] = record.levelname.lower()
        fields = {k: v for k, v in log_data.items() if k not in _UNSCRUBBED}
        if fields:
            # The scrubber Logfire applies to a log's attributes, with the same patterns and the
            # same callback (the request's tenant ids kept): one policy for both ways out.
            scrubber = logfire.DEFAULT_LOGFIRE_INSTANCE.config.scrubber
            scrubbed, _ = scrubber.scrub_value(("attributes",), fields)
            log_data.update(scrubbed)
        # The tenant ids as Logfire copies them onto the exported log: a field of the record's
        # own with the same name and another value keeps its place, the id goes beside it. They
        # are the ids the middleware validated, which the scrubber's callback keeps anyway.
        for name, tenant_id in current_tenant().items():
            if name not in log_data:
                log_data[name] = tenant_id
            elif log_data[name] != tenant_id:
                log_data[BAGGAGE_CONFLICT_PREFIX + name] = tenant_id
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            log_data["trace_id"] = format(span_context.trace_id, "032x")
            log_data["span_id"] = format(span_context.span_id, "016x")


def configure_logging(log_level: str, *, json_lines: bool) -> None:
    _write_every_line()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _OWNED, False):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(log_level.upper())
    # httpx (and its successor httpx2) log every request at INFO with its full URL, query-string
    # secrets included.
    for http_client in ("httpx", "httpx2"):
        logging.getLogger(http_client).setLevel(logging.WARNING)
    # Connection-level chatter would bury the service's own debug records.
    for chatty in ("asyncio", "httpcore", "aiosqlite", "multipart"):
        logging.getLogger(chatty).setLevel(logging.INFO)

    # Records Logfire must not turn into spans (its exporters' own, say) go to the handler's
    # fallback, by default plain text on stderr: with JSON lines they are on stdout already.
    fallback = logging.NullHandler() if json_lines else logging.StreamHandler()
    handlers: list[logging.Handler] = [ToLogfire(fallback=fallback)]
    if json_lines:
        to_stdout = logging.StreamHandler(sys.stdout)
        to_stdout.setFormatter(JsonLines())
        handlers.append(to_stdout)
    for handler in handlers:
        setattr(handler, _OWNED, True)
        handler.addFilter(_DROP_REPORTED)
        root.addHandler(handler)
    logging.getLogger("uvicorn.error").addFilter(_DROP_REPORTED)
    # Library warnings (deprecations, an exporter's complaints) as records, not text on stderr.
    logging.captureWarnings(capture=True)
{%- if cookiecutter.with_loguru %}
    _forward_loguru()
{%- endif %}


def _write_every_line() -> None:
    """Flush stdout at every line, the console's and the JSON lines alike.

    To a file or a pipe (a container's log, `> service.log`) Python would hold up to 8 KiB of
    lines in memory, and uvicorn ends with the SIGTERM it re-raises: they would never be written.
    """
    if isinstance(sys.stdout, io.TextIOWrapper) and not sys.stdout.line_buffering:
        sys.stdout.reconfigure(line_buffering=True)
{%- if cookiecutter.with_loguru %}


class _ToStandardLogging(logging.Handler):
    """loguru's documented way to hand its records to standard logging.

    loguru puts `bind()`/`extra` fields in one `extra` dict: they become the record's own fields,
    as `extra=` does in standard logging.
    """

    def emit(self, record: logging.LogRecord) -> None:
        fields = record.__dict__.pop("extra", None)
        if isinstance(fields, dict):
            record.__dict__.update({k: v for k, v in fields.items() if k not in record.__dict__})
        target = logging.getLogger(record.name)
        if target.isEnabledFor(record.levelno):
            target.handle(record)


def _forward_loguru() -> None:
    # loguru's default sink writes its own format to stderr: one way out instead.
    loguru_logger.remove()
    loguru_logger.add(_ToStandardLogging(), level=0, format="{message}")
{%- endif %}
