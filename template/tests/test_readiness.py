"""/readyz asks every dependency, names the one that fails and recovers with it; /healthz asks
nothing outside the process (a dependency outage must not get the pods restarted)."""

from __future__ import annotations

import asyncio

{% if cookiecutter.with_sqlalchemy or cookiecutter.with_redis -%}
import pytest
{% endif -%}
from fastapi import FastAPI
from fastapi.testclient import TestClient

from {{ cookiecutter.package_name }}.app import create_app
{%- if cookiecutter.with_sqlalchemy %}
from {{ cookiecutter.package_name }}.db import Database
{%- endif %}

from conftest import {% if cookiecutter.with_redis %}UNREACHABLE_REDIS_URL, {% endif %}make_settings
{%- if cookiecutter.with_sqlalchemy or cookiecutter.with_redis %}

DEPENDENCIES = {
{%- if cookiecutter.with_sqlalchemy %}
    "database": "ok",
{%- endif %}
{%- if cookiecutter.with_redis %}
    "redis": "ok",
{%- endif %}
}
{%- else %}

DEPENDENCIES: dict[str, str] = {}
{%- endif %}
{%- if cookiecutter.with_sqlalchemy %}
# Nothing listens on port 1: connecting is refused at once, as when the database is down.
REFUSING_DATABASE_URL = "postgresql+asyncpg://service@127.0.0.1:1/service"
{%- endif %}
{%- if cookiecutter.with_redis %}
# The tests that need every check to pass need the Redis of TEST_REDIS_URL.
needs_redis = pytest.mark.usefixtures("redis_url")
{%- endif %}


class Dependency:
    """A check whose dependency the test takes down and brings back."""

    def __init__(self) -> None:
        self.up = True

    async def check(self) -> None:
        if not self.up:
            raise ConnectionRefusedError("connection refused")


{% if cookiecutter.with_redis -%}
@needs_redis
{% endif -%}
def test_ready_once_every_dependency_answers(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": DEPENDENCIES}


{% if cookiecutter.with_redis -%}
@needs_redis
{% endif -%}
def test_a_failed_check_is_named_and_readiness_recovers_with_it(
    app: FastAPI, client: TestClient
) -> None:
    dependency = Dependency()
    app.state.readiness_checks["queue"] = dependency.check

    dependency.up = False
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {**DEPENDENCIES, "queue": "failed"},
    }
    assert client.get("/healthz").status_code == 200

    dependency.up = True
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["queue"] == "ok"


async def hangs() -> None:
    await asyncio.sleep(3600)


{% if cookiecutter.with_redis -%}
@needs_redis
{% endif -%}
def test_a_check_that_hangs_fails_after_the_timeout() -> None:
    app = create_app(make_settings(readiness_timeout_seconds=0.05))
    with TestClient(app) as client:
        app.state.readiness_checks["slow"] = hangs
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {**DEPENDENCIES, "slow": "timeout"},
    }


def test_not_ready_before_startup_and_after_shutdown(app: FastAPI) -> None:
    with TestClient(app) as client:
        app.state.ready = False  # as during startup and once shutdown has begun
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "starting", "checks": {}}
{%- if cookiecutter.with_sqlalchemy %}


async def test_database_ping_answers_or_raises() -> None:
    reachable = Database("sqlite+aiosqlite:///:memory:")
    await reachable.ping()
    await reachable.dispose()
    unreachable = Database(REFUSING_DATABASE_URL)
    with pytest.raises(ConnectionRefusedError):
        await unreachable.ping()
    await unreachable.dispose()


def test_the_service_starts_without_its_database_and_answers_503() -> None:
    app = create_app(make_settings(database_url=REFUSING_DATABASE_URL))
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        created = client.post("/notes", json={"text": "lost?"})
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] == "failed"
    assert created.status_code == 503
    assert created.json() == {"detail": "database unavailable"}
    assert created.headers["retry-after"] == "5"


def test_a_missing_table_is_a_bug_not_an_outage() -> None:
    app = create_app(make_settings())  # an empty database: no migration applied
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post("/notes", json={"text": "where?"}).status_code == 500
{%- endif %}
{%- if cookiecutter.with_redis %}


def test_the_service_starts_without_redis_and_answers_503() -> None:
    app = create_app(make_settings(redis_url=UNREACHABLE_REDIS_URL))
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        counted = client.post("/counters/visits")
    assert ready.status_code == 503
    assert ready.json()["checks"]["redis"] == "failed"
    assert counted.status_code == 503
    assert counted.json() == {"detail": "redis unavailable"}
{%- endif %}
