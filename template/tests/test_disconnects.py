"""Telemetry contract: a client that goes away is not a server error.

The server tells the app in one of two ways: `receive()` answers `http.disconnect` (Starlette then
raises `ClientDisconnect` where the app reads the body), or the server cancels the request's task.
Either way the request is counted as 499 (nginx's "client closed request"), which the
availability SLO does not count as an error, and nothing is logged at error level.

These tests call the app as the server would, with the ASGI messages a disconnect produces.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator

import pytest
from fastapi import FastAPI, Request
from logfire.testing import CaptureLogfire
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import StatusCode
from pydantic import BaseModel
from starlette.types import Message

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.telemetry.logs import configure_logging

from conftest import (
    http_scope,
    make_settings,
    outcomes,
    requests_with_status,
    server_spans,
)


class Note(BaseModel):
    text: str


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    # The stdout handler installed by a test points at pytest's capture, which is closed after it.
    configure_logging("debug", json_lines=False)


def app_that_reads(capfire: CaptureLogfire) -> FastAPI:
    """Built inside the test, so that its JSON lines go to the stdout capsys captures."""
    app = create_app(
        make_settings(run_mode="production", logfire_trace_sample_rate=1.0, access_log=True),
        additional_span_processors=[SimpleSpanProcessor(capfire.exporter)],
    )
    app.state.handler_started = asyncio.Event()

    async def upload(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    async def create_note(note: Note) -> Note:
        return note

    async def wait_forever() -> None:
        app.state.handler_started.set()
        await asyncio.Event().wait()

    app.add_api_route("/upload", upload, methods=["POST"])
    app.add_api_route("/notes", create_note, methods=["POST"])
    app.add_api_route("/forever", wait_forever)
    return app


# Each request announces a body it never sends: the app has something to wait for.
UNSENT_BODY = [(b"content-length", b"100")]


async def disconnected() -> Message:
    return {"type": "http.disconnect"}


def request_lines(capsys: pytest.CaptureFixture[str]) -> list[tuple[str, str, bool]]:
    """(level, message, has a traceback) of every JSON line: access-log lines and any error."""
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return [
        (line["level"], line["message"].split(" in ")[0], "exc_info" in line)
        for line in lines
        if line["logger"] != "{{ cookiecutter.package_name }}.app"  # startup and shutdown
    ]


async def test_a_client_gone_while_the_app_reads_the_body_is_499_not_an_error(
    capfire: CaptureLogfire, capsys: pytest.CaptureFixture[str]
) -> None:
    app = app_that_reads(capfire)
    before, errors, counted = (
        requests_with_status("POST", "/upload", 499),
        requests_with_status("POST", "/upload", 500),
        outcomes(),
    )

    async def nowhere(message: Message) -> None:
        pass

    # Starlette raises ClientDisconnect; the server would drop it (and its 500) for a gone client.
    with contextlib.suppress(Exception):
        await app(http_scope("POST", "/upload", UNSENT_BODY), disconnected, nowhere)

    assert requests_with_status("POST", "/upload", 499) == before + 1
    assert requests_with_status("POST", "/upload", 500) == errors
    assert outcomes() == {**counted, "client_closed": counted["client_closed"] + 1}
    [span] = server_spans(capfire)
    assert (span.attributes or {})["http.response.status_code"] == 499
    assert "error.type" not in (span.attributes or {})
    assert span.status.status_code is StatusCode.UNSET
    assert [e for e in span.events if e.name == "exception"] == []
    assert request_lines(capsys) == [("info", "POST /upload 499", False)]


async def test_a_client_gone_before_fastapi_read_the_body_is_499_not_400(
    capfire: CaptureLogfire, capsys: pytest.CaptureFixture[str]
) -> None:
    app = app_that_reads(capfire)
    # FastAPI answers 400 ("error parsing the body") when the body never comes; no one hears it.
    sent: list[Message] = []

    async def record(message: Message) -> None:
        sent.append(message)

    before = requests_with_status("POST", "/notes", 499)
    await app(http_scope("POST", "/notes", UNSENT_BODY), disconnected, record)

    assert sent[0]["status"] == 400
    assert requests_with_status("POST", "/notes", 499) == before + 1
    [span] = server_spans(capfire)
    assert (span.attributes or {})["http.response.status_code"] == 499
    assert request_lines(capsys) == [("info", "POST /notes 499", False)]


async def test_a_cancelled_request_is_499_not_an_error(
    capfire: CaptureLogfire, capsys: pytest.CaptureFixture[str]
) -> None:
    app = app_that_reads(capfire)
    before, errors = (
        requests_with_status("GET", "/forever", 499),
        requests_with_status("GET", "/forever", 500),
    )

    async def waiting() -> Message:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def nowhere(message: Message) -> None:
        pass

    request = asyncio.create_task(app(http_scope("GET", "/forever", UNSENT_BODY), waiting, nowhere))
    await app.state.handler_started.wait()
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request

    assert requests_with_status("GET", "/forever", 499) == before + 1
    assert requests_with_status("GET", "/forever", 500) == errors
    [span] = server_spans(capfire)
    assert span.status.status_code is StatusCode.UNSET
    assert "error.type" not in (span.attributes or {})
    assert request_lines(capsys) == [("info", "GET /forever 499", False)]
