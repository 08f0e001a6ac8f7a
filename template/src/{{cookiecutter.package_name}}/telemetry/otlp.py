"""OTLP/HTTP export of the request spans (spans.py): protobuf written by hand, one sender thread.

The SDK's exporter builds a protobuf object per span, attribute and value before serialising: for
the request's two spans that was most of the export thread's time, taken from the event loop under
the GIL. The encoding here writes the wire format directly and keeps each encoded attribute, since
a service sends the same few pairs (methods, routes, tenant ids) span after span; spans.py writes
the request spans from their facts with `span_message` and `encode_attributes`. The tests decode
its output with opentelemetry-proto and compare it with the SDK encoder's, field by field.

Where spans go is read from the standard variables, as OpenTelemetry's exporter reads them:
OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, _HEADERS, _TIMEOUT, _COMPRESSION, _CERTIFICATE,
_CLIENT_CERTIFICATE and _CLIENT_KEY.
"""

from __future__ import annotations

import gzip
import http.client
import logging
import os
import ssl
import struct
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote, urlsplit

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, TraceState

logger = logging.getLogger(__name__)
T = TypeVar("T")

# --- Encoding: field numbers from opentelemetry/proto/trace/v1/trace.proto and common.proto ------


def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    if value < 0x4000:  # most lengths: spans and attributes are a few hundred bytes
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag, the payload's length, the payload."""
    return tag + _varint(len(payload)) + payload


_INT64_MAX = 2**63 - 1


def _any_value(value: object) -> bytes:
    """An `AnyValue`: string 1, bool 2, int 3, double 4, array 5."""
    if type(value) is str:
        return _field(b"\x0a", value.encode("utf-8", "replace"))
    if type(value) is bool:
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):  # bool, an int too, was handled above
        if -_INT64_MAX - 1 <= value <= _INT64_MAX:
            return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)
        return _field(b"\x0a", str(value).encode())
    if isinstance(value, float):
        return b"\x21" + struct.pack("<d", value)
    if isinstance(value, (list, tuple)):
        return _field(b"\x2a", b"".join(_field(b"\x0a", _any_value(item)) for item in value))
    return _field(b"\x0a", str(value).encode("utf-8", "replace"))


def _key_value(key: str, value: object) -> bytes:
    """A `KeyValue`: key 1, value 2."""
    return _field(b"\x0a", key.encode("utf-8", "replace")) + _field(b"\x12", _any_value(value))


# Span attributes (Span field 9) by (key, type, value). The type too: 1 == True == 1.0, and they
# encode differently. Bounded: unique values (paths, ids) must not grow it without end.
_SPAN_ATTRIBUTES: dict[tuple[str, type, object], bytes] = {}
_MAX_CACHED_ATTRIBUTES = 4096


def _span_attribute(key: str, value: object) -> bytes:
    """Encodes (and keeps) one attribute; `encode_attributes` looks in the cache itself first.

    Only called once that lookup worked, so the value is hashable.
    """
    encoded = _field(b"\x4a", _key_value(key, value))
    if len(_SPAN_ATTRIBUTES) >= _MAX_CACHED_ATTRIBUTES:  # the frequent ones come back soon
        _SPAN_ATTRIBUTES.clear()
    _SPAN_ATTRIBUTES[key, type(value), value] = encoded
    return encoded


def encode_attributes(attributes: Iterable[tuple[str, object]]) -> bytes:
    """Span attributes, each as its own field (they follow one another in the `Span`)."""
    pairs = attributes if isinstance(attributes, (list, tuple)) else list(attributes)
    try:
        cached = _SPAN_ATTRIBUTES.get
        return b"".join(
            [
                cached((key, type(value), value)) or _span_attribute(key, value)
                for key, value in pairs
            ]
        )
    except TypeError:  # an unhashable value (a list): no cache for these
        return b"".join([_field(b"\x4a", _key_value(key, value)) for key, value in pairs])


_TIMES = struct.Struct("<BQBQ")  # start (field 7) and end (field 8) time, both fixed64
_KINDS = {kind: b"\x30" + _varint(kind.value + 1) for kind in SpanKind}  # OTLP's kinds start at 1
# The status is always sent, as the SDK's encoder does (empty when unset).
UNSET_STATUS = b"\x7a\x00"
# SpanFlags (fixed32): HAS_IS_REMOTE, and IS_REMOTE when the parent came from another process.
_LOCAL_PARENT = b"\x85\x01" + struct.pack("<I", 0x100)
_REMOTE_PARENT = b"\x85\x01" + struct.pack("<I", 0x300)
# Encoded span names (field 5): route templates and log messages, a small set. Bounded too.
_NAMES: dict[str, bytes] = {}


def encode_status(status: Status) -> bytes:
    if not status.status_code.value and not status.description:
        return UNSET_STATUS
    encoded = _field(b"\x12", status.description.encode()) if status.description else b""
    if status.status_code.value:
        encoded += b"\x18" + _varint(status.status_code.value)
    return _field(b"\x7a", encoded)


# An error without a description, as the request spans' status says it.
ERROR_STATUS = encode_status(Status(StatusCode.ERROR))


def span_message(
    trace_id: int,
    span_id: int,
    trace_state: TraceState | None,
    parent: SpanContext | None,
    name: str,
    kind: SpanKind,
    start: int,
    end: int,
    attributes: bytes,
    events: bytes = b"",
    status: bytes = UNSET_STATUS,
) -> bytes:
    """One `Span` (ScopeSpans field 2), its attributes, events and status already encoded."""
    parts = [b"\x0a\x10", trace_id.to_bytes(16, "big"), b"\x12\x08", span_id.to_bytes(8, "big")]
    if trace_state:
        parts.append(_field(b"\x1a", trace_state.to_header().encode()))
    if parent is not None:
        parts += (b"\x22\x08", parent.span_id.to_bytes(8, "big"))
    encoded_name = _NAMES.get(name)
    if encoded_name is None:
        encoded_name = _field(b"\x2a", name.encode("utf-8", "replace"))
        if len(_NAMES) >= _MAX_CACHED_ATTRIBUTES:  # messages built per record: start again
            _NAMES.clear()
        _NAMES[name] = encoded_name
    parts += (
        encoded_name,
        _KINDS[kind],
        _TIMES.pack(0x39, start, 0x41, end),
        attributes,
        events,
        status,
        _REMOTE_PARENT if parent is not None and parent.is_remote else _LOCAL_PARENT,
    )
    return _field(b"\x12", b"".join(parts))


def encode_span(span: ReadableSpan) -> bytes:
    """One finished SDK span (`span_message`)."""
    context = span.context
    assert context is not None  # noqa: S101 - the request spans always have one
    events = b""
    for event in span.events:
        encoded = b"\x09" + struct.pack("<Q", event.timestamp)
        encoded += _field(b"\x12", event.name.encode())
        for key, value in (event.attributes or {}).items():
            encoded += _field(b"\x1a", _key_value(key, value))
        events += _field(b"\x5a", encoded)
    return span_message(
        context.trace_id,
        context.span_id,
        context.trace_state,
        span.parent,
        span.name,
        span.kind,
        span.start_time or 0,
        span.end_time or 0,
        encode_attributes((span.attributes or {}).items()),
        events,
        encode_status(span.status),
    )


def encode_resource(resource: Resource) -> bytes:
    """`ResourceSpans.resource` (field 1), encoded once per process."""
    attributes = b"".join(_field(b"\x0a", _key_value(k, v)) for k, v in resource.attributes.items())
    return _field(b"\x0a", attributes)


def _scope(scope: InstrumentationScope | None) -> bytes:
    """`ScopeSpans.scope` (field 1): name 1, version 2."""
    if scope is None:
        return b""
    body = _field(b"\x0a", scope.name.encode())
    if scope.version:
        body += _field(b"\x12", scope.version.encode())
    return _field(b"\x0a", body)


def encode_spans(spans: Sequence[ReadableSpan], resource: bytes) -> bytes:
    """An `ExportTraceServiceRequest` with one resource and the spans grouped by scope."""
    return encode_request(
        [(span.instrumentation_scope, encode_span(span)) for span in spans], resource
    )


def encode_request(
    spans: Iterable[tuple[InstrumentationScope | None, bytes]], resource: bytes
) -> bytes:
    """`encode_spans` for spans already encoded (`span_message`), each with its scope."""
    by_scope: dict[InstrumentationScope | None, list[bytes]] = {}
    for scope, span in spans:
        by_scope.setdefault(scope, []).append(span)
    scope_spans = b"".join(
        _field(b"\x12", _scope(scope) + b"".join(encoded)) for scope, encoded in by_scope.items()
    )
    return _field(b"\x0a", resource + scope_spans)


# --- Sending ------------------------------------------------------------------------------------

# How often the queue is sent (OTEL_BSP_SCHEDULE_DELAY, in ms, overrides it) and how much it may
# hold (OTEL_BSP_MAX_QUEUE_SIZE): with the collector down, spans beyond it are dropped, not hoarded.
EXPORT_INTERVAL_SECONDS = 0.5
MAX_QUEUE = 4096
# Spans per request body. Encoding holds the GIL: 256 spans take a few ms, short enough for the
# event loop's p99. (Logfire's exporters use OTEL_BSP_MAX_EXPORT_BATCH_SIZE, tuned for the SDK's
# slower encoder in logfire_config.py.)
MAX_EXPORT_BATCH = 256
_RETRYABLE = frozenset({408, 429, 502, 503, 504})
_DROP_WARNING_INTERVAL_SECONDS = 60.0
# A span to encode when its batch is sent: its scope, a function and what it takes (`on_end_later`).
PendingSpan = tuple["InstrumentationScope", "Callable[[Any], bytes]", object]


def _variable(name: str, default: str | None = None) -> str | None:
    """OTEL_EXPORTER_OTLP_TRACES_<name>, else OTEL_EXPORTER_OTLP_<name> (the spec's precedence)."""
    return (
        os.environ.get(f"OTEL_EXPORTER_OTLP_TRACES_{name}")
        or os.environ.get(f"OTEL_EXPORTER_OTLP_{name}")
        or default
    )


def traces_endpoint() -> str | None:
    """Where OTLP traces go according to the environment, or None: the same rule as Logfire's.

    Logfire adds its OTLP exporter when OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT is set and
    OTEL_TRACES_EXPORTER is unset or `otlp`.
    """
    if os.environ.get("OTEL_TRACES_EXPORTER", "").lower() not in ("", "otlp"):
        return None
    traces = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if traces:
        return traces
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return f"{base.rstrip('/')}/v1/traces" if base else None


def _number(raw: str | None, default: float) -> float:
    """A positive number from a variable; `default` if unset or not one (as the SDK does)."""
    try:
        value = float(raw) if raw else default
    except ValueError:
        return default
    return value if value > 0 else default


def _headers(raw: str | None) -> dict[str, str]:
    """`key=value,key2=value2`, URL-encoded values (the spec's format)."""
    headers: dict[str, str] = {}
    for item in (raw or "").split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            headers[unquote(key.strip()).lower()] = unquote(value.strip())
    return headers


class OtlpSpanExporter(SpanProcessor):
    """Queues finished spans and posts them, encoded here, from one daemon thread.

    A span processor (only `on_end` does anything) so that the request spans reach it exactly as
    they reach any other processor: tests pass in-memory ones beside it. When it is the only one,
    spans.py hands it unbuilt spans instead (`on_end_later`), encoded here with their batch.
    """

    def __init__(
        self,
        endpoint: str,
        resource: Resource,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        compression: str | None = None,
        interval: float = EXPORT_INTERVAL_SECONDS,
        max_queue: int = MAX_QUEUE,
    ) -> None:
        url = urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"OTLP traces endpoint must be an http(s) URL, got {endpoint!r}")
        self._url = url
        # For warnings: the endpoint without any user:password part.
        self._where = f"{url.scheme}://{url.hostname}{f':{url.port}' if url.port else ''}{url.path}"
        self._path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        self._headers = {
            "content-type": "application/x-protobuf",
            **(headers or {}),
        }
        self._gzip = compression == "gzip"
        if self._gzip:
            self._headers["content-encoding"] = "gzip"
        self._timeout = timeout
        self._interval = interval
        self._max_queue = max_queue
        self._resource = encode_resource(resource)
        self._queue: deque[ReadableSpan | PendingSpan] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self._send_lock = threading.Lock()
        self._connection: http.client.HTTPConnection | None = None
        self.dropped = 0
        self._last_drop_warning = 0.0
        self._thread = threading.Thread(target=self._run, name="otlp-request-spans", daemon=True)
        self._thread.start()

    @classmethod
    def from_environment(cls, resource: Resource) -> OtlpSpanExporter | None:
        endpoint = traces_endpoint()
        if endpoint is None:
            return None
        compression = (_variable("COMPRESSION") or "").lower() or None
        default_delay_ms = EXPORT_INTERVAL_SECONDS * 1000
        delay_ms = _number(os.environ.get("OTEL_BSP_SCHEDULE_DELAY"), default_delay_ms)
        return cls(
            endpoint,
            resource,
            headers=_headers(_variable("HEADERS")),
            timeout=_number(_variable("TIMEOUT"), 10.0),
            compression=compression,
            interval=delay_ms / 1000,
            max_queue=int(_number(os.environ.get("OTEL_BSP_MAX_QUEUE_SIZE"), MAX_QUEUE)),
        )

    def on_end(self, span: ReadableSpan) -> None:
        self._enqueue(span)

    def on_end_later(
        self, scope: InstrumentationScope, encode: Callable[[T], bytes], facts: T
    ) -> None:
        """A finished span: `encode(facts)` writes it (`span_message`) in the exporter's thread."""
        self._enqueue((scope, encode, facts))

    def _enqueue(self, item: ReadableSpan | PendingSpan) -> None:
        if len(self._queue) >= self._max_queue:
            self.dropped += 1
            return
        self._queue.append(item)
        # Once per batch: setting an Event takes its lock and notifies, and until the thread
        # gets the GIL to take the batch, every span after the one that filled it would do so.
        if len(self._queue) >= MAX_EXPORT_BATCH and not self._wake.is_set():
            self._wake.set()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        deadline = time.monotonic() + timeout_millis / 1000
        while self._queue and time.monotonic() < deadline:
            if not self._send_batch(deadline):
                return False
        return not self._queue

    def shutdown(self) -> None:
        self._stopping = True
        self._wake.set()
        self.force_flush(int(self._timeout * 1000))
        self._close()

    def _run(self) -> None:
        # Full batches as they fill, the rest when the interval is up: under load that is one
        # request body per MAX_EXPORT_BATCH spans. (Sending whatever was queued after each
        # export meant a small body every few ms, and each one costs the event loop the GIL
        # handovers of an HTTP exchange.)
        while not self._stopping:
            timed_out = not self._wake.wait(self._interval)
            self._wake.clear()
            while not self._stopping and (
                len(self._queue) >= MAX_EXPORT_BATCH or (timed_out and self._queue)
            ):
                self._send_batch(time.monotonic() + self._timeout)

    def _send_batch(self, deadline: float) -> bool:
        with self._send_lock:
            batch: list[tuple[InstrumentationScope | None, bytes]] = []
            while self._queue and len(batch) < MAX_EXPORT_BATCH:
                item = self._queue.popleft()
                if isinstance(item, ReadableSpan):
                    batch.append((item.instrumentation_scope, encode_span(item)))
                    continue
                scope, encode, facts = item
                try:
                    batch.append((scope, encode(facts)))
                except Exception:  # noqa: BLE001 - one bad span must not stop the exports
                    self.dropped += 1
                    self._warn_dropped()
            if not batch:
                return True
            body = encode_request(batch, self._resource)
            if self._gzip:
                body = gzip.compress(body, compresslevel=6)
            if self._post(body, deadline):
                return True
            self.dropped += len(batch)
            self._warn_dropped()
            return False

    def _post(self, body: bytes, deadline: float) -> bool:
        """Up to three attempts before `deadline`; True once the collector took the spans."""
        delay = 0.25
        for _attempt in range(3):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                connection = self._connect(remaining)
                connection.request("POST", self._path, body, self._headers)
                response = connection.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                self._close()
            else:
                if 200 <= response.status < 300:
                    return True
                if response.status not in _RETRYABLE:
                    return False
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay *= 2
        return False

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        if self._connection is None:
            url = self._url
            if url.scheme == "https":
                self._connection = http.client.HTTPSConnection(
                    url.hostname or "", url.port, timeout=timeout, context=_tls_context()
                )
            else:
                self._connection = http.client.HTTPConnection(
                    url.hostname or "", url.port, timeout=timeout
                )
        self._connection.timeout = timeout
        if self._connection.sock is not None:
            self._connection.sock.settimeout(timeout)
        return self._connection

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _warn_dropped(self) -> None:
        now = time.monotonic()
        if now - self._last_drop_warning >= _DROP_WARNING_INTERVAL_SECONDS:
            self._last_drop_warning = now
            logger.warning(
                "telemetry.spans_dropped",
                extra={"dropped_total": self.dropped, "endpoint": self._where},
            )


def _tls_context() -> ssl.SSLContext:
    """The system's CAs, or OTEL_EXPORTER_OTLP_CERTIFICATE; a client certificate if one is set."""
    context = ssl.create_default_context(cafile=_variable("CERTIFICATE"))
    client_certificate = _variable("CLIENT_CERTIFICATE")
    if client_certificate:
        context.load_cert_chain(client_certificate, _variable("CLIENT_KEY"))
    return context
