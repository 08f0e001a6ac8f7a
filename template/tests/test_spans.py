"""Telemetry contract: spans. One SERVER span per request, named by route template."""

from __future__ import annotations

import json

from fastapi import FastAPI, HTTPException, status
from fastapi.testclient import TestClient
from logfire.testing import CaptureLogfire
from opentelemetry.trace import StatusCode

from conftest import (
    TENANT_ATTRIBUTES,
    TENANT_HEADERS,
    finished_spans,
    logs_named,
    scrape,
    server_spans,
)


def test_one_server_span_named_by_route_template(
    client: TestClient, capfire: CaptureLogfire
) -> None:
    client.get("/items/1")

    [span] = server_spans(capfire)
    assert span.name == "GET /items/{item_id}"
    attributes = dict(span.attributes or {})
    assert attributes["http.request.method"] == "GET"
    assert attributes["http.route"] == "/items/{item_id}"
    assert attributes["http.response.status_code"] == 200
    assert attributes["url.path"] == "/items/1"
    assert attributes["url.scheme"] == "http"
    assert attributes["network.protocol.version"] == "1.1"
    assert "error.type" not in attributes
    assert span.status.status_code is StatusCode.UNSET


def test_the_response_names_its_trace(client: TestClient, capfire: CaptureLogfire) -> None:
    response = client.get("/items/1")

    [span] = server_spans(capfire)
    assert response.headers["X-Trace-Id"] == format(span.context.trace_id, "032x")


def test_a_crash_response_names_its_trace(app: FastAPI, capfire: CaptureLogfire) -> None:
    def boom() -> None:
        raise RuntimeError("boom")

    app.add_api_route("/boom", boom)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")

    # Starlette's own 500 (the exception escaped every handler), with the trace id.
    assert (response.status_code, response.text) == (500, "Internal Server Error")
    [span] = [s for s in server_spans(capfire) if s.name == "GET /boom"]
    assert response.headers["X-Trace-Id"] == format(span.context.trace_id, "032x")


def test_resource_names_the_service(client: TestClient, capfire: CaptureLogfire) -> None:
    client.get("/items/1")

    [span] = server_spans(capfire)
    resource = span.resource.attributes
    assert resource["service.name"] == "{{ cookiecutter.project_slug }}"
    assert resource["service.version"] == "0.1.0"
    assert resource["deployment.environment.name"] == "test"


def test_not_found_keeps_the_route(client: TestClient, capfire: CaptureLogfire) -> None:
    client.get("/items/999")

    [span] = server_spans(capfire)
    assert span.name == "GET /items/{item_id}"
    assert (span.attributes or {})["http.response.status_code"] == 404
    # A client error is not the server failing: no error.type, no error status.
    assert "error.type" not in (span.attributes or {})
    assert span.status.status_code is StatusCode.UNSET


def test_a_method_the_conventions_do_not_know_is_other(
    client: TestClient, capfire: CaptureLogfire
) -> None:
    client.request("BREW", "/items/1")

    [span] = server_spans(capfire)
    assert span.name == "HTTP /items/{item_id}"  # the conventions name it so
    attributes = dict(span.attributes or {})
    assert attributes["http.request.method"] == "_OTHER"
    assert attributes["http.request.method_original"] == "BREW"


def test_unmatched_path_is_named_by_method_only(
    client: TestClient, capfire: CaptureLogfire
) -> None:
    client.get("/no/such/path")

    [span] = server_spans(capfire)
    assert span.name == "GET"
    assert "http.route" not in (span.attributes or {})


def test_item_fetched_event_is_logged_inside_the_request(
    client: TestClient, capfire: CaptureLogfire
) -> None:
    client.get("/items/2", headers=TENANT_HEADERS)

    [server] = server_spans(capfire)
    [event] = logs_named(capfire, "item.fetched")
    attributes = dict(event.attributes or {})
    assert attributes["item_id"] == 2
    assert event.context.trace_id == server.context.trace_id
    assert {k: attributes[k] for k in TENANT_ATTRIBUTES} == TENANT_ATTRIBUTES


def test_tenant_attributes_on_the_server_span(client: TestClient, capfire: CaptureLogfire) -> None:
    client.get("/items/1", headers=TENANT_HEADERS)

    [span] = server_spans(capfire)
    attributes = dict(span.attributes or {})
    # session_id survives Logfire's scrubbing, which would otherwise redact anything "session".
    assert {k: attributes[k] for k in TENANT_ATTRIBUTES} == TENANT_ATTRIBUTES


def test_health_and_metrics_are_not_traced(client: TestClient, capfire: CaptureLogfire) -> None:
    assert client.get("/healthz").status_code == 200
{%- if cookiecutter.with_redis %}
    # 503 without the Redis of TEST_REDIS_URL: ready or not, the probe is not traced.
    assert client.get("/readyz").status_code in {200, 503}
{%- else %}
    assert client.get("/readyz").status_code == 200
{%- endif %}
    assert scrape(client).status_code == 200

    assert server_spans(capfire) == []


def test_server_error_marks_the_span(app: FastAPI, capfire: CaptureLogfire) -> None:
    def boom() -> None:
        raise RuntimeError("boom")

    app.add_api_route("/boom", boom)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/boom").status_code == 500

    [span] = [s for s in server_spans(capfire) if s.name == "GET /boom"]
    assert (span.attributes or {})["http.response.status_code"] == 500
    # The semantic conventions' error.type: the class of the exception that escaped.
    assert (span.attributes or {})["error.type"] == "RuntimeError"
    assert span.status.status_code is StatusCode.ERROR


def test_a_server_error_response_is_typed_by_its_status(
    app: FastAPI, capfire: CaptureLogfire
) -> None:
    def unavailable() -> None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail="try later")

    app.add_api_route("/unavailable", unavailable)
    with TestClient(app) as client:
        assert client.get("/unavailable").status_code == 503

    [span] = [s for s in server_spans(capfire) if s.name == "GET /unavailable"]
    assert (span.attributes or {})["error.type"] == "503"
    assert span.status.status_code is StatusCode.ERROR


def test_secrets_never_leave_the_process(client: TestClient, capfire: CaptureLogfire) -> None:
    client.get(
        "/items/1?api_key=query-secret&token=query-token",
        headers={
            "Authorization": "Bearer header-secret",
            "Cookie": "sid=cookie-secret",
            "X-Api-Key": "apikey-secret",
            **TENANT_HEADERS,
        },
    )

    exported = json.dumps(
        [{"name": s.name, "attributes": dict(s.attributes or {})} for s in finished_spans(capfire)],
        default=str,
    )
    secrets = ("query-secret", "query-token", "header-secret", "cookie-secret", "apikey-secret")
    for secret in secrets:
        assert secret not in exported
    assert "sess-123" in exported


def test_incoming_baggage_cannot_set_attributes(
    client: TestClient, capfire: CaptureLogfire
) -> None:
    client.get("/items/1", headers={"baggage": "account_id=evil,injected=yes"})

    for span in finished_spans(capfire):
        attributes = dict(span.attributes or {})
        assert "injected" not in attributes
        assert attributes.get("account_id") != "evil"


def test_incoming_traceparent_continues_the_trace(
    client: TestClient, capfire: CaptureLogfire
) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    client.get("/items/1", headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})

    [span] = server_spans(capfire)
    assert format(span.context.trace_id, "032x") == trace_id
    assert span.parent is not None
    assert format(span.parent.span_id, "016x") == "00f067aa0ba902b7"
