"""The README's how-to code, run as written through the real app: if a snippet rots, this fails.

The code is read from README.md's python blocks: the orders module of "Add an endpoint" runs as
the package's `api.orders`, and the shorter snippets of the sections after it must be lines of
that module.
"""

from __future__ import annotations

import re
{%- if cookiecutter.with_httpx %}
import socket
{%- endif %}
import sys
{%- if cookiecutter.with_httpx %}
import threading
import time
{%- endif %}
import types
from collections.abc import Iterator
from pathlib import Path

{% if cookiecutter.with_httpx -%}
import httpx
{% endif -%}
import logfire
import pytest
{%- if cookiecutter.with_httpx %}
import uvicorn
{%- endif %}
from fastapi import {% if cookiecutter.with_httpx %}APIRouter, {% endif %}FastAPI
from fastapi.testclient import TestClient
from logfire.testing import CaptureLogfire
{%- if cookiecutter.with_httpx %}
from opentelemetry.trace import SpanKind
{%- endif %}

from conftest import (
    TENANT_ATTRIBUTES,
    TENANT_HEADERS,
{%- if cookiecutter.with_httpx %}
    finished_spans,
{%- endif %}
    logs_named,
    scrape,
    server_spans,
)

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
ORDERS_MODULE = "{{ cookiecutter.package_name }}.api.orders"


def section(title: str) -> str:
    """The text of the README's `### title` section."""
    return re.split(r"\n##+ ", README.split(f"\n### {title}\n", 1)[1], maxsplit=1)[0]


def code_blocks(text: str, language: str = "python") -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def run_snippet(code: str, name: str) -> types.ModuleType:
    """Execute a snippet as the module `name` (relative imports resolve inside the package)."""
    module = types.ModuleType(name)
    module.__package__ = name.rpartition(".")[0]
    sys.modules[name] = module
    # The README's own code, on purpose: the point is to run exactly what it shows.
    exec(compile(code, f"README.md ({name})", "exec"), module.__dict__)  # noqa: S102
    return module


@pytest.fixture(scope="module")
def orders() -> Iterator[types.ModuleType]:
    # Once per session: the snippet registers its Counter in prometheus-client's default registry.
    [module_code, _include] = code_blocks(section("Add an endpoint"))
    assert module_code.startswith("# src/{{ cookiecutter.package_name }}/api/orders.py\n")
    yield run_snippet(module_code, ORDERS_MODULE)
    sys.modules.pop(ORDERS_MODULE, None)


@pytest.fixture
def orders_client(app: FastAPI, orders: types.ModuleType) -> Iterator[TestClient]:
    """The app with the orders router included as the README says."""
    [_module, include] = code_blocks(section("Add an endpoint"))
    include = include.replace("from .api import orders\n", "")
    exec(include, {"app": app, "orders": orders})  # noqa: S102
    with TestClient(app) as client:
        yield client


def create_order(client: TestClient, headers: dict[str, str] | None = None) -> dict[str, object]:
    response = client.post("/orders", json={"item_id": 1}, headers=headers or {})
    assert response.status_code == 201, response.text
    order: dict[str, object] = response.json()
    return order


@pytest.mark.parametrize("title", ["Log an event", "Add a metric", "Read the tenant ids"])
def test_each_snippet_is_the_code_the_endpoint_example_runs(title: str) -> None:
    [module_code, _include] = code_blocks(section("Add an endpoint"))
    module_lines = {line.strip() for line in module_code.splitlines()}
    [snippet] = code_blocks(section(title))
    missing = [line for line in snippet.splitlines() if line.strip() not in module_lines]
    assert missing == [], f"{title}: not in the endpoint example: {missing}"


def test_new_endpoint_serves_and_is_traced_by_route_template(
    orders_client: TestClient, capfire: CaptureLogfire
) -> None:
    order = create_order(orders_client)
    response = orders_client.get(f"/orders/{order['id']}")
    assert response.status_code == 200
    assert response.json() == order
    assert orders_client.get("/orders/999999").status_code == 404
    names = [span.name for span in server_spans(capfire)]
    assert names == ["POST /orders", "GET /orders/{order_id}", "GET /orders/{order_id}"]


def test_event_carries_its_fields_and_the_tenant_ids(
    orders_client: TestClient, capfire: CaptureLogfire
) -> None:
    order = create_order(orders_client, TENANT_HEADERS)
    [event] = logs_named(capfire, "order.created")
    attributes = dict(event.attributes or {})
    assert attributes["order_id"] == order["id"]
    assert attributes["channel"] == "web"
    assert {key: attributes.get(key) for key in TENANT_ATTRIBUTES} == TENANT_ATTRIBUTES


def test_team_metric_appears_on_metrics(orders_client: TestClient) -> None:
    def created() -> float:
        metrics = scrape(orders_client).text
        found = re.search(r'^orders_created_total\{channel="web"\} (\S+)$', metrics, re.M)
        return float(found.group(1)) if found else 0.0

    before = created()
    create_order(orders_client)
    create_order(orders_client)
    assert created() == before + 2


def test_endpoint_reads_the_tenant_ids(orders_client: TestClient) -> None:
    with_tenant = create_order(orders_client, TENANT_HEADERS)
    assert with_tenant["account_id"] == TENANT_ATTRIBUTES["account_id"]
    assert create_order(orders_client)["account_id"] is None
    rejected = {"X-Account-Id": "not a valid id!"}
    assert create_order(orders_client, rejected)["account_id"] is None


def test_datastore_snippet_names_a_real_instrumentation_and_its_extra() -> None:
    text = section("Add a datastore")
    [command] = code_blocks(text, "bash")
    [call] = code_blocks(text)
    extra = re.search(r"'logfire\[(\w+)\]'", command)
    method = re.fullmatch(r"logfire\.instrument_(\w+)\(\)\n", call)
    assert extra is not None
    assert method is not None
    assert extra.group(1) == method.group(1)
    assert callable(getattr(logfire, f"instrument_{method.group(1)}"))
{%- if cookiecutter.with_httpx %}


@pytest.fixture
def served(app: FastAPI, orders: types.ModuleType) -> Iterator[str]:
    """The app with the README's orders router and its "call another service" route (under
    /via, calling this same server's /orders) behind a real uvicorn server."""
    [code] = code_blocks(section("Call another service"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    namespace = {**vars(orders), "router": APIRouter(prefix="/via")}
    code = code.replace("http://orders.shop.svc.cluster.local", url)
    exec(compile(code, "README.md (Call another service)", "exec"), namespace)  # noqa: S102
    app.include_router(orders.router)
    app.include_router(namespace["router"])
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    yield url
    server.should_exit = True
    thread.join(timeout=10)


def test_call_to_another_service_continues_the_trace_and_tenant(
    served: str, capfire: CaptureLogfire
) -> None:
    created = httpx.post(f"{served}/orders", json={"item_id": 2}, timeout=10)
    assert created.status_code == 201
    order = created.json()
    response = httpx.get(f"{served}/via/orders/{order['id']}", headers=TENANT_HEADERS, timeout=10)
    assert response.status_code == 200
    assert response.json() == order

    spans = finished_spans(capfire)
    [caller] = [span for span in server_spans(capfire) if span.name == "GET /via/orders/{order_id}"]
    [outgoing] = [
        span for span in spans if span.kind is SpanKind.CLIENT and span.parent == caller.context
    ]
    [called] = [
        span
        for span in server_spans(capfire)
        if span.name == "GET /orders/{order_id}" and span.parent is not None
    ]
    assert called.parent is not None
    assert called.parent.span_id == outgoing.context.span_id
    # 127.0.0.1 is one of the service's own hosts: the tenant ids went along.
    assert (called.attributes or {}).get("account_id") == TENANT_ATTRIBUTES["account_id"]
{%- endif %}
