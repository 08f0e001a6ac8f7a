"""A booted service starts without its datastores, answers for them, and recovers on their return.

The all-features service (SQLAlchemy with asyncpg, Redis) runs as its console script, the
container's command, against a throwaway PostgreSQL and Redis (tests/helpers/datastores.py).
Its schema is migrated first by the same console script (`<slug> migrate`, the step that runs
before the service in Kubernetes and the local stack), then both servers are stopped and the
service is started:

1. both down at start: it starts, /healthz 200, /readyz 503 naming both checks, and requests that
   need them fail at once with a 503 (a client timeout would catch a hang); so the test fails if
   the lifespan goes back to connecting at start (the process would exit, /healthz never answer);
2. both started: /readyz 200 and the requests succeed, without a restart;
3. both stopped again (a fast shutdown: open connections end), then started: 503s, then 200s;
4. PostgreSQL frozen (every server process stopped, the `SELECT 1` hangs): `timeout`, and a
   request fails with a 503 within DATABASE_TIMEOUT_SECONDS; thawed: 200 again.
/healthz answers 200 throughout; the probes' own `SELECT 1` and `PING` are never traced.
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

READY = {"status": "ready", "checks": {"database": "ok", "redis": "ok"}}
# A hang is a failure: every request must be answered well within this.
CLIENT_TIMEOUT = 10


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


def unavailable(**checks: str) -> dict[str, Any]:
    return {"status": "unavailable", "checks": {**READY["checks"], **checks}}


def requests_fail_fast(service: ServiceProcess, *, notes: bool = True, counters: bool = True) -> None:
    if notes:
        response = httpx.post(service.url + "/notes", json={"text": "kept?"}, timeout=CLIENT_TIMEOUT)
        assert response.status_code == 503, response.text
        assert response.json() == {"detail": "database unavailable"}
    if counters:
        response = httpx.post(service.url + "/counters/visits", timeout=CLIENT_TIMEOUT)
        assert response.status_code == 503, response.text
        assert response.json() == {"detail": "redis unavailable"}


def requests_succeed(service: ServiceProcess) -> None:
    created = httpx.post(service.url + "/notes", json={"text": "hi"}, timeout=CLIENT_TIMEOUT)
    assert created.status_code == 201, created.text
    note = created.json()
    assert httpx.get(f"{service.url}/notes/{note['id']}", timeout=CLIENT_TIMEOUT).json() == note
    counted = httpx.post(service.url + "/counters/visits", timeout=CLIENT_TIMEOUT)
    assert counted.status_code == 200, counted.text


def test_the_service_starts_without_its_datastores_and_recovers_with_them(
    project_env: Callable[[str, str], ProjectEnv],
) -> None:
    absent = datastores.missing()
    assert not absent, f"install {', '.join(absent)} (.ci/run does)"
    project = project_env("copier", "all_features")
    with (
        datastores.postgres_server() as postgres,
        datastores.redis_server(started=False) as redis,
        OtlpReceiver() as receiver,
    ):
        port = free_port()
        env = service_env(
            project.env(),
            port=port,
            otlp_endpoint=receiver.endpoint,
            DATABASE_URL=postgres.dsn.replace("postgresql://", "postgresql+asyncpg://"),
            REDIS_URL=redis.url,
            METRICS_PORT=str(free_port()),
            READINESS_TIMEOUT_SECONDS="0.5",
            DATABASE_TIMEOUT_SECONDS="1",
            REDIS_TIMEOUT_SECONDS="1",
        )
        # The migration step, as the init container runs it: its own process, before the service.
        migrated = project.run(str(project.console_script), "migrate", env=env)
        assert "Running upgrade" in migrated.stderr, migrated.stderr
        postgres.stop()

        command = [str(project.console_script)]
        with ServiceProcess(command, cwd=project.root, env=env, port=port, ready_path="/healthz") as service:
            service.wait_ready()  # fails if the process exits: a lifespan that connects at start
            assert readiness_becomes(service, 503) == unavailable(database="failed", redis="failed")
            requests_fail_fast(service)

            postgres.start()
            redis.start()
            assert readiness_becomes(service, 200) == READY
            requests_succeed(service)

            postgres.stop()
            redis.stop()
            assert readiness_becomes(service, 503) == unavailable(database="failed", redis="failed")
            requests_fail_fast(service)
            postgres.start()
            redis.start()
            assert readiness_becomes(service, 200) == READY
            requests_succeed(service)

            postgres.pause()
            assert readiness_becomes(service, 503) == unavailable(database="timeout")
            requests_fail_fast(service, counters=False)
            postgres.resume()
            assert readiness_becomes(service, 200) == READY
            stopped = service.stop()

    assert "Traceback" not in stopped.stderr, str(stopped)
    events = [json.loads(line) for line in stopped.stdout.splitlines() if line.startswith("{")]
    messages = [str(event.get("message", "")) for event in events]
    assert "readiness.check_failed" in messages, "each failed check is logged with its reason"
    assert "database.unavailable" in messages and "redis.unavailable" in messages
    statements = [span.attributes.get("db.statement") for span in receiver.spans]
    assert any("INSERT" in str(statement) for statement in statements), statements
    assert not any(statement == "SELECT 1" for statement in statements), "probes must not be traced"
    redis_commands = {span.name for span in receiver.spans if span.attributes.get("db.system") == "redis"}
    assert "INCRBY" in redis_commands or "INCR" in redis_commands, redis_commands
    assert "PING" not in redis_commands, "probes must not be traced"
