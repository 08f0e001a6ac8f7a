"""The tenant headers in the OpenAPI schema, so that /docs can send them on every route."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def document_tenant_headers(app: FastAPI, headers: Mapping[str, str]) -> None:
    """Add each tenant header (attribute name -> header name) as an optional header parameter.

    Documentation only: the middleware reads the headers, whatever the route declares.
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

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            for path_item in schema.get("paths", {}).values():
                for method, operation in path_item.items():
                    if method in HTTP_METHODS:
                        operation.setdefault("parameters", []).extend(parameters)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented extension point
