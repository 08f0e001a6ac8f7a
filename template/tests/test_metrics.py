"""Telemetry contract: Prometheus metrics move by exactly the requests sent."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from logfire.testing import CaptureLogfire
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from conftest import make_settings, scrape, server_spans
from {{ cookiecutter.package_name }}.app import create_app

DURATION = "http_server_request_duration_seconds"


def samples(client: TestClient) -> list[Sample]:
    response = scrape(client, accept="application/openmetrics-text; version=1.0.0")
    assert response.status_code == 200
    return [
        sample
        for family in text_string_to_metric_families(response.text)  # type: ignore[no-untyped-call]
        for sample in family.samples
    ]


def value(client: TestClient, name: str, **labels: str) -> float | None:
    for sample in samples(client):
        if sample.name == name and sample.labels == labels:
            return sample.value
    return None


def request_count(client: TestClient, method: str, route: str, status: int) -> float | None:
    return value(
        client,
        f"{DURATION}_count",
        http_request_method=method,
        http_route=route,
        http_response_status_code=str(status),
    )


def test_metrics_is_served_without_redirect(client: TestClient) -> None:
    response = scrape(client)
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    assert "process_cpu_seconds_total" in response.text
    assert "process_resident_memory_bytes" in response.text


def test_openmetrics_when_asked(client: TestClient) -> None:
    response = scrape(client, accept="application/openmetrics-text; version=1.0.0")
    assert response.content_type.startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")


def test_counts_move_by_exactly_the_requests_sent(client: TestClient) -> None:
    for _ in range(3):
        client.get("/items/1")
    for _ in range(2):
        client.get("/items/999")
    client.get("/healthz")
    client.get("/readyz")
    scrape(client)

    assert request_count(client, "GET", "/items/{item_id}", 200) == 3
    assert request_count(client, "GET", "/items/{item_id}", 404) == 2
    routes = {s.labels.get("http_route") for s in samples(client) if s.name.startswith(DURATION)}
    assert routes == {"/items/{item_id}"}  # probes and scrapes are not counted
    assert value(client, "http_server_active_requests", http_request_method="GET") == 0
    assert value(client, "tenant_requests_total", account_id="none", outcome="success") == 5


def test_unmatched_paths_collapse_into_one_series(client: TestClient) -> None:
    for path in ("/wp-admin", "/.env", "/a/b/c", "/items", "/items/1/extra"):
        assert client.get(path).status_code == 404

    assert request_count(client, "GET", "unmatched", 404) == 5


def test_unknown_methods_become_other(client: TestClient) -> None:
    client.request("BREW", "/items/1")

    assert request_count(client, "_OTHER", "/items/{item_id}", 405) == 1


def test_exemplars_carry_the_trace_id(client: TestClient, capfire: CaptureLogfire) -> None:
    client.get("/items/1")

    [span] = server_spans(capfire)
    exemplars = [
        s.exemplar
        for s in samples(client)
        if s.name == f"{DURATION}_bucket" and s.exemplar is not None
    ]
    assert [e.labels["trace_id"] for e in exemplars] == [format(span.context.trace_id, "032x")]


def test_tenant_account_label_is_bounded(capfire: CaptureLogfire) -> None:
    app = create_app(
        make_settings(tenant_metrics_max_accounts=2),
        additional_span_processors=[SimpleSpanProcessor(capfire.exporter)],
    )
    with TestClient(app) as client:
        for account in ("a", "b", "c", "a", "d"):
            client.get("/items/1", headers={"X-Account-Id": account})
        client.get("/items/1")

        assert value(client, "tenant_requests_total", account_id="a", outcome="success") == 2
        assert value(client, "tenant_requests_total", account_id="b", outcome="success") == 1
        assert value(client, "tenant_requests_total", account_id="other", outcome="success") == 2
        assert value(client, "tenant_requests_total", account_id="none", outcome="success") == 1


@pytest.mark.parametrize("rate", [0.0])
def test_unsampled_requests_are_still_counted(capfire: CaptureLogfire, rate: float) -> None:
    app = create_app(
        make_settings(logfire_trace_sample_rate=rate),
        additional_span_processors=[SimpleSpanProcessor(capfire.exporter)],
    )
    with TestClient(app) as client:
        client.get("/items/1")

        assert server_spans(capfire) == []
        assert request_count(client, "GET", "/items/{item_id}", 200) == 1
        assert not any(s.exemplar for s in samples(client))
