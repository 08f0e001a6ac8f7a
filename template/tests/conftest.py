"""Fixtures: a fresh app per test, wired to Logfire's in-memory `capfire` exporter."""

from __future__ import annotations

import asyncio
import logging
{% if cookiecutter.with_redis -%}
import os
{% endif -%}
{% if cookiecutter.with_sqlalchemy -%}
import shutil
{% endif -%}
{% if cookiecutter.metrics_separate_port -%}
import socket
{% endif -%}
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
{%- if cookiecutter.with_sqlalchemy %}
from pathlib import Path
{%- endif %}

{% if cookiecutter.metrics_separate_port -%}
import httpx
{% endif -%}
import logfire
import pytest
from fastapi import BackgroundTasks, FastAPI
from fastapi.testclient import TestClient
from logfire.testing import CaptureLogfire
{%- if cookiecutter.with_loguru %}
from loguru import logger as loguru_logger
{%- endif %}
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind
from prometheus_client import REGISTRY
{%- if cookiecutter.with_sqlalchemy %}
from sqlalchemy.ext.asyncio import create_async_engine
{%- endif %}
from starlette.types import Message, Scope

from {{ cookiecutter.package_name }}.app import create_app
{%- if cookiecutter.with_sqlalchemy %}
from {{ cookiecutter.package_name }}.migrations import upgrade
{%- endif %}
from {{ cookiecutter.package_name }}.settings import Settings

TENANT_HEADERS = {
    "X-Account-Id": "acct-42",
    "X-Agent-Instance-Id": "agent-7",
    "X-Session-Id": "sess-123",
    "X-LLM-Request-Id": "llmreq-9",
}
TENANT_ATTRIBUTES = {
    "account_id": "acct-42",
    "agent_instance_id": "agent-7",
    "session_id": "sess-123",
    "llm_request_id": "llmreq-9",
}


{%- if cookiecutter.with_redis %}
# A Redis server for the tests that need one (CI starts one); without it they are skipped.
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL")
# Nothing listens on port 1: connecting is refused at once.
UNREACHABLE_REDIS_URL = "redis://127.0.0.1:1/0"
{%- endif %}


def make_settings(**overrides: object) -> Settings:
    """Settings for tests: `test` run mode and environment, no `.env` file, explicit overrides."""
    # A loaded CI machine must not make an ordinary request slow (and so always exported).
    defaults: dict[str, object] = {
        "run_mode": "test",
        "environment": "test",
        "slow_request_seconds": 60.0,
    }
{%- if cookiecutter.with_sqlalchemy %}
    # An empty database (no tables): the `settings` fixture gives tests a migrated one.
    defaults["database_url"] = "sqlite+aiosqlite:///:memory:"
{%- endif %}
{%- if cookiecutter.with_redis %}
    defaults["redis_url"] = TEST_REDIS_URL or UNREACHABLE_REDIS_URL
{%- endif %}
{%- if cookiecutter.metrics_separate_port %}
    defaults["metrics_port"] = free_port()
{%- endif %}
    return Settings(_env_file=None, **{**defaults, **overrides})  # type: ignore[arg-type]
{%- if cookiecutter.metrics_separate_port %}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
{%- endif %}


@dataclass(frozen=True)
class Scrape:
    status_code: int
    content_type: str
    text: str


def scrape(client: TestClient, accept: str = "") -> Scrape:
    """GET /metrics without following redirects (there must be none)."""
    headers = {"Accept": accept} if accept else {}
{%- if cookiecutter.metrics_separate_port %}
    port = client.app.state.settings.metrics_port  # type: ignore[attr-defined]
    response = httpx.get(
        f"http://127.0.0.1:{port}/metrics", headers=headers, follow_redirects=False
    )
{%- else %}
    response = client.get("/metrics", headers=headers, follow_redirects=False)
{%- endif %}
    return Scrape(response.status_code, response.headers["content-type"], response.text)


def requests_with_status(method: str, route: str, status: int) -> float:
    """How many requests the duration histogram counted for a method, route and status."""
    labels = {
        "http_request_method": method,
        "http_route": route,
        "http_response_status_code": str(status),
    }
    return REGISTRY.get_sample_value("http_server_request_duration_seconds_count", labels) or 0.0


def outcomes() -> dict[str, float]:
    """tenant_requests_total by outcome, whatever the account label."""
    totals = dict.fromkeys(("success", "error", "client_closed"), 0.0)
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name == "tenant_requests_total":
                totals[sample.labels["outcome"]] += sample.value
    return totals


{% if cookiecutter.with_sqlalchemy -%}
async def migrate(url: str) -> None:
    """Apply every migration to `url` (what the `migrate` command does to DATABASE_URL)."""
    engine = create_async_engine(url)
    async with engine.begin() as connection:
        await connection.run_sync(upgrade)
    await engine.dispose()


@pytest.fixture(scope="session")
def migrated_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database at the newest migration, made once per run: each test gets a copy."""
    path = tmp_path_factory.mktemp("database") / "migrated.sqlite3"
    asyncio.run(migrate(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture
def settings(migrated_database: Path, tmp_path: Path) -> Settings:
    database = tmp_path / "service.sqlite3"
    shutil.copyfile(migrated_database, database)
    return make_settings(database_url=f"sqlite+aiosqlite:///{database}")
{%- else -%}
@pytest.fixture
def settings() -> Settings:
    return make_settings()
{%- endif %}
{%- if cookiecutter.with_redis %}


@pytest.fixture
def redis_url() -> str:
    """TEST_REDIS_URL; the test is skipped without it."""
    if TEST_REDIS_URL is None:
        pytest.skip("needs a Redis server: set TEST_REDIS_URL, e.g. redis://127.0.0.1:6379/15")
    return TEST_REDIS_URL
{%- endif %}


@pytest.fixture
def app(capfire: CaptureLogfire, settings: Settings) -> FastAPI:
    # capfire configured Logfire with its exporter; create_app configures it again the service's
    # way (sampling, scrubbing, propagation) and keeps exporting to the same in-memory exporter.
    return create_app(settings, additional_span_processors=[SimpleSpanProcessor(capfire.exporter)])


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:  # runs the lifespan
        yield test_client


def http_scope(method: str, path: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> Scope:
    """A request's ASGI scope as the server hands it over, for tests that call the app directly."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


async def empty_body() -> Message:
    """`receive` for a request without a body."""
    return {"type": "http.request", "body": b"", "more_body": False}


def finished_spans(capfire: CaptureLogfire) -> list[ReadableSpan]:
    """Exported spans, without Logfire's "pending" copies of spans that were still open."""
    return [
        span
        for span in capfire.exporter.exported_spans
        if (span.attributes or {}).get("logfire.span_type") != "pending_span"
    ]


def server_spans(capfire: CaptureLogfire) -> list[ReadableSpan]:
    return [span for span in finished_spans(capfire) if span.kind is SpanKind.SERVER]


def logs_named(capfire: CaptureLogfire, message: str) -> list[ReadableSpan]:
    return [
        span
        for span in finished_spans(capfire)
        if (span.attributes or {}).get("logfire.span_type") == "log" and span.name == message
    ]


logger = logging.getLogger("tests.probe")


def add_probe_routes(app: FastAPI) -> None:
    """Routes that log from the threadpool, `to_thread`, a background task and a Logfire span."""

    def in_threadpool() -> dict[str, str]:
        logger.info("probe.threadpool")
        return {}

    async def in_to_thread() -> dict[str, str]:
        await asyncio.to_thread(lambda: logger.info("probe.to_thread"))
        return {}

    async def in_background(tasks: BackgroundTasks) -> dict[str, str]:
        tasks.add_task(lambda: logger.info("probe.background"))
        return {}

    async def with_logfire_span() -> dict[str, str]:
        with logfire.span("probe.span"):
            logfire.info("probe.logfire")
        return {}
{%- if cookiecutter.with_loguru %}

    async def with_loguru() -> dict[str, str]:
        loguru_logger.bind(step="one").info("probe.loguru")
        return {}

    app.add_api_route("/probe/loguru", with_loguru)
{%- endif %}

    app.add_api_route("/probe/threadpool", in_threadpool)
    app.add_api_route("/probe/to-thread", in_to_thread)
    app.add_api_route("/probe/background", in_background)
    app.add_api_route("/probe/span", with_logfire_span)
