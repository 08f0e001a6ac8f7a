"""The OpenAPI schema is FastAPI's own, plus the tenant headers on every operation."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import FastAPI, Header
from fastapi.testclient import TestClient
from pydantic import BaseModel

from {{ cookiecutter.package_name }}.telemetry.openapi import (
    HTTP_METHODS,
    document_tenant_headers,
)

from conftest import TENANT_HEADERS, make_settings

TENANT_HEADER_NAMES = {name.lower() for name in TENANT_HEADERS}


class Item(BaseModel):
    name: str
    # A default makes FastAPI's input and output schemas differ unless told not to separate them.
    tags: list[str] = []


def app_with_metadata() -> FastAPI:
    """An app that sets every piece of OpenAPI metadata FastAPI takes."""
    app = FastAPI(
        title="Catalog",
        version="2.1.0",
        summary="Items and their tags.",
        description="The catalog of **items**.",
        terms_of_service="https://example.com/terms",
        contact={"name": "Catalog team", "email": "catalog@example.com"},
        license_info={"name": "Apache 2.0", "identifier": "Apache-2.0"},
        openapi_tags=[{"name": "items", "description": "Create and read items."}],
        servers=[{"url": "https://catalog.example.com", "description": "production"}],
        openapi_external_docs={"url": "https://example.com/docs", "description": "Guide"},
        separate_input_output_schemas=False,
    )

    @app.post("/items", tags=["items"])
    async def create_item(item: Item) -> Item:
        return item

    @app.get("/items/{item_id}", tags=["items"])
    async def read_item(item_id: int, x_account_id: Annotated[str | None, Header()] = None) -> Item:
        return Item(name=str(item_id))

    @app.webhooks.post("item-created")
    async def item_created(item: Item) -> None:
        """Sent to subscribers when an item is created."""

    return app


def operations(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        operation
        for path_item in schema["paths"].values()
        for method, operation in path_item.items()
        if method in HTTP_METHODS
    ]


def header_names(operation: dict[str, Any]) -> list[str]:
    return [p["name"].lower() for p in operation.get("parameters", []) if p["in"] == "header"]


def without_tenant_headers(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of the schema without the parameters document_tenant_headers added."""
    copy: dict[str, Any] = json.loads(json.dumps(schema))
    for operation in operations(copy):
        kept = [
            p
            for p in operation.get("parameters", [])
            if not p.get("description", "").startswith("Tenant context:")
        ]
        if kept:
            operation["parameters"] = kept
        else:
            operation.pop("parameters", None)
    return copy


def test_the_schema_is_fastapis_own_plus_the_tenant_headers() -> None:
    expected = app_with_metadata().openapi()
    app = app_with_metadata()
    document_tenant_headers(app, make_settings().tenant_headers)
    with TestClient(app) as client:
        schema = client.get("/openapi.json").json()

    for field in ("info", "servers", "tags", "webhooks", "externalDocs", "components"):
        assert schema[field] == expected[field], field
    assert schema["info"]["license"]["identifier"] == "Apache-2.0"
    assert "Item" in schema["components"]["schemas"]  # one schema, not Item-Input/Item-Output
    assert without_tenant_headers(schema) == json.loads(json.dumps(expected))
    for operation in operations(schema):
        assert set(header_names(operation)) >= TENANT_HEADER_NAMES, operation["operationId"]


def test_a_header_the_route_declares_is_listed_once() -> None:
    app = app_with_metadata()
    document_tenant_headers(app, make_settings().tenant_headers)
    app.openapi()
    schema = app.openapi()  # twice: the headers are added once

    for operation in operations(schema):
        names = header_names(operation)
        assert sorted(names) == sorted(set(names)), operation["operationId"]
    [read_item] = [op for op in operations(schema) if op["operationId"].startswith("read_item")]
    [declared] = [p for p in read_item["parameters"] if p["name"].lower() == "x-account-id"]
    assert "Tenant context" not in declared.get("description", "")


def test_routes_added_later_are_documented_as_fastapi_documents_them() -> None:
    async def late() -> dict[str, str]:
        return {}

    plain, documented = app_with_metadata(), app_with_metadata()
    document_tenant_headers(documented, make_settings().tenant_headers)
    for app in (plain, documented):
        app.openapi()
        app.add_api_route("/late", late)

    schema = documented.openapi()
    assert without_tenant_headers(schema) == json.loads(json.dumps(plain.openapi()))
    for operation in operations(schema):
        assert set(header_names(operation)) >= TENANT_HEADER_NAMES, operation["operationId"]


def test_the_service_documents_its_tenant_headers(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert operations(schema)
    for operation in operations(schema):
        assert set(header_names(operation)) >= TENANT_HEADER_NAMES, operation["operationId"]
