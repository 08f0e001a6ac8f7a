"""What one request (or WebSocket connection) did, as the middleware saw it, and how to name it.

The names and attributes follow OpenTelemetry's HTTP semantic conventions; a WebSocket connection
is named `WS /route`, as FastAPI's own telemetry names it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opentelemetry.trace import StatusCode
from starlette.requests import ClientDisconnect
from starlette.websockets import WebSocketDisconnect

from .metrics import OTHER_METHOD

if TYPE_CHECKING:
    from opentelemetry import trace
    from opentelemetry.util.types import AttributeValue
    from starlette.types import Scope

# nginx's "client closed request": the client went away before its response was sent. Not a
# 5xx, so the availability SLO does not count it; its time still counts for the latency SLO.
CLIENT_CLOSED_REQUEST = 499
# The span name's verb for a WebSocket connection.
WEBSOCKET = "WS"
# How a request ends when its client goes away: the server cancels it (`CancelledError`), or the
# app reads from a closed connection (Starlette raises `ClientDisconnect`/`WebSocketDisconnect`).
CLIENT_GONE = (asyncio.CancelledError, ClientDisconnect, WebSocketDisconnect)


def route_template(scope: Scope) -> str | None:
    """The matched route's template; FastAPI's own pages (/docs, /openapi.json) by their path."""
    route = scope.get("route")
    if route is not None:
        return str(route.path)
    if scope.get("endpoint") is not None and not scope.get("path_params"):
        return str(scope["path"])
    return None


def span_name(method: str, route: str | None) -> str:
    """`GET /items/{item_id}`; a method the conventions do not know is named `HTTP`."""
    name = "HTTP" if method == OTHER_METHOD else method
    return f"{name} {route}" if route else name


def error_type(status: int, error: BaseException | None) -> str | None:
    """The semantic conventions' `error.type`: the exception's class, else a 5xx status."""
    if error is not None:
        return type(error).__qualname__
    return str(status) if status >= 500 else None


@dataclass(slots=True)
class Exchange:
    """A request or WebSocket connection, filled in as it goes: `over` once it is answered."""

    scope: Scope
    # The HTTP method (`_OTHER` for unknown ones), or `WS` for a WebSocket connection.
    method: str
    tenant: dict[str, str]
    start: float  # time.perf_counter()
    start_ns: int  # time.time_ns()
    trace_id: str = ""  # hex, once its SERVER span has started
    status: int = 500
    error: BaseException | None = None
    # The app has handed over the last of its response (`duration`, `end_ns`): what the ASGI
    # call does after is background work.
    over: bool = False
    recorded: bool = False  # whether its SERVER span was recorded (sampling.py)
    route: str | None = None  # the route's template, once the router has run (`over`)
    duration: float = 0.0
    end_ns: int = 0
    sent_ns: int = 0  # when the server took the last chunk: background work starts there
    client_gone: bool = False
    accepted: bool = False  # a WebSocket connection the app accepted
    # Why its trace is exported whatever the sampling: "error", "slow" or None.
    kept_because: str | None = None
    background_error: BaseException | None = None
    # Set when the background work gets a span: it failed, or took time.
    background_end_ns: int = 0

    @property
    def background_start_ns(self) -> int:
        return self.sent_ns or self.end_ns

    @property
    def websocket(self) -> bool:
        return self.method == WEBSOCKET

    def mark_failure(self, span: trace.Span) -> None:
        """A failed request's SERVER span: ERROR status and, if it raised, the exception."""
        if self.failed_as() is None:
            return
        span.set_status(StatusCode.ERROR)
        if self.error is not None:
            span.record_exception(self.error)

    def failed_as(self) -> str | None:
        """`error.type` when the server failed; None when it did not, or the client went away."""
        if self.client_gone:
            return None
        if self.websocket:
            return None if self.error is None else type(self.error).__qualname__
        return error_type(self.status, self.error)

    def attributes(self) -> dict[str, AttributeValue]:
        """The SERVER span's semantic-convention attributes."""
        scope = self.scope
        attributes: dict[str, AttributeValue] = {
            "url.path": scope["path"],
            "url.scheme": scope["scheme"],
        }
        if self.websocket:
            attributes["network.protocol.name"] = "websocket"
        else:
            attributes["http.request.method"] = self.method
            attributes["http.response.status_code"] = self.status
            attributes["network.protocol.version"] = scope["http_version"]
            if self.method == OTHER_METHOD:
                attributes["http.request.method_original"] = scope["method"]
        if self.route:
            attributes["http.route"] = self.route
        failed_as = self.failed_as()
        if failed_as is not None:
            attributes["error.type"] = failed_as
        return attributes
