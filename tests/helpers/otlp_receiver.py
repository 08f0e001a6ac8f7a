"""A local OTLP/HTTP receiver: what a collector sees, decoded with opentelemetry-proto.

    with OtlpReceiver() as receiver:          # listens on 127.0.0.1:<free port>
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
        ...
        spans = receiver.wait_for(lambda spans: any(s.name == "GET /items/{item_id}" for s in spans))

It accepts POST /v1/traces, /v1/metrics and /v1/logs with protobuf bodies (gzip or not), answers
with the matching (empty, i.e. fully accepted) Export*ServiceResponse, and keeps spans as plain
dataclasses whose attributes are ordinary Python values. Metrics and logs are kept as the decoded
requests. JSON-encoded OTLP is refused with 415: the SDK exporters send protobuf.
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as ProtoStatus

SPAN_KINDS = {
    ProtoSpan.SPAN_KIND_UNSPECIFIED: "UNSPECIFIED",
    ProtoSpan.SPAN_KIND_INTERNAL: "INTERNAL",
    ProtoSpan.SPAN_KIND_SERVER: "SERVER",
    ProtoSpan.SPAN_KIND_CLIENT: "CLIENT",
    ProtoSpan.SPAN_KIND_PRODUCER: "PRODUCER",
    ProtoSpan.SPAN_KIND_CONSUMER: "CONSUMER",
}
STATUS_CODES = {
    ProtoStatus.STATUS_CODE_UNSET: "UNSET",
    ProtoStatus.STATUS_CODE_OK: "OK",
    ProtoStatus.STATUS_CODE_ERROR: "ERROR",
}


def any_value(value: AnyValue) -> Any:
    """An OTLP AnyValue as the Python value it carries (arrays -> tuples, kvlists -> dicts)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return tuple(any_value(item) for item in value.array_value.values)
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    return getattr(value, kind)


def attributes(pairs: Any) -> dict[str, Any]:
    result: dict[str, Any] = {}
    pair: KeyValue
    for pair in pairs:
        result[pair.key] = any_value(pair.value)
    return result


@dataclass(frozen=True)
class Span:
    name: str
    kind: str  # "SERVER", "INTERNAL", ...
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_span_id: str | None
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    status_code: str  # "UNSET" | "OK" | "ERROR"
    status_message: str
    start_time_unix_nano: int
    end_time_unix_nano: int
    events: tuple[tuple[str, dict[str, Any]], ...] = field(default=())

    @property
    def parent(self) -> str | None:
        return self.parent_span_id

    @property
    def is_log(self) -> bool:
        """Logfire sends logs (logfire.info, bridged std logging) as zero-duration spans of this type."""
        return self.attributes.get("logfire.span_type") == "log"


def decode_spans(request: ExportTraceServiceRequest) -> list[Span]:
    spans: list[Span] = []
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    Span(
                        name=span.name,
                        kind=SPAN_KINDS.get(span.kind, str(span.kind)),
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex() or None,
                        attributes=attributes(span.attributes),
                        resource=resource,
                        scope=scope_spans.scope.name,
                        status_code=STATUS_CODES.get(span.status.code, str(span.status.code)),
                        status_message=span.status.message,
                        start_time_unix_nano=span.start_time_unix_nano,
                        end_time_unix_nano=span.end_time_unix_nano,
                        events=tuple((event.name, attributes(event.attributes)) for event in span.events),
                    )
                )
    return spans


_SIGNALS: dict[str, tuple[type[Message], type[Message]]] = {
    "/v1/traces": (ExportTraceServiceRequest, ExportTraceServiceResponse),
    "/v1/metrics": (ExportMetricsServiceRequest, ExportMetricsServiceResponse),
    "/v1/logs": (ExportLogsServiceRequest, ExportLogsServiceResponse),
}


class OtlpReceiver:
    """Threaded OTLP/HTTP receiver on 127.0.0.1; use as a context manager."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._condition = threading.Condition()
        self._spans: list[Span] = []
        self.metrics: list[ExportMetricsServiceRequest] = []
        self.logs: list[ExportLogsServiceRequest] = []
        self.requests: list[tuple[str, dict[str, str]]] = []  # (path, headers) of every POST
        self.errors: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                receiver._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean; failures are recorded in receiver.errors

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)

    # --- lifecycle ---

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        """The value for OTEL_EXPORTER_OTLP_ENDPOINT (the SDK appends /v1/<signal>)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- data ---

    @property
    def spans(self) -> list[Span]:
        with self._condition:
            return list(self._spans)

    def clear(self) -> None:
        with self._condition:
            self._spans.clear()
            self.metrics.clear()
            self.logs.clear()

    def wait_for(
        self, predicate: Callable[[list[Span]], bool], timeout: float = 30.0, what: str = "spans"
    ) -> list[Span]:
        """Block until `predicate(all spans so far)` is true; return the spans, or fail with what arrived."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while not predicate(list(self._spans)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    names = sorted({f"{s.kind} {s.name}" for s in self._spans})
                    raise AssertionError(
                        f"timed out after {timeout}s waiting for {what}; {len(self._spans)} spans arrived: "
                        f"{names}; receiver errors: {self.errors}"
                    )
                self._condition.wait(remaining)
            return list(self._spans)

    # --- HTTP ---

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?", 1)[0]
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length)
        headers = {key.lower(): value for key, value in handler.headers.items()}
        self.requests.append((path, headers))
        if path not in _SIGNALS:
            self._reply(handler, 404, b"", "text/plain")
            return
        if headers.get("content-type", "").split(";")[0].strip() != "application/x-protobuf":
            self.errors.append(f"{path}: unsupported content type {headers.get('content-type')!r}")
            self._reply(handler, 415, b"", "text/plain")
            return
        try:
            encoding = headers.get("content-encoding", "").lower()
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            request_type, response_type = _SIGNALS[path]
            message = request_type.FromString(body)
        except (OSError, zlib.error, DecodeError) as error:
            self.errors.append(f"{path}: undecodable body: {error!r}")
            self._reply(handler, 400, b"", "text/plain")
            return
        with self._condition:
            if isinstance(message, ExportTraceServiceRequest):
                self._spans.extend(decode_spans(message))
            elif isinstance(message, ExportMetricsServiceRequest):
                self.metrics.append(message)
            elif isinstance(message, ExportLogsServiceRequest):
                self.logs.append(message)
            self._condition.notify_all()
        self._reply(handler, 200, response_type().SerializeToString(), "application/x-protobuf")

    @staticmethod
    def _reply(handler: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
