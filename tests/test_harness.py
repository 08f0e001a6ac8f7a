"""The test harness itself: the OTLP receiver decodes real protobuf, the process helper boots,
reports and stops processes as promised. Cheap, and it keeps the boot tests' failures meaningful
(a broken receiver must not look like a service that emits nothing).
"""

from __future__ import annotations

import gzip
import json
import signal
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from helpers.otlp_receiver import OtlpReceiver
from helpers.process import ServiceProcess, free_port, service_env
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

PROTOBUF = {"Content-Type": "application/x-protobuf"}


def _kv(key: str, value: AnyValue) -> KeyValue:
    return KeyValue(key=key, value=value)


def _trace_request() -> ExportTraceServiceRequest:
    span = Span(
        trace_id=bytes.fromhex("0af7651916cd43dd8448eb211c80319c"),
        span_id=bytes.fromhex("b7ad6b7169203331"),
        parent_span_id=b"",
        name="GET /items/{item_id}",
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=1,
        end_time_unix_nano=2,
        attributes=[
            _kv("http.route", AnyValue(string_value="/items/{item_id}")),
            _kv("http.response.status_code", AnyValue(int_value=200)),
            _kv("ratio", AnyValue(double_value=0.5)),
            _kv("flag", AnyValue(bool_value=True)),
            _kv("tags", AnyValue(array_value=ArrayValue(values=[AnyValue(string_value="a")]))),
        ],
        status=Status(code=Status.STATUS_CODE_ERROR, message="boom"),
    )
    child = Span(
        trace_id=span.trace_id,
        span_id=bytes.fromhex("00f067aa0ba902b7"),
        parent_span_id=span.span_id,
        name="item.fetched",
        kind=Span.SPAN_KIND_INTERNAL,
        attributes=[_kv("logfire.span_type", AnyValue(string_value="log"))],
    )
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource={"attributes": [_kv("service.name", AnyValue(string_value="my-service"))]},
                scope_spans=[ScopeSpans(scope={"name": "tests"}, spans=[span, child])],
            )
        ]
    )


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
def test_receiver_decodes_protobuf_traces(gzipped: bool) -> None:
    body = _trace_request().SerializeToString()
    headers = dict(PROTOBUF)
    if gzipped:
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    with OtlpReceiver() as receiver:
        response = httpx.post(f"{receiver.endpoint}/v1/traces", content=body, headers=headers)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-protobuf"
        ExportTraceServiceResponse.FromString(response.content)  # a valid (empty) response
        spans = receiver.wait_for(lambda spans: len(spans) == 2, timeout=5)
    server, log = spans
    assert (server.name, server.kind, server.parent) == ("GET /items/{item_id}", "SERVER", None)
    assert server.trace_id == "0af7651916cd43dd8448eb211c80319c" and server.span_id == "b7ad6b7169203331"
    assert server.attributes == {
        "http.route": "/items/{item_id}",
        "http.response.status_code": 200,
        "ratio": 0.5,
        "flag": True,
        "tags": ("a",),
    }
    assert (server.status_code, server.status_message) == ("ERROR", "boom")
    assert server.resource == {"service.name": "my-service"} and server.scope == "tests"
    assert log.parent == server.span_id and log.is_log and not server.is_log


def test_receiver_accepts_metrics_and_refuses_what_it_cannot_decode() -> None:
    with OtlpReceiver() as receiver:
        metrics = httpx.post(
            f"{receiver.endpoint}/v1/metrics",
            content=ExportMetricsServiceRequest().SerializeToString(),
            headers=PROTOBUF,
        )
        as_json = httpx.post(
            f"{receiver.endpoint}/v1/traces", content=b"{}", headers={"Content-Type": "application/json"}
        )
        garbage = httpx.post(f"{receiver.endpoint}/v1/traces", content=b"\xff\xff\xff", headers=PROTOBUF)
        unknown = httpx.post(f"{receiver.endpoint}/v1/other", content=b"", headers=PROTOBUF)
        assert (metrics.status_code, as_json.status_code, garbage.status_code, unknown.status_code) == (
            200,
            415,
            400,
            404,
        )
        assert len(receiver.metrics) == 1 and receiver.spans == []
        assert len(receiver.errors) == 2
        with pytest.raises(AssertionError, match="0 spans arrived"):
            receiver.wait_for(lambda spans: bool(spans), timeout=0.2)


SERVER = textwrap.dedent(
    """
    import json, os, signal, sys
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            names = ("RUN_MODE", "ENVIRONMENT", "LOGFIRE_TOKEN", "OTEL_EXPORTER_OTLP_ENDPOINT")
            body = json.dumps({k: os.environ.get(k) for k in names}).encode()
            self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
            self.wfile.write(body)

    def stop(*_):
        print("graceful stop", flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    print("booting", flush=True)
    HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
    """
)


def test_process_boots_waits_and_stops_with_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = service_env(
        {"PATH": "/usr/bin:/bin", "LOGFIRE_TOKEN": "secret"}, port=port, otlp_endpoint="http://x"
    )
    with ServiceProcess([sys.executable, "-c", SERVER], cwd=tmp_path, env=env, port=port) as service:
        service.wait_ready(timeout=30)
        seen = json.loads(httpx.get(service.url + "/readyz").text)
        stopped = service.stop()
    assert seen == {
        "RUN_MODE": "production",
        "ENVIRONMENT": "e2e",
        "LOGFIRE_TOKEN": None,
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x",
    }
    assert stopped.returncode == 0 and "booting" in stopped.stdout and "graceful stop" in stopped.stdout


def test_process_failure_shows_its_output(tmp_path: Path) -> None:
    crash = "import sys; print('config error: PORT busy', file=sys.stderr); sys.exit(3)"
    service = ServiceProcess([sys.executable, "-c", crash], cwd=tmp_path, env={}, port=free_port())
    expected = r"(?s)exited before it was ready.*exit code 3.*PORT busy"
    with service, pytest.raises(AssertionError, match=expected):
        service.wait_ready(timeout=30)


def test_process_is_killed_when_the_test_fails(tmp_path: Path) -> None:
    ignore_term = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); "
        "time.sleep(600)"
    )
    service = ServiceProcess([sys.executable, "-c", ignore_term], cwd=tmp_path, env={}, port=free_port())
    with pytest.raises(RuntimeError), service:
        raise RuntimeError("a failing test")
    assert service.process is not None and service.process.returncode == -signal.SIGKILL
