"""Readiness of a booted service follows a real PostgreSQL down and back up; liveness never does.

The all-features service (SQLAlchemy with asyncpg) runs as its console script against a
throwaway PostgreSQL (tests/helpers/datastores.py). The database is stopped (fast shutdown, as in
a restart), started again, then frozen (every server process stopped, so the `SELECT 1` hangs)
and thawed: /readyz answers 503 naming the database check, `failed` and then `timeout`, and 200
again each time the database is back, while /healthz answers 200 throughout.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from helpers import datastores
from helpers.otlp_receiver import OtlpReceiver
from helpers.process import ServiceProcess, free_port, service_env
from helpers.project_env import ProjectEnv

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("env-copier-all_features")]

READY = {"status": "ready", "checks": {"database": "ok"}}


def readiness_becomes(service: ServiceProcess, status_code: int, timeout: float = 20) -> dict[str, Any]:
    """Probe as the kubelet does until /readyz answers `status_code`; /healthz must stay 200."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        assert httpx.get(service.url + "/healthz", timeout=5).status_code == 200, service.describe()
        response = httpx.get(service.url + "/readyz", timeout=5)
        if response.status_code == status_code:
            body: dict[str, Any] = response.json()
            return body
        seen.append(f"{response.status_code} {response.text}")
        time.sleep(0.2)
    raise AssertionError(f"/readyz never answered {status_code}: {seen[-3:]}\n{service.describe()}")


def test_readiness_follows_the_database_and_liveness_does_not(
    project_env: Callable[[str, str], ProjectEnv],
) -> None:
    assert datastores.postgres_bin_dir(), "install Debian's postgresql package (.ci/run does)"
    project = project_env("copier", "all_features")
    with datastores.postgres_server() as postgres, OtlpReceiver() as receiver:
        port = free_port()
        env = service_env(
            project.env(),
            port=port,
            otlp_endpoint=receiver.endpoint,
            DATABASE_URL=postgres.dsn.replace("postgresql://", "postgresql+asyncpg://"),
            METRICS_PORT=str(free_port()),
            READINESS_TIMEOUT_SECONDS="0.5",
        )
        with ServiceProcess([str(project.console_script)], cwd=project.root, env=env, port=port) as service:
            service.wait_ready()
            assert readiness_becomes(service, 200) == READY
            # A traced request's queries are exported: the probes' own SELECT 1 must not be.
            assert httpx.post(service.url + "/notes", json={"text": "hi"}, timeout=10).status_code == 201

            postgres.stop()
            assert readiness_becomes(service, 503) == {
                "status": "unavailable",
                "checks": {"database": "failed"},
            }
            postgres.start()
            assert readiness_becomes(service, 200) == READY

            postgres.pause()
            assert readiness_becomes(service, 503) == {
                "status": "unavailable",
                "checks": {"database": "timeout"},
            }
            postgres.resume()
            assert readiness_becomes(service, 200) == READY
            stopped = service.stop()

    assert "Traceback" not in stopped.stderr, str(stopped)
    events = [json.loads(line) for line in stopped.stdout.splitlines() if line.startswith("{")]
    failures = [event for event in events if str(event.get("message", "")).startswith("readiness.")]
    assert failures, "each failed check is logged with its reason"
    statements = [span.attributes.get("db.statement") for span in receiver.spans]
    assert any("INSERT" in str(statement) for statement in statements), statements
    assert not any(statement == "SELECT 1" for statement in statements), "probes must not be traced"
