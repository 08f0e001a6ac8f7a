"""An exception that ends a request is reported once: by the middleware, under the request's trace.

Starlette re-raises every unhandled exception "so that the server can log it", and uvicorn does:
"Exception in ASGI application" with the traceback again, outside any span, so without a trace or
tenant id (in Logfire it became an error trace of its own). The middleware has already written
the failure's one error line (or decided that it was none, a client going away), so it marks the
exception; the logging handlers drop any later record of a marked exception, and the 500 response
Starlette sends for it names the trace the client can quote.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

# The header that names a response's trace (the middleware sets it on every traced response).
TRACE_ID_HEADER = "X-Trace-Id"
# Set on the exception itself: exceptions cannot be weakly referenced, and the mark must live
# exactly as long as the exception does.
_REPORTED_IN_TRACE = "_reported_in_trace"


def mark_reported(error: BaseException, trace_id: str) -> None:
    """`error` ended a request of trace `trace_id` and the middleware has accounted for it."""
    setattr(error, _REPORTED_IN_TRACE, trace_id)


def reported_in_trace(error: BaseException) -> str | None:
    """The trace id of the request `error` ended, if the middleware has accounted for it."""
    trace_id: str | None = getattr(error, _REPORTED_IN_TRACE, None)
    return trace_id


class DropReported(logging.Filter):
    """Drops a record of an exception the middleware already accounted for (the server's copy)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return error is None or reported_in_trace(error) is None


async def internal_server_error(request: Request, error: Exception) -> Response:
    """Starlette's own 500 response, plus the trace id of the request that raised `error`."""
    trace_id = reported_in_trace(error)
    headers = {TRACE_ID_HEADER: trace_id} if trace_id is not None else None
    return PlainTextResponse("Internal Server Error", status_code=500, headers=headers)
