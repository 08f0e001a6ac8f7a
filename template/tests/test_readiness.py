"""/readyz asks every dependency, names the one that fails and recovers with it; /healthz asks
nothing outside the process (a dependency outage must not get the pods restarted)."""

from __future__ import annotations

import asyncio
{%- if cookiecutter.with_sqlalchemy %}
from pathlib import Path
{%- endif %}

{% if cookiecutter.with_sqlalchemy -%}
import pytest
{% endif -%}
from fastapi import FastAPI
from fastapi.testclient import TestClient
{%- if cookiecutter.with_sqlalchemy %}
from sqlalchemy.exc import OperationalError
{%- endif %}

from {{ cookiecutter.package_name }}.app import create_app
{%- if cookiecutter.with_sqlalchemy %}
from {{ cookiecutter.package_name }}.db import Database
{%- endif %}

from conftest import make_settings
{%- if cookiecutter.with_sqlalchemy %}

DEPENDENCIES = {"database": "ok"}
{%- else %}

DEPENDENCIES: dict[str, str] = {}
{%- endif %}


class Dependency:
    """A check whose dependency the test takes down and brings back."""

    def __init__(self) -> None:
        self.up = True

    async def check(self) -> None:
        if not self.up:
            raise ConnectionRefusedError("connection refused")


def test_ready_once_every_dependency_answers(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": DEPENDENCIES}


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


async def test_database_ping_answers_or_raises(tmp_path: Path) -> None:
    reachable = Database("sqlite+aiosqlite:///:memory:")
    await reachable.ping()
    await reachable.dispose()
    unreachable = Database(f"sqlite+aiosqlite:///{tmp_path}/no/such/folder/notes.db")
    with pytest.raises(OperationalError, match="unable to open database file"):
        await unreachable.ping()
    await unreachable.dispose()
{%- endif %}
