"""OTLP export of the request spans (telemetry/otlp.py): the SDK encoder's bytes, delivered."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from {{ cookiecutter.package_name }}.telemetry.otlp import (
    MAX_EXPORT_BATCH,
    OtlpSpanExporter,
    encode_resource,
    encode_span,
    encode_spans,
    traces_endpoint,
)

from otlp_receiver import OtlpReceiver, start_receiver, unused_port

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SAMPLED = TraceFlags(TraceFlags.SAMPLED)
RESOURCE = Resource.create(
    {"service.name": "svc", "process.pid": 42, "ratio": 0.5, "debug": True, "tags": ("a", "b")}
)


def request_spans() -> list[ReadableSpan]:
    """A remote-parented SERVER span that failed, and a log inside it: every field the path sets."""
    caller = SpanContext(
        TRACE_ID,
        0x00F067AA0BA902B7,
        is_remote=True,
        trace_flags=SAMPLED,
        trace_state=TraceState([("vendor", "v1")]),
    )
    server_context = SpanContext(TRACE_ID, 0x1111, False, SAMPLED, caller.trace_state)
    server = ReadableSpan(
        name="GET /items/{item_id}",
        context=server_context,
        parent=caller,
        resource=RESOURCE,
        attributes={
            "text": "ünïcode",
            "negative": -3,
            "large": 2**62,
            "ratio": 1.5,
            "no": False,
            "yes": True,
            "list": ("x", "y"),
        },
        events=(Event("exception", {"exception.type": "RuntimeError", "exception.count": 2}, 7),),
        kind=SpanKind.SERVER,
        status=Status(StatusCode.ERROR, "boom"),
        start_time=1_700_000_000_000_000_000,
        end_time=1_700_000_000_050_000_000,
        instrumentation_scope=InstrumentationScope("svc.middleware"),
    )
    log = ReadableSpan(
        name="item.fetched",
        context=SpanContext(TRACE_ID, 0x2222, False, SAMPLED),
        parent=server_context,
        resource=RESOURCE,
        attributes={"logfire.span_type": "log", "logfire.level_num": 9, "item_id": 1},
        kind=SpanKind.INTERNAL,
        start_time=1_700_000_000_010_000_000,
        end_time=1_700_000_000_010_000_000,
        instrumentation_scope=InstrumentationScope("logfire.stdlib.logging", "5.2.0"),
    )
    return [log, server, log]


def test_encoding_decodes_to_what_the_sdk_encoder_sends() -> None:
    spans = request_spans()

    ours = ExportTraceServiceRequest.FromString(encode_spans(spans, encode_resource(RESOURCE)))
    theirs = ExportTraceServiceRequest.FromString(sdk_encode_spans(spans).SerializeToString())

    assert ours == theirs
    # Twice: the second pass comes from the attribute cache.
    again = encode_spans(spans, encode_resource(RESOURCE))
    assert ExportTraceServiceRequest.FromString(again) == ours


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    receiver = start_receiver()
    yield receiver
    receiver.server.shutdown()


def test_spans_reach_the_endpoint_with_headers_and_gzip(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url + "/")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Bearer%20abc,x-team=obs")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    exporter = OtlpSpanExporter.from_environment(RESOURCE)
    assert exporter is not None
    try:
        for span in request_spans():
            exporter.on_end(span)
        assert exporter.force_flush(5000)
    finally:
        exporter.shutdown()

    [(path, headers, _)] = receiver.requests
    assert path == "/v1/traces"
    assert headers["authorization"] == "Bearer abc"
    assert headers["x-team"] == "obs"
    assert headers["content-encoding"] == "gzip"
    assert headers["content-type"] == "application/x-protobuf"
    names = [s.name for s in receiver.spans()]
    assert names == ["item.fetched", "item.fetched", "GET /items/{item_id}"]
    assert receiver.spans()[0].resource["service.name"] == "svc"


def test_the_traces_endpoint_variable_is_used_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    assert traces_endpoint() == "http://collector:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4318/custom")
    assert traces_endpoint() == "http://traces:4318/custom"
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert traces_endpoint() is None
    assert OtlpSpanExporter.from_environment(RESOURCE) is None


def test_a_busy_collector_is_retried(receiver: OtlpReceiver) -> None:
    receiver.statuses.extend([503, 429])
    exporter = OtlpSpanExporter(receiver.url + "/v1/traces", RESOURCE, timeout=5)
    try:
        exporter.on_end(request_spans()[1])
        assert exporter.force_flush(5000)
    finally:
        exporter.shutdown()

    assert [s.name for s in receiver.spans()] == ["GET /items/{item_id}"]
    assert exporter.dropped == 0


def test_a_rejected_batch_is_dropped_not_retried(receiver: OtlpReceiver) -> None:
    receiver.statuses.append(400)
    exporter = OtlpSpanExporter(receiver.url + "/v1/traces", RESOURCE, timeout=5)
    try:
        exporter.on_end(request_spans()[1])
        assert not exporter.force_flush(5000)
        assert exporter.dropped == 1
        exporter.on_end(request_spans()[0])
        assert exporter.force_flush(5000)
    finally:
        exporter.shutdown()

    assert [s.name for s in receiver.spans()] == ["item.fetched"]


def test_a_span_that_fails_to_encode_is_dropped_and_the_rest_are_sent(
    receiver: OtlpReceiver,
) -> None:
    def broken(facts: object) -> bytes:
        raise RuntimeError("a bug in a span encoder")

    server = request_spans()[1]
    scope = server.instrumentation_scope
    assert scope is not None
    exporter = OtlpSpanExporter(receiver.url + "/v1/traces", RESOURCE, timeout=5)
    try:
        exporter.on_end_later(scope, broken, server)
        exporter.on_end_later(scope, encode_span, server)
        assert exporter.force_flush(5000)
    finally:
        exporter.shutdown()

    assert [s.name for s in receiver.spans()] == ["GET /items/{item_id}"]
    assert exporter.dropped == 1


def test_full_batches_are_sent_at_once_and_the_rest_waits_for_the_interval(
    receiver: OtlpReceiver,
) -> None:
    server = request_spans()[1]
    scope = server.instrumentation_scope
    assert scope is not None
    exporter = OtlpSpanExporter(receiver.url + "/v1/traces", RESOURCE, interval=60)
    try:
        for _ in range(2 * MAX_EXPORT_BATCH + 3):
            exporter.on_end_later(scope, encode_span, server)
        deadline = time.monotonic() + 10
        while len(receiver.requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # anything sent beyond the two full batches would have arrived by now
        sent = [
            len(request.resource_spans[0].scope_spans[0].spans) for *_, request in receiver.requests
        ]
    finally:
        exporter.shutdown()

    assert sent == [MAX_EXPORT_BATCH, MAX_EXPORT_BATCH]
    assert len(receiver.spans()) == 2 * MAX_EXPORT_BATCH + 3  # the rest: sent by shutdown


def test_an_unreachable_collector_costs_a_bounded_wait_and_raises_nothing() -> None:
    exporter = OtlpSpanExporter(f"http://127.0.0.1:{unused_port()}/v1/traces", RESOURCE, timeout=1)
    try:
        for span in request_spans():
            exporter.on_end(span)
        started = time.monotonic()
        assert not exporter.force_flush(1000)
        waited = time.monotonic() - started
    finally:
        exporter.shutdown()

    assert exporter.dropped == 3
    assert waited < 3


def test_an_endpoint_that_is_not_a_url_is_refused() -> None:
    with pytest.raises(ValueError, match="http"):
        OtlpSpanExporter("collector:4318", RESOURCE)
