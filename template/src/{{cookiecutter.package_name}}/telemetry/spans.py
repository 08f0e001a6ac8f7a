"""A traced request's own spans: its SERVER span and log records, built finished (the direct path).

Through Logfire's tracer a span is started, wrapped, offered to every processor at start and at
end, copied, scrubbed and only then queued for export. That way a traced request cost about four
times an untraced one, and 3.4 times what it costs on this path (instructions per request, counted
with valgrind; `REQUEST_SPANS=logfire` shows Logfire's path in bench/run.py's `traced` mode). The
direct path builds the same spans Logfire would export (names, attributes, scopes, resource,
parents) as finished `ReadableSpan`s once the request is over and hands them to the span
processors: the OTLP exporter in otlp.py and any the caller passed in (the tests' in-memory one).
With the exporter alone there is no span object at all: the request queues the facts and the
exporter's thread writes the protobuf straight from them (see `_hand_over`).

What stays with Logfire: spans that code inside the request starts itself (`logfire.span`, httpx,
SQLAlchemy, ...) are children of the SERVER span, whose ids are in the context; records that do
not fit the path (below) go to Logfire's handler; and everything outside a traced request.

Used when `request_spans` is `direct`: by default outside development (whose console prints
Logfire's spans) and unless a Logfire token is configured (spans then go to Logfire's own
exporter, which only its pipeline feeds).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import traceback
from typing import TYPE_CHECKING, NamedTuple, TypeVar, cast

import logfire
from logfire.types import ExceptionCallbackHelper
from opentelemetry import baggage, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from .json_lines import RECORD_ATTRIBUTES
from .metrics import OTHER_METHOD
from .otlp import (
    ERROR_STATUS,
    UNSET_STATUS,
    OtlpSpanExporter,
    encode_attributes,
    encode_span,
    span_message,
)
from .redaction import REDACTED, is_secret_key, redact_text

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from opentelemetry.sdk.trace import Span, SpanProcessor
    from opentelemetry.util.types import Attributes

    from ..settings import Settings

# Logfire's level numbers for the standard levels (`logfire.level_num`).
LOGFIRE_LEVEL_NUMBERS = {
    logging.DEBUG: 5,
    logging.INFO: 9,
    logging.WARNING: 13,
    logging.ERROR: 17,
    logging.CRITICAL: 21,
}
# Extra values a span attribute holds as they are; anything else (dicts, objects) goes to
# Logfire's handler, which serialises it with a JSON schema.
PLAIN_VALUES = frozenset({str, int, float, bool})
# The attributes Logfire sets on a log itself: a field with one of these names does not fit the
# direct path (Logfire's handler decides which value wins).
LOG_SPAN_ATTRIBUTES = frozenset(
    {
        "logfire.span_type",
        "logfire.level_num",
        "logfire.msg_template",
        "logfire.msg",
        "code.filepath",
        "code.function",
        "code.lineno",
        "logfire.logger_name",
        "logfire.json_schema",
    }
)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_OK = Status(StatusCode.UNSET)
_ERROR = Status(StatusCode.ERROR)
# Bounds the caches of repeated parts: routes, statuses and log call sites are few, but a record
# may carry a message built for it.
_MAX_CACHED = 1024


class ServerSpanFacts(NamedTuple):
    """What a request's SERVER span is made of, kept until it is built or encoded."""

    span_context: SpanContext
    parent: SpanContext
    method: str
    method_original: str | None  # a method the conventions do not know (`method` is `_OTHER`)
    route: str | None
    status: int
    path: str
    scheme: str
    http_version: str
    tenant: Mapping[str, str]
    start: int
    end: int
    error: BaseException | None


class LogSpanFacts(NamedTuple):
    """What a log span is made of (`log_event`), kept until it is built or encoded."""

    level: int  # Logfire's level number
    message: str
    fields: Mapping[str, str | int | float | bool]
    in_baggage: Mapping[str, object]
    parent: SpanContext
    span_id: int
    logger: str
    timestamp: int
    filepath: str
    lineno: int
    function: str
    exception: BaseException | None


Facts = TypeVar("Facts", ServerSpanFacts, LogSpanFacts)


class RequestSpans:
    """Builds the SERVER span and log records of traced requests and hands them to `processors`."""

    def __init__(
        self,
        resource: Resource,
        processors: Sequence[SpanProcessor],
        *,
        server_scope: str,
        min_level: int,
        exporter: OtlpSpanExporter | None = None,
    ) -> None:
        self.resource = resource
        self.processors = (*processors, *([exporter] if exporter is not None else []))
        # Set when the exporter is the only processor: it may build the spans itself.
        self._exporter_alone = exporter if not processors else None
        self.min_level = min_level
        self._server_scope = InstrumentationScope(server_scope)
        # The scope Logfire's logging handler uses, so queries by scope see no difference.
        self._log_scope = InstrumentationScope("logfire.stdlib.logging", logfire.VERSION)
        self._schemas: dict[tuple[str, ...], str] = {}
        # Encoded attributes that repeat, by what they are made of (the exporter's thread only).
        self._encoded: dict[tuple[object, ...], bytes] = {}

    def end_server_span(
        self,
        span_context: SpanContext,
        parent: SpanContext,
        *,
        method: str,
        method_original: str | None,
        route: str | None,
        status: int,
        path: str,
        scheme: str,
        http_version: str,
        tenant: Mapping[str, str],
        start: int,
        end: int,
        error: BaseException | None,
    ) -> None:
        """The finished SERVER span: what the middleware and Logfire's processors would export."""
        facts = ServerSpanFacts(
            span_context,
            parent,
            method,
            method_original,
            route,
            status,
            path,
            scheme,
            http_version,
            tenant,
            start,
            end,
            error,
        )
        # An exception's traceback grows as it propagates: a span with one is built now.
        self._hand_over(
            self._server_span,
            self._encode_server_span,
            self._server_scope,
            facts,
            later=error is None,
        )

    def _server_span(self, facts: ServerSpanFacts) -> ReadableSpan:
        method, route, status, error = facts.method, facts.route, facts.status, facts.error
        shown_path = redact_text(facts.path)
        failed_as = error_type(status, error)
        attributes = {
            **_server_attributes(
                method, route, status, facts.scheme, facts.http_version, failed_as
            ),
            # Logfire shows a server span as `METHOD path`; its name keeps the route template.
            "logfire.msg": server_span_message(method, facts.method_original, shown_path),
            "url.path": shown_path,
            **_original_method(facts.method_original),
            **facts.tenant,
        }
        events: tuple[Event, ...] = ()
        if error is not None:
            events = (_exception_event(error, facts.end),)
            # What Logfire's UI groups errors into issues by.
            attributes["logfire.exception.fingerprint"] = _issue_fingerprint(error)
        return ReadableSpan(
            name=server_span_name(method, route),
            context=facts.span_context,
            parent=facts.parent if facts.parent.is_valid else None,
            resource=self.resource,
            attributes=attributes,
            events=events,
            kind=SpanKind.SERVER,
            status=_OK if failed_as is None else _ERROR,
            start_time=facts.start,
            end_time=facts.end,
            instrumentation_scope=self._server_scope,
        )

    def _encode_server_span(self, facts: ServerSpanFacts) -> bytes:
        """`encode_span(self._server_span(facts))`, with the attributes that repeat encoded once."""
        if facts.error is not None:  # not handed over like this (end_server_span), but still right
            return encode_span(self._server_span(facts))
        method, route, status = facts.method, facts.route, facts.status
        failed_as = error_type(status, None)
        key = (method, route, status, facts.scheme, facts.http_version)
        repeated = self._encoded.get(key)
        if repeated is None:
            attributes = _server_attributes(
                method, route, status, facts.scheme, facts.http_version, failed_as
            )
            repeated = encode_attributes(attributes.items())
            self._remember(key, repeated)
        shown_path = redact_text(facts.path)
        varying = (
            ("logfire.msg", server_span_message(method, facts.method_original, shown_path)),
            ("url.path", shown_path),
            *_original_method(facts.method_original).items(),
        )
        span_context, parent = facts.span_context, facts.parent
        return span_message(
            span_context.trace_id,
            span_context.span_id,
            span_context.trace_state,
            parent if parent.is_valid else None,
            server_span_name(method, route),
            SpanKind.SERVER,
            facts.start,
            facts.end,
            repeated + encode_attributes((*varying, *facts.tenant.items())),
            status=UNSET_STATUS if failed_as is None else ERROR_STATUS,
        )

    def log(self, record: logging.LogRecord, parent: SpanContext) -> bool:
        """The record as the log span Logfire's handler would make; False if it does not fit.

        Fits: a standard level at or above the minimum, a plain message without `%` arguments, no
        stack, an exception only at error level and above, extras of plain values not named like
        Logfire's own attributes. The rest goes to Logfire's handler.
        """
        message = record.msg
        if record.args or record.stack_info or type(message) is not str:
            return False
        exception = record.exc_info[1] if record.exc_info else None
        if record.exc_info and (exception is None or record.levelno < logging.ERROR):
            return False
        extras = {k: v for k, v in record.__dict__.items() if k not in RECORD_ATTRIBUTES}
        if not LOG_SPAN_ATTRIBUTES.isdisjoint(extras) or not PLAIN_VALUES.issuperset(
            map(type, extras.values())
        ):
            return False
        return self.log_event(
            record.levelno,
            message,
            extras,
            parent=parent,
            logger=record.name,
            created=record.created,
            filepath=record.pathname,
            lineno=record.lineno,
            function=record.funcName,
            exception=exception,
        )

    def log_event(
        self,
        levelno: int,
        message: str,
        fields: Mapping[str, str | int | float | bool],
        *,
        parent: SpanContext,
        logger: str,
        created: float,
        filepath: str,
        lineno: int,
        function: str,
        exception: BaseException | None = None,
    ) -> bool:
        """A log span, as Logfire's handler makes one from a record; False below the minimum level.

        `fields` are the log's own: plain values, named neither like a record attribute nor like
        one of `LOG_SPAN_ATTRIBUTES`, and nothing may change them afterwards.
        """
        level = LOGFIRE_LEVEL_NUMBERS.get(levelno)
        if level is None or levelno < self.min_level:
            return False
        facts = LogSpanFacts(
            level,
            message,
            fields,
            # Logfire copies the baggage (the tenant ids, set by the middleware) onto every log.
            baggage.get_all(),
            parent,
            random.getrandbits(64) or 1,
            logger,
            int(created * 1e9),
            filepath,
            lineno,
            function,
            exception,
        )
        self._hand_over(
            self._log_span, self._encode_log_span, self._log_scope, facts, later=exception is None
        )
        return True

    def _log_span(self, facts: LogSpanFacts) -> ReadableSpan:
        parent, exception = facts.parent, facts.exception
        attributes = {**self._log_attributes(facts), **dict(_shown_fields(facts.fields))}
        for key, value in facts.in_baggage.items():
            attributes.setdefault(key, str(value))
        # As Logfire marks them: an error-level log has the error status (and its exception's text).
        status = _OK
        events: tuple[Event, ...] = ()
        if exception is not None:
            status = Status(StatusCode.ERROR, f"{type(exception).__name__}: {exception}")
            events = (_exception_event(exception, facts.timestamp, escaped=False),)
        elif facts.level >= LOGFIRE_LEVEL_NUMBERS[logging.ERROR]:
            status = _ERROR
        return ReadableSpan(
            name=facts.message,
            context=SpanContext(
                parent.trace_id,
                facts.span_id,
                is_remote=False,
                trace_flags=_SAMPLED,
                trace_state=parent.trace_state,
            ),
            parent=parent,
            resource=self.resource,
            attributes=attributes,
            events=events,
            kind=SpanKind.INTERNAL,
            status=status,
            start_time=facts.timestamp,
            end_time=facts.timestamp,
            instrumentation_scope=self._log_scope,
        )

    def _encode_log_span(self, facts: LogSpanFacts) -> bytes:
        """`encode_span(self._log_span(facts))`, with the attributes that repeat encoded once."""
        if facts.exception is not None:  # not handed over like this (log_event), but still right
            return encode_span(self._log_span(facts))
        level, message, fields, parent = facts.level, facts.message, facts.fields, facts.parent
        key = (level, message, facts.logger, facts.filepath, facts.lineno, facts.function, *fields)
        repeated = self._encoded.get(key)
        if repeated is None:
            repeated = encode_attributes(self._log_attributes(facts).items())
            self._remember(key, repeated)
        from_baggage = [
            (name, str(value))
            for name, value in facts.in_baggage.items()
            if name not in fields and name not in LOG_SPAN_ATTRIBUTES
        ]
        error = level >= LOGFIRE_LEVEL_NUMBERS[logging.ERROR]
        return span_message(
            parent.trace_id,
            facts.span_id,
            parent.trace_state,
            parent,
            message,
            SpanKind.INTERNAL,
            facts.timestamp,
            facts.timestamp,
            repeated + encode_attributes([*_shown_fields(fields), *from_baggage]),
            status=ERROR_STATUS if error else UNSET_STATUS,
        )

    def _log_attributes(self, facts: LogSpanFacts) -> dict[str, str | int]:
        """The attributes a log span repeats from one call to the next."""
        return {
            "logfire.span_type": "log",
            "logfire.level_num": facts.level,
            "logfire.msg_template": facts.message,
            "logfire.msg": facts.message,
            "code.filepath": facts.filepath,
            "code.function": facts.function,
            "code.lineno": facts.lineno,
            "logfire.logger_name": facts.logger,
            "logfire.json_schema": self._json_schema(tuple(facts.fields)),
        }

    def force_flush(self, timeout_millis: int) -> None:
        for processor in self.processors:
            processor.force_flush(timeout_millis)

    def shutdown(self) -> None:
        for processor in self.processors:
            processor.shutdown()

    def _hand_over(
        self,
        build: Callable[[Facts], ReadableSpan],
        encode: Callable[[Facts], bytes],
        scope: InstrumentationScope,
        facts: Facts,
        *,
        later: bool,
    ) -> None:
        """`build(facts)` to the processors; or, `later`, `encode` to the exporter alone.

        Inside a loaded server, building a span on the event loop took about three times as long
        as in the exporter's batch, where the same code runs warm in the CPU's caches; and the
        exporter alone needs no span object, only its bytes, which `encode` writes with the
        attributes that repeat from span to span encoded once. `facts` must not change
        afterwards: ids, numbers, strings and mappings nothing else writes to.
        """
        if later and self._exporter_alone is not None:
            self._exporter_alone.on_end_later(scope, encode, facts)
        else:
            self._finish(build(facts))

    def _remember(self, key: tuple[object, ...], encoded: bytes) -> None:
        if len(self._encoded) >= _MAX_CACHED:
            self._encoded.clear()
        self._encoded[key] = encoded

    def _finish(self, span: ReadableSpan) -> None:
        for processor in self.processors:
            processor.on_end(span)

    def _json_schema(self, keys: tuple[str, ...]) -> str:
        """Logfire's `logfire.json_schema` for a log's extras: which attributes are fields."""
        schema = self._schemas.get(keys)
        if schema is None:
            fields = (*keys, "logfire.logger_name")
            properties: dict[str, dict[str, object]] = {key: {} for key in fields}
            schema = json.dumps({"type": "object", "properties": properties}, separators=(",", ":"))
            if len(self._schemas) < 1024:
                self._schemas[keys] = schema
        return schema


def error_type(status: int, error: BaseException | None) -> str | None:
    """The semantic conventions' `error.type` of a request: None if it did not fail.

    The exception's class when one escaped (as OpenTelemetry's instrumentations name it), else a
    server error's status code. A client error (4xx) is not a failure of the server.
    """
    if error is not None:
        return type(error).__qualname__
    return str(status) if status >= 500 else None


def _server_attributes(
    method: str,
    route: str | None,
    status: int,
    scheme: str,
    http_version: str,
    failed_as: str | None,
) -> dict[str, str | int]:
    """The attributes of a SERVER span that repeat from request to request."""
    attributes: dict[str, str | int] = {
        "logfire.span_type": "span",
        "http.request.method": method,
        "http.response.status_code": status,
        "url.scheme": scheme,
        "network.protocol.version": http_version,
    }
    if route:
        attributes["http.route"] = route
    # Logfire's levels for server spans: error with the status, warning for client errors.
    if failed_as is not None:
        attributes["error.type"] = failed_as
        attributes["logfire.level_num"] = LOGFIRE_LEVEL_NUMBERS[logging.ERROR]
    elif status >= 400:
        attributes["logfire.level_num"] = LOGFIRE_LEVEL_NUMBERS[logging.WARNING]
    return attributes


def _original_method(method_original: str | None) -> dict[str, str]:
    return {} if method_original is None else {"http.request.method_original": method_original}


def server_span_message(method: str, method_original: str | None, path: str) -> str:
    """Logfire's message for a SERVER span: the method as the client sent it, and the path."""
    return f"{method_original or method} {path}"


def server_span_name(method: str, route: str | None) -> str:
    """`{method} {route}`, or the method alone; `HTTP` for a method the conventions do not know."""
    shown = "HTTP" if method == OTHER_METHOD else method
    return f"{shown} {route}" if route else shown


def _shown_fields(
    fields: Mapping[str, str | int | float | bool],
) -> list[tuple[str, str | int | float | bool]]:
    """A log's fields as its span shows them: credentials redacted, as Logfire scrubs them."""
    return [
        (
            key,
            REDACTED if is_secret_key(key) else redact_text(value) if type(value) is str else value,
        )
        for key, value in fields.items()
    ]


def _exception_event(error: BaseException, timestamp: int, *, escaped: bool = True) -> Event:
    """The `exception` event OpenTelemetry's `record_exception` adds."""
    attributes: Attributes = {
        "exception.type": type(error).__qualname__,
        "exception.message": str(error),
        "exception.stacktrace": "".join(traceback.format_exception(error)),
        "exception.escaped": str(escaped),
    }
    return Event("exception", attributes, timestamp)


def _issue_fingerprint(error: BaseException) -> str:
    """Logfire's fingerprint of an exception: a hash of its canonical traceback."""
    helper = ExceptionCallbackHelper(
        span=cast("Span", trace.INVALID_SPAN), exception=error, event_attributes={}
    )
    return hashlib.sha256(helper.issue_fingerprint_source.encode()).hexdigest()


def logfire_has_token() -> bool:
    """Whether Logfire was configured with a token (it then exports to its platform itself)."""
    config = getattr(trace.get_tracer_provider(), "config", None)
    # Unknown (another provider, a changed Logfire): assume it does, and keep Logfire's path.
    return config is None or bool(getattr(config, "token", True))


# The process's OTLP exporter for request spans: replaced, not added to, when the service is
# configured again (tests build many apps in one process).
_exporter: OtlpSpanExporter | None = None


def request_spans_for(
    settings: Settings, processors: Sequence[SpanProcessor], *, server_scope: str
) -> RequestSpans | None:
    """The direct path for these settings, or None for Logfire's path (call after Logfire)."""
    global _exporter  # one per process, like Logfire's own exporters
    if _exporter is not None:
        _exporter.shutdown()
        _exporter = None
    path = settings.request_spans
    if path is None:
        logfire_only = settings.environment == "development" or logfire_has_token()
        path = "logfire" if logfire_only else "direct"
    if path == "logfire":
        return None
    provider = trace.get_tracer_provider()
    sdk_provider = getattr(provider, "provider", provider)
    resource = getattr(sdk_provider, "resource", None)
    if not isinstance(resource, Resource):
        return None
    _exporter = OtlpSpanExporter.from_environment(resource)
    return RequestSpans(
        resource,
        processors,
        exporter=_exporter,
        server_scope=server_scope,
        min_level=logging.getLevelName(settings.effective_log_level.upper()),
    )
