"""Telemetry contract: the direct path (telemetry/spans.py) exports what Logfire's path exports."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient
from logfire.testing import CaptureLogfire
from opentelemetry import baggage, context
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    INVALID_SPAN_CONTEXT,
    SpanContext,
    StatusCode,
    TraceFlags,
    TraceState,
)

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.settings import RequestSpanPath
from {{ cookiecutter.package_name }}.telemetry.otlp import (
    OtlpSpanExporter,
    encode_resource,
    encode_spans,
)
from {{ cookiecutter.package_name }}.telemetry.spans import RequestSpans

from conftest import (
    TENANT_ATTRIBUTES,
    TENANT_HEADERS,
    finished_spans,
    logs_named,
    make_settings,
    server_spans,
)
from otlp_receiver import OtlpReceiver, ReceivedSpan, start_receiver

logger = logging.getLogger("tests.request_spans")


def app_for(
    capfire: CaptureLogfire,
    path: RequestSpanPath | None = None,
    *,
    exporter_alone: bool = False,
    **settings: Any,
) -> FastAPI:
    """The service with probe routes; its spans reach `capfire` unless `exporter_alone`."""
    processors = [] if exporter_alone else [SimpleSpanProcessor(capfire.exporter)]
    app = create_app(
        make_settings(request_spans=path, **settings), additional_span_processors=processors
    )

    async def formatted() -> dict[str, str]:
        logger.info("probe.formatted %s", "value")
        return {}

    async def error_level() -> dict[str, str]:
        logger.error("probe.error_level", extra={"attempt": 3, "ratio": 0.5, "retry": False})
        return {}

    async def secrets() -> dict[str, str]:
        logger.info("probe.secrets", extra={"password": "hunter2", "note": "my token is abc123"})
        return {}

    async def unavailable() -> dict[str, str]:
        raise HTTPException(503, detail="try later")

    async def failing() -> dict[str, str]:
        try:
            raise KeyError("missing")
        except KeyError:
            logger.exception("probe.failed")
        raise RuntimeError("boom")

    app.add_api_route("/probe/formatted", formatted)
    app.add_api_route("/probe/error-level", error_level)
    app.add_api_route("/probe/secrets", secrets)
    app.add_api_route("/probe/unavailable", unavailable)
    app.add_api_route("/probe/failing", failing)
    return app


def shape(span: ReadableSpan) -> dict[str, Any]:
    """What the exported span says, without what differs from one run to the next."""
    return {
        "name": span.name,
        "kind": span.kind,
        "scope": span.instrumentation_scope.name if span.instrumentation_scope else None,
        "status": (span.status.status_code, span.status.description),
        "attributes": dict(span.attributes or {}),
        "events": [(event.name, sorted(event.attributes or {})) for event in span.events],
        "has_parent": span.parent is not None,
    }


def request_shapes(
    capfire: CaptureLogfire, path: RequestSpanPath, url: str, method: str = "GET"
) -> list[dict[str, Any]]:
    capfire.exporter.clear()
    with TestClient(app_for(capfire, path), raise_server_exceptions=False) as client:
        client.request(method, url, headers=TENANT_HEADERS)
    spans = [s for s in finished_spans(capfire) if s.parent is not None or s.kind.name == "SERVER"]
    return sorted((shape(span) for span in spans), key=lambda s: str(s["name"]))


@pytest.mark.parametrize(
    "url",
    [
        "/items/2",
        "/items/999",
        "/no/such/path",
        "/probe/formatted",
        "/probe/error-level",
        "/probe/unavailable",
        "/probe/failing",
    ],
)
def test_both_paths_export_the_same_spans(capfire: CaptureLogfire, url: str) -> None:
    direct = request_shapes(capfire, "direct", url)
    through_logfire = request_shapes(capfire, "logfire", url)

    assert direct == through_logfire
    assert direct  # a request always has its SERVER span


def test_both_paths_keep_a_method_the_conventions_do_not_know(capfire: CaptureLogfire) -> None:
    direct = request_shapes(capfire, "direct", "/items/2", method="BREW")
    through_logfire = request_shapes(capfire, "logfire", "/items/2", method="BREW")

    assert direct == through_logfire
    [server] = direct
    assert server["name"] == "HTTP /items/{item_id}"
    assert server["attributes"]["http.request.method"] == "_OTHER"
    assert server["attributes"]["http.request.method_original"] == "BREW"
    assert server["attributes"]["logfire.msg"] == "BREW /items/2"


def test_the_log_span_is_a_child_of_the_server_span(capfire: CaptureLogfire) -> None:
    with TestClient(app_for(capfire, "direct")) as client:
        client.get("/items/2", headers=TENANT_HEADERS)

    [server] = server_spans(capfire)
    [log] = logs_named(capfire, "item.fetched")
    assert log.parent is not None
    assert (log.parent.trace_id, log.parent.span_id) == (
        server.context.trace_id,
        server.context.span_id,
    )
    assert {k: (log.attributes or {})[k] for k in TENANT_ATTRIBUTES} == TENANT_ATTRIBUTES
    assert (log.attributes or {})["item_id"] == 2


def test_direct_log_spans_redact_credentials(capfire: CaptureLogfire) -> None:
    with TestClient(app_for(capfire, "direct")) as client:
        client.get("/probe/secrets")

    [log] = logs_named(capfire, "probe.secrets")
    attributes = dict(log.attributes or {})
    assert attributes["password"] == attributes["note"] == "[redacted]"
    exported = str([dict(s.attributes or {}) for s in finished_spans(capfire)])
    assert "hunter2" not in exported
    assert "abc123" not in exported


def test_a_path_that_looks_like_a_credential_is_redacted(capfire: CaptureLogfire) -> None:
    with TestClient(app_for(capfire, "direct")) as client:
        client.get("/reset-password/abc123")

    [server] = server_spans(capfire)
    attributes = dict(server.attributes or {})
    assert attributes["url.path"] == "[redacted]"
    assert "abc123" not in str(attributes)


def test_an_escaping_exception_is_recorded_on_the_server_span(capfire: CaptureLogfire) -> None:
    with TestClient(app_for(capfire, "direct"), raise_server_exceptions=False) as client:
        assert client.get("/probe/failing").status_code == 500

    [server] = server_spans(capfire)
    assert server.status.status_code is StatusCode.ERROR
    [event] = server.events
    assert event.name == "exception"
    assert (event.attributes or {})["exception.type"] == "RuntimeError"
    [failed] = logs_named(capfire, "probe.failed")
    assert failed.parent is not None
    assert failed.parent.span_id == server.context.span_id
    assert [e.name for e in failed.events] == ["exception"]


def test_development_and_an_explicit_choice_keep_logfires_path(capfire: CaptureLogfire) -> None:
    assert app_for(capfire, None, environment="development").state.request_spans is None
    assert app_for(capfire, "logfire").state.request_spans is None
    assert app_for(capfire, None).state.request_spans is not None


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    receiver = start_receiver()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    yield receiver
    receiver.server.shutdown()


def test_a_traced_request_reaches_the_collector(
    capfire: CaptureLogfire, receiver: OtlpReceiver
) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    traceparent = f"00-{trace_id}-00f067aa0ba902b7-01"
    with TestClient(app_for(capfire)) as client:  # leaving it runs the shutdown flush
        client.get("/items/2", headers={**TENANT_HEADERS, "traceparent": traceparent})

    received = receiver.spans()
    [server] = [s for s in received if s.name == "GET /items/{item_id}"]
    [log] = [s for s in received if s.name == "item.fetched"]
    assert server.span.trace_id.hex() == trace_id
    assert server.span.parent_span_id.hex() == "00f067aa0ba902b7"
    assert server.attributes["http.response.status_code"] == 200
    assert {k: server.attributes[k] for k in TENANT_ATTRIBUTES} == TENANT_ATTRIBUTES
    assert log.span.parent_span_id == server.span.span_id
    assert log.attributes["item_id"] == 2
    assert server.resource["service.name"] == "{{ cookiecutter.project_slug }}"


def received_shape(span: ReceivedSpan) -> tuple[Any, ...]:
    """What the collector got, without ids and times (as `shape`)."""
    return (
        span.scope,
        span.name,
        span.span.kind,
        (span.span.status.code, span.span.status.message),
        sorted(span.attributes.items()),
        [(event.name, sorted(a.key for a in event.attributes)) for event in span.span.events],
        bool(span.span.parent_span_id),
    )


@pytest.mark.parametrize("url", ["/items/2", "/probe/secrets", "/probe/failing"])
def test_spans_the_exporter_builds_later_are_the_spans_built_at_once(
    capfire: CaptureLogfire, receiver: OtlpReceiver, url: str
) -> None:
    # With another processor the request's spans are built as the request ends; with the OTLP
    # exporter alone, in its thread when their batch is sent (spans.py, `_hand_over`).
    sampled = {**TENANT_HEADERS, "traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01"}
    # The request's own spans: Logfire's exporter sends others there too (the Pydantic plugin's).
    scopes = {
        "{{ cookiecutter.package_name }}.telemetry.middleware",
        "logfire.stdlib.logging",
    }
    shapes = []
    for exporter_alone in (False, True):
        with receiver.lock:
            receiver.requests.clear()
        app = app_for(capfire, "direct", exporter_alone=exporter_alone)
        with TestClient(app, raise_server_exceptions=False) as client:
            client.get(url, headers=sampled)
        received = [
            span
            for span in receiver.spans()
            if span.scope in scopes and span.span.trace_id.hex() == "ab" * 16
        ]
        shapes.append(sorted(received_shape(span) for span in received))
    at_once, later = shapes
    assert len(later) >= 2  # the SERVER span and a log
    assert later == at_once


def test_spans_encoded_in_the_exporters_thread_are_the_spans_built_at_once(
    receiver: OtlpReceiver,
) -> None:
    # The exporter alone gets the facts and writes the protobuf from them (spans.py, `_hand_over`)
    # instead of encoding a `ReadableSpan`. Compared message by message: ids, times, attributes
    # and their order, status and flags.
    resource = Resource.create({"service.name": "svc"})
    exporter = OtlpSpanExporter(f"{receiver.url}/v1/traces", resource, timeout=5, interval=60)
    captured = InMemorySpanExporter()
    encoded_later = RequestSpans(
        resource, [], exporter=exporter, server_scope="svc.middleware", min_level=logging.INFO
    )
    built_at_once = RequestSpans(
        resource,
        [SimpleSpanProcessor(captured)],
        server_scope="svc.middleware",
        min_level=logging.INFO,
    )
    caller = SpanContext(
        0x4BF92F3577B34DA6A3CE929D0E0E4736,
        0x00F067AA0BA902B7,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "v1")]),
    )
    server = SpanContext(caller.trace_id, 0x1111, False, caller.trace_flags, caller.trace_state)
    requests: list[tuple[SpanContext, str, int, str | None, str, str, dict[str, str]]] = [
        (caller, "GET", 200, "/items/{item_id}", "/items/2", "1.1", TENANT_ATTRIBUTES),
        (INVALID_SPAN_CONTEXT, "GET", 404, "/items/{item_id}", "/items/999", "2", {}),
        (caller, "GET", 503, "/items/{item_id}", "/items/1", "1.1", {"account_id": "acct-1"}),
        (caller, "GET", 404, None, "/reset/password-token/abc", "1.1", {}),
        (caller, "BREW", 405, "/items/{item_id}", "/items/3", "1.1", {}),
    ]
    logs: list[tuple[int, dict[str, str | int | float | bool]]] = [
        (logging.INFO, {"item_id": 2, "note": "my token is abc123", "ratio": 0.5, "retry": False}),
        (logging.WARNING, {"password": "hunter2", "session_id": "from-the-field"}),
        (logging.ERROR, {}),
        (logging.DEBUG, {"below": "the minimum level"}),
    ]
    in_baggage = context.get_current()
    for key, value in {**TENANT_ATTRIBUTES, "region": "eu"}.items():
        in_baggage = baggage.set_baggage(key, value, in_baggage)
    for request_spans in (encoded_later, built_at_once):
        for parent, method, status, route, path, http_version, tenant in requests:
            known = method == "GET"
            request_spans.end_server_span(
                server if parent.is_valid else SpanContext(7, 8, False, caller.trace_flags),
                parent,
                method=method if known else "_OTHER",
                method_original=None if known else method,
                route=route,
                status=status,
                path=path,
                scheme="https",
                http_version=http_version,
                tenant=tenant,
                start=1_700_000_000_000_000_000,
                end=1_700_000_000_003_000_000,
                error=None,
            )
        random.seed(7)  # the log spans' ids
        token = context.attach(in_baggage)
        try:
            for level, fields in logs:
                request_spans.log_event(
                    level,
                    "probe.logged",
                    fields,
                    parent=server,
                    logger="tests.request_spans",
                    created=1_700_000_000.001,
                    filepath="/srv/probe.py",
                    lineno=12,
                    function="probe",
                )
        finally:
            context.detach(token)
    assert exporter.force_flush(5000)
    exporter.shutdown()

    body = encode_spans(captured.get_finished_spans(), encode_resource(resource))
    built = [
        span.SerializeToString()
        for resource_spans in ExportTraceServiceRequest.FromString(body).resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]
    encoded = [received.span.SerializeToString() for received in receiver.spans()]
    assert len(built) == len(requests) + len(logs) - 1  # the debug log is below the minimum
    assert sorted(encoded) == sorted(built)
