"""Telemetry contract: tenant ids reach every span and log of the request, wherever code runs."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from logfire.testing import CaptureLogfire
from opentelemetry import baggage, context

from {{ cookiecutter.package_name }}.telemetry.tenant import (
    BAGGAGE_KEY,
    with_tenant_baggage,
)

from conftest import (
    TENANT_ATTRIBUTES,
    TENANT_HEADERS,
    add_probe_routes,
    finished_spans,
    logs_named,
    scrape,
    server_spans,
)


def _tenant(span_attributes: object) -> dict[str, object]:
    attributes = dict(span_attributes or {})  # type: ignore[call-overload]
    return {k: attributes.get(k) for k in TENANT_ATTRIBUTES}


def test_tenant_ids_reach_code_outside_the_request_task(
    app: FastAPI, capfire: CaptureLogfire
) -> None:
    add_probe_routes(app)
    probes = {
        "/probe/threadpool": "probe.threadpool",
        "/probe/to-thread": "probe.to_thread",
        "/probe/background": "probe.background",
        "/probe/span": "probe.logfire",
{%- if cookiecutter.with_loguru %}
        "/probe/loguru": "probe.loguru",
{%- endif %}
    }
    with TestClient(app) as client:
        for path in probes:
            assert client.get(path, headers=TENANT_HEADERS).status_code == 200

    for path, message in probes.items():
        [log] = logs_named(capfire, message)
        assert _tenant(log.attributes) == TENANT_ATTRIBUTES, path
        [server] = [s for s in server_spans(capfire) if s.name == f"GET {path}"]
        assert log.context.trace_id == server.context.trace_id, path
    [span] = [s for s in finished_spans(capfire) if s.name == "probe.span"]
    assert _tenant(span.attributes) == TENANT_ATTRIBUTES
{%- if cookiecutter.with_loguru %}
    [loguru_log] = logs_named(capfire, "probe.loguru")
    assert (loguru_log.attributes or {})["step"] == "one"
{%- endif %}


def test_tenant_ids_do_not_leak_into_the_next_request(
    client: TestClient, capfire: CaptureLogfire
) -> None:
    client.get("/items/1", headers=TENANT_HEADERS)
    client.get("/items/2")

    first, second = logs_named(capfire, "item.fetched")
    assert _tenant(first.attributes) == TENANT_ATTRIBUTES
    assert _tenant(second.attributes) == dict.fromkeys(TENANT_ATTRIBUTES)


def test_invalid_tenant_header_is_dropped_and_counted(
    client: TestClient, capfire: CaptureLogfire
) -> None:
    response = client.get(
        "/items/1",
        headers={"X-Account-Id": "evil value; drop table", "X-Session-Id": "s" * 129},
    )

    assert response.status_code == 200
    [span] = server_spans(capfire)
    assert "account_id" not in (span.attributes or {})
    assert "session_id" not in (span.attributes or {})
    metrics = scrape(client).text
    assert 'tenant_header_rejections_total{header="account_id"} 1.0' in metrics
    assert 'tenant_header_rejections_total{header="session_id"} 1.0' in metrics
    assert 'tenant_requests_total{account_id="none",outcome="success"} 1.0' in metrics


def test_header_names_are_configurable(capfire: CaptureLogfire) -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from {{ cookiecutter.package_name }}.app import create_app

    from conftest import make_settings

    app = create_app(
        make_settings(tenant_header_account_id="X-Tenant"),
        additional_span_processors=[SimpleSpanProcessor(capfire.exporter)],
    )
    with TestClient(app) as client:
        client.get("/items/1", headers={"X-Tenant": "t-1", "X-Account-Id": "ignored"})

    [span] = server_spans(capfire)
    assert (span.attributes or {})["account_id"] == "t-1"


def test_tenant_baggage_is_what_set_baggage_makes() -> None:
    assert BAGGAGE_KEY is not None, (
        "OTel keeps baggage differently now: with_tenant_baggage falls back to set_baggage"
    )
    parent = baggage.set_baggage("existing", "kept", context.Context())
    ids = {"account_id": "acct-1", "session_id": "sess-1", "existing": "replaced"}
    expected = parent
    for name, value in ids.items():
        expected = baggage.set_baggage(name, value, expected)

    made = with_tenant_baggage(ids, parent)

    assert dict(baggage.get_all(made)) == dict(baggage.get_all(expected))
    assert dict(baggage.get_all(parent)) == {"existing": "kept"}
    # Without baggage in the parent (the usual request), the ids alone, copied.
    fresh = with_tenant_baggage(ids, context.Context())
    ids["account_id"] = "changed afterwards"
    assert dict(baggage.get_all(fresh)) == {**ids, "account_id": "acct-1"}
