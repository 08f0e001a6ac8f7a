"""Telemetry contract: tenant ids reach every span and log of the request, wherever code runs."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from logfire.testing import CaptureLogfire

from {{ cookiecutter.package_name }}.telemetry import current_tenant

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


def rejections(client: TestClient) -> dict[str, float]:
    prefix = "tenant_header_rejections_total{header="
    return {
        line.split('"')[1]: float(line.split()[-1])
        for line in scrape(client).text.splitlines()
        if line.startswith(prefix)
    }


def test_invalid_tenant_header_is_dropped_and_counted(
    client: TestClient, capfire: CaptureLogfire
) -> None:
    before = rejections(client)
    response = client.get(
        "/items/1",
        headers={"X-Account-Id": "evil value; drop table", "X-Session-Id": "s" * 129},
    )

    assert response.status_code == 200
    [span] = server_spans(capfire)
    assert "account_id" not in (span.attributes or {})
    assert "session_id" not in (span.attributes or {})
    after = rejections(client)
    assert after["account_id"] == before["account_id"] + 1
    assert after["session_id"] == before["session_id"] + 1
    assert after["llm_request_id"] == before["llm_request_id"]


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


def test_handlers_read_the_tenant_ids_with_current_tenant(app: FastAPI) -> None:
    async def whoami() -> dict[str, str]:
        return current_tenant()

    app.add_api_route("/whoami", whoami)
    with TestClient(app) as client:
        assert client.get("/whoami", headers=TENANT_HEADERS).json() == TENANT_ATTRIBUTES
        assert client.get("/whoami", headers={"X-Account-Id": "acct-1"}).json() == {
            "account_id": "acct-1"
        }
        assert client.get("/whoami").json() == {}
    assert current_tenant() == {}


def test_a_rejected_header_is_said_once_a_minute_not_per_request(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(20):
        client.get("/items/1", headers={"X-Account-Id": "bad id", "X-Session-Id": "bad id"})

    warnings = [r.getMessage() for r in caplog.records if r.name.endswith("telemetry.middleware")]
    assert sorted(warnings) == [
        f"Dropped an invalid {name} header value (see tenant_header_rejections_total)"
        for name in ("account_id", "session_id")
    ]


@pytest.mark.parametrize(
    ("caller", "trusted"),
    [("10.1.2.3", True), ("::ffff:10.1.2.3", True), ("203.0.113.5", False), ("testclient", False)],
)
def test_an_edge_service_takes_tenant_ids_from_its_gateway_only(
    capfire: CaptureLogfire, caller: str, trusted: bool
) -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from {{ cookiecutter.package_name }}.app import create_app

    from conftest import make_settings

    app = create_app(
        make_settings(tenant_trusted_callers="10.0.0.0/8"),
        additional_span_processors=[SimpleSpanProcessor(capfire.exporter)],
    )

    async def seen(request: Request) -> dict[str, object]:
        return {"tenant": current_tenant(), "header": request.headers.get("X-Account-Id")}

    app.add_api_route("/seen", seen)
    with TestClient(app, client=(caller, 50000)) as client:
        body = client.get("/seen", headers=TENANT_HEADERS).json()

    [span] = server_spans(capfire)
    expected = TENANT_ATTRIBUTES if trusted else dict.fromkeys(TENANT_ATTRIBUTES)
    assert _tenant(span.attributes) == expected
    assert body["tenant"] == (TENANT_ATTRIBUTES if trusted else {})
    # An untrusted caller's tenant headers are removed: the handler cannot read them either.
    assert body["header"] == ("acct-42" if trusted else None)
