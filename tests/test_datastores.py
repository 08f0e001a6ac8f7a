"""asyncpg and Redis, instrumented by a generated service, send their spans to the collector.

The generated tests can only check that these instrumentations are switched on (they have no
server). Here the all-features service's own environment runs real queries against a real
PostgreSQL and a real Redis (tests/helpers/datastores.py) with the service's telemetry
configured as in production, every trace kept and OTLP export to a receiver in this process.
The queries run inside a span whose context carries a tenant id in its baggage, as the
middleware sets it for a traced request.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator

import pytest
from helpers import datastores
from helpers.otlp_receiver import OtlpReceiver, Span
from helpers.project_env import ProjectEnv

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("env-copier-all_features")]

# Sent as a query parameter and stored as a Redis value: it must reach no span.
SECRET = "hunter2-secret-value"
ACCOUNT = "acct-7"

SCRIPT = textwrap.dedent(
    """
    import asyncio
    import os

    import asyncpg
    import logfire
    import redis.asyncio as redis

    from {package}.settings import Settings
    from {package}.telemetry import configure_telemetry

    SECRET = os.environ["SECRET"]


    async def main() -> None:
        # As the middleware does for a request's tenant ids.
        with logfire.set_baggage(account_id=os.environ["ACCOUNT"]), logfire.span("datastores.check"):
            connection = await asyncpg.connect(os.environ["POSTGRES_DSN"])
            assert await connection.fetchval("SELECT $1::text", SECRET) == SECRET
            await connection.close()
            client = redis.Redis.from_url(os.environ["REDIS_URL"])
            await client.set("session:1", SECRET)
            assert await client.get("session:1") == SECRET.encode()
            await client.aclose()


    configure_telemetry(Settings())
    asyncio.run(main())
    logfire.force_flush()
    """
)


@pytest.fixture(scope="module")
def spans(project_env: Callable[[str, str], ProjectEnv]) -> Iterator[list[Span]]:
    absent = datastores.missing()
    assert not absent, f"install {', '.join(absent)} (.ci/run does)"
    project = project_env("copier", "all_features")
    with (
        datastores.running_postgres() as dsn,
        datastores.running_redis() as redis_url,
        OtlpReceiver() as receiver,
    ):
        env = project.env(
            RUN_MODE="production",
            LOGFIRE_TRACE_SAMPLE_RATE="1.0",
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            POSTGRES_DSN=dsn,
            REDIS_URL=redis_url,
            SECRET=SECRET,
            ACCOUNT=ACCOUNT,
        )
        project.run(str(project.venv_bin / "python"), "-c", SCRIPT.format(package=project.package), env=env)
        yield receiver.wait_for(
            lambda got: {"postgresql", "redis"} <= {s.attributes.get("db.system") for s in got},
            timeout=10,
            what="a PostgreSQL and a Redis span",
        )


def of_system(spans: list[Span], system: str) -> list[Span]:
    return [span for span in spans if span.attributes.get("db.system") == system]


def test_queries_are_client_spans_of_the_trace_they_ran_in(spans: list[Span]) -> None:
    (root,) = [span for span in spans if span.name == "datastores.check"]
    for system in ("postgresql", "redis"):
        found = of_system(spans, system)
        assert found, system
        for span in found:
            assert span.kind == "CLIENT", span
            assert span.trace_id == root.trace_id, span
            assert span.parent_span_id == root.span_id, span
            assert span.resource["service.name"] == root.resource["service.name"]


def test_the_statements_are_recorded(spans: list[Span]) -> None:
    statements = [span.attributes.get("db.statement") for span in of_system(spans, "postgresql")]
    assert "SELECT $1::text" in statements
    commands = {span.name for span in of_system(spans, "redis")}
    assert {"SET", "GET"} <= commands


def test_the_tenant_id_in_the_baggage_is_on_every_query_span(spans: list[Span]) -> None:
    for span in of_system(spans, "postgresql") + of_system(spans, "redis"):
        assert span.attributes.get("account_id") == ACCOUNT, span


def test_no_query_parameter_or_stored_value_reaches_a_span(spans: list[Span]) -> None:
    for span in spans:
        for key, value in span.attributes.items():
            assert SECRET not in str(value), (span.name, key)
        for _, attributes in span.events:
            assert SECRET not in str(attributes), span.name
