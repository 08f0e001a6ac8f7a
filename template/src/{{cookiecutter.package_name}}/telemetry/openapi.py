"""The tenant headers in the OpenAPI schema, so that /docs can send them on every route."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI

HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def document_tenant_headers(app: FastAPI, headers: Mapping[str, str]) -> None:
    """Add each tenant header (attribute name -> header name) as an optional header parameter.

    Documentation only: the middleware reads the headers, whatever the route declares. The schema
    is FastAPI's own `app.openapi()` (tags, servers, contact, licence, webhooks: whatever the app
    sets), with the headers added to each operation that does not declare them itself.
    """
    parameters = [
        {
            "name": header,
            "in": "header",
            "required": False,
            "description": f"Tenant context: `{attribute}` on every span, log and metric.",
            "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]+$"},
        }
        for attribute, header in headers.items()
    ]
    fastapi_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        # FastAPI builds the schema on the first call and again after routes change; adding the
        # headers is idempotent, so each call makes sure the current schema has them.
        schema = fastapi_openapi()
        for path_item in schema.get("paths", {}).values():
            for method, operation in path_item.items():
                if method in HTTP_METHODS:
                    _add_headers(operation, parameters)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented extension point


def _add_headers(operation: dict[str, Any], parameters: list[dict[str, Any]]) -> None:
    """A header the route declares itself keeps its own entry (OpenAPI forbids duplicates)."""
    declared = {
        str(parameter.get("name", "")).lower()
        for parameter in operation.get("parameters", [])
        if parameter.get("in") == "header"
    }
    operation.setdefault("parameters", []).extend(
        dict(parameter) for parameter in parameters if parameter["name"].lower() not in declared
    )
