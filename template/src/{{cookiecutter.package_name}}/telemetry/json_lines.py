"""JSON lines on stdout, the production log format: one object per record, written in batches.

Each line has the time, level, logger and message, the trace and span ids, the tenant ids and the
record's structured fields (credentials redacted). `JsonLinesHandler` queues the lines and a
daemon thread writes them, whole, every FLUSH_INTERVAL_SECONDS; SIGTERM and a normal exit flush
what is left.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, TextIO

from opentelemetry import trace
from opentelemetry.trace import SpanContext

from .redaction import REDACTED, is_secret_key
from .tenant import TENANT_ATTRIBUTES, current_tenant

if TYPE_CHECKING:
    from types import FrameType

# Attributes every LogRecord has; anything else came with `extra=` and is a structured field
# (except uvicorn's `color_message`, a copy of the message with terminal colour codes).
RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "color_message",
}
# Marks the SIGTERM handler installed here, so that configuring again does not stack another.
_FLUSHES_FIRST = "_flushes_json_lines_first"


# One encoder for the extras: `json.dumps(..., default=str)` would build a new one per record.
_encode_json = json.JSONEncoder(default=str).encode
# What `json.dumps` uses for strings (C): the fixed fields are quoted with it directly.
_quote = encode_basestring_ascii
_second_cache: tuple[int, str] = (-1, "")
_MILLISECOND_SUFFIXES = tuple(f".{milli:03d}+00:00" for milli in range(1000))
_millisecond_cache: tuple[int, str] = (-1, "")


def _utc_timestamp(created: float) -> str:
    """ISO 8601 in UTC with milliseconds (`2026-01-02T03:04:05.678+00:00`).

    Under load many lines fall in the same millisecond, so the whole text is cached per
    millisecond and the date and time per second: a `datetime` per line was a quarter of this
    formatter's cost, and formatting the milliseconds every time half of what was left.
    """
    global _second_cache, _millisecond_cache  # one-entry caches, replaced atomically
    # Rounded to the microsecond first, as `datetime.fromtimestamp` does.
    millis = round(created * 1_000_000) // 1000
    cached_millis, text = _millisecond_cache
    if cached_millis != millis:
        second, milli = divmod(millis, 1000)
        cached_second, prefix = _second_cache
        if cached_second != second:
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            _second_cache = (second, prefix)
        text = prefix + _MILLISECOND_SUFFIXES[milli]
        _millisecond_cache = (millis, text)
    return text


# Fields written before the extras: an extra with one of these names is left out.
_HEAD_FIELDS = frozenset({"timestamp", "level", "logger"})
_HEAD_FIELDS_IN_TRACE = _HEAD_FIELDS | {"trace_id", "span_id"}
# What a line leaves out of its extras, besides the tenant ids: record attributes, head fields.
_SKIPPED = {names: RECORD_ATTRIBUTES | names for names in (_HEAD_FIELDS, _HEAD_FIELDS_IN_TRACE)}
_QUOTED_REDACTED = _quote(REDACTED)
# `, "item_id": ` per field name (the tenant ids' from the start), for names that are not
# credentials. Bounded: a service that puts data in its field names must not grow it forever.
_MAX_CACHED_NAMES = 1024
_field_prefixes: dict[str, str] = {key: f", {_quote(key)}: " for key in TENANT_ATTRIBUTES}
# `"level": ..., "logger": ..., "message": ...` by (level, logger, message): events repeat them.
_heads: dict[tuple[str, str, str], str] = {}


def _plain_fields(
    fields: Iterable[tuple[str, object]], skip: frozenset[str], tenant: Mapping[str, str]
) -> str | None:
    """`fields` as `, "name": value` pairs if every value is an exact str or int, else None.

    The same text the JSON encoder writes for them, without its per-call setup (the usual extras
    are ids and counts). Credentials are redacted; names in `skip` or `tenant` are left out.
    """
    text = ""
    for key, value in fields:
        if key in skip or key in tenant:
            continue
        prefix = _field_prefixes.get(key)
        if prefix is None:
            if is_secret_key(key):
                text += f", {_quote(key)}: {_QUOTED_REDACTED}"
                continue
            prefix = f", {_quote(key)}: "
            if len(_field_prefixes) < _MAX_CACHED_NAMES:
                _field_prefixes[key] = prefix
        if type(value) is str:
            text += prefix + _quote(value)
        elif type(value) is int:
            text += prefix + str(value)
        else:
            return None
    return text


def json_line(
    created: float,
    level: str,
    logger: str,
    message: str,
    fields: Iterable[tuple[str, object]],
    span_context: SpanContext,
    tenant: Mapping[str, str],
    exception: str | None = None,
) -> str:
    """One JSON object: time, level, logger, message, trace ids, `tenant` ids, then `fields`.

    Writes it piece by piece and leaves only unusual extras (floats, lists, objects) to the JSON
    encoder: the same bytes as encoding the whole dict with `json.dumps`, in about a third of the
    time (bench/run.py). `fields` may be a record's whole `__dict__`: its standard attributes are
    skipped.
    """
    head = _heads.get((level, logger, message))
    if head is None:
        head = f'"level": {_quote(level)}, "logger": {_quote(logger)}, "message": {_quote(message)}'
        if len(_heads) >= _MAX_CACHED_NAMES:  # records' formatted messages: start again
            _heads.clear()
        _heads[level, logger, message] = head
    line = '{"timestamp": "' + _utc_timestamp(created) + '", ' + head
    taken = _HEAD_FIELDS
    if span_context.is_valid:
        line += (
            f', "trace_id": "{span_context.trace_id:032x}"'
            f', "span_id": "{span_context.span_id:016x}"'
        )
        taken = _HEAD_FIELDS_IN_TRACE
    for key, tenant_id in tenant.items():
        line += (_field_prefixes.get(key) or f", {_quote(key)}: ") + _quote(tenant_id)
    skip = _SKIPPED[taken]
    if exception is None:
        plain = _plain_fields(fields, skip, tenant)
        if plain is not None:
            return line + plain + "}"
    extras = {
        key: REDACTED if is_secret_key(key) else value
        for key, value in fields
        if key not in skip and key not in tenant
    }
    if exception is not None:
        extras["exception"] = exception
    if not extras:
        return line + "}"
    return f"{line}, {_encode_json(extras)[1:]}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record (`json_line`): time, level, logger, message, ids, extras."""

    def format(self, record: logging.LogRecord) -> str:
        return json_line(
            record.created,
            record.levelname.lower(),
            record.name,
            record.getMessage(),
            record.__dict__.items(),
            trace.get_current_span().get_span_context(),
            current_tenant(),
            self.formatException(record.exc_info) if record.exc_info else None,
        )


# How often buffered JSON lines reach stdout, and how many may wait. This is the most a crash
# (SIGKILL, OOM kill) can lose; a normal exit or SIGTERM flushes everything (`logging.shutdown`).
FLUSH_INTERVAL_SECONDS = 0.2
MAX_PENDING_LINES = 256


# An event's line before it is formatted: json_line's arguments.
PendingEvent = tuple[float, str, str, str, Mapping[str, object], SpanContext, Mapping[str, str]]
# Values that cannot change between an event and the moment its line is formatted.
_IMMUTABLE_VALUES = frozenset({str, int, float, bool, type(None)})


class JsonLinesHandler(logging.Handler):
    """Writes formatted records to a stream in batches: one write every FLUSH_INTERVAL_SECONDS.

    `logging.StreamHandler` takes a lock, writes and flushes for every record, and with
    PYTHONUNBUFFERED (set in the container image) every line is a `write` system call: that was a
    third of this handler's cost. Here a record is formatted and appended to a list; a daemon
    thread (or the record that fills MAX_PENDING_LINES) writes the lines, whole, in one call.

    Events (events.py) are queued unformatted and formatted together when written: inside a
    loaded server the formatter ran at a quarter of its speed in a loop, evicted from the CPU's
    caches by the rest of the request, and the batch runs it warm.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        flush_interval: float = FLUSH_INTERVAL_SECONDS,
        max_pending: int = MAX_PENDING_LINES,
    ) -> None:
        super().__init__()
        self.stream = stream
        self.flush_interval = flush_interval
        self.max_pending = max_pending
        self._pending: list[str | PendingEvent] = []
        self._pending_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._stopping = threading.Event()
        self._flusher: threading.Thread | None = None
        _BATCHING_HANDLERS.add(self)

    def handle(self, record: logging.LogRecord) -> bool:
        """`Handler.handle` without the handler lock: only the list append needs one."""
        if self.filters and not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - logging must not raise into the caller
            self.handleError(record)
            return
        self.write_line(line)

    def write_line(self, line: str) -> None:
        """Queue one formatted line."""
        self._queue(line)

    def write_event(self, event: PendingEvent) -> None:
        """Queue an event's line (json_line's arguments), formatted when the batch is written.

        Only when its fields are immutable: anything else is formatted now, so the line shows
        the values as they were.
        """
        if _IMMUTABLE_VALUES.issuperset(map(type, event[4].values())):
            self._queue(event)
        else:
            self._queue(_event_line(event))

    def _queue(self, item: str | PendingEvent) -> None:
        with self._pending_lock:
            self._pending.append(item)
            pending = len(self._pending)
        if self._flusher is None:
            self._start_flusher()
        elif pending >= self.max_pending:
            self.flush()

    def flush(self) -> None:
        with self._write_lock:
            with self._pending_lock:
                pending, self._pending = self._pending, []
            if not pending:
                return
            lines = [item if isinstance(item, str) else _event_line(item) for item in pending]
            lines.append("")
            try:
                self.stream.write("\n".join(lines))
                self.stream.flush()
            except (OSError, ValueError):
                # stdout closed or gone (broken pipe): nothing left to write the lines to.
                pass

    def close(self) -> None:
        self._stopping.set()
        self.flush()
        super().close()

    def _start_flusher(self) -> None:
        with self._pending_lock:
            if self._flusher is not None:
                return
            self._flusher = threading.Thread(
                target=self._flush_periodically, name="json-log-flusher", daemon=True
            )
        self._flusher.start()

    def _flush_periodically(self) -> None:
        while not self._stopping.wait(self.flush_interval):
            self.flush()

    def _after_fork_in_child(self) -> None:
        # The parent writes the lines it buffered; the child has no flusher thread yet.
        self._pending = []
        self._pending_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._flusher = None


def _event_line(event: PendingEvent) -> str:
    created, level, logger, message, fields, span_context, tenant = event
    return json_line(created, level, logger, message, fields.items(), span_context, tenant)


_BATCHING_HANDLERS: weakref.WeakSet[JsonLinesHandler] = weakref.WeakSet()


def _reset_handlers_after_fork() -> None:
    for handler in list(_BATCHING_HANDLERS):
        handler._after_fork_in_child()


os.register_at_fork(after_in_child=_reset_handlers_after_fork)


def flush_on_sigterm() -> None:
    """Write the buffered lines before SIGTERM's default action ends the process.

    uvicorn shuts down gracefully on SIGTERM, then restores the previous handler and raises the
    signal again: with the default one the process dies there, without `atexit` (so without
    `logging.shutdown`), and the shutdown's own lines would be lost. This handler, installed
    before uvicorn starts, flushes and then hands the signal to whatever was there before it.
    """
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set signal handlers
    previous = signal.getsignal(signal.SIGTERM)
    if getattr(previous, _FLUSHES_FIRST, False):
        return

    def flush_then_forward(signum: int, frame: FrameType | None) -> None:
        for handler in list(_BATCHING_HANDLERS):
            handler.flush()
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    setattr(flush_then_forward, _FLUSHES_FIRST, True)
    signal.signal(signal.SIGTERM, flush_then_forward)
