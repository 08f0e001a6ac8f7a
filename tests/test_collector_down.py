"""With the OTLP collector down, requests still succeed and shutdown stays bounded.

Export happens in a background thread, so a dead collector must never fail or stall a request;
the lifespan's flush is bounded by SHUTDOWN_FLUSH_TIMEOUT_SECONDS and each export attempt by
OTEL_EXPORTER_OTLP_TIMEOUT, so SIGTERM ends the process in about their sum (the generated README
documents 7 s with the defaults). Here both are short, and the process must be gone well before an
unbounded flush (30 s by default) would let it go. What the exporter says about the dead collector
comes out as JSON lines on stdout like every other record, never as plain text on stderr.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable

import httpx
import pytest
from helpers.process import ServiceProcess, free_port, service_env
from helpers.project_env import ProjectEnv

FLUSH_TIMEOUT_SECONDS = 2
EXPORT_TIMEOUT_SECONDS = 1
# Generous for a loaded machine, yet far below the 30 s an unbounded flush would take.
SHUTDOWN_BOUND_SECONDS = 15


@pytest.mark.xdist_group("env-copier-default")
def test_requests_succeed_and_shutdown_is_bounded_with_the_collector_down(
    project_env: Callable[[str, str], ProjectEnv],
) -> None:
    project = project_env("copier", "default")
    port, dead_collector_port = free_port(), free_port()  # nothing listens on the second one
    env = service_env(
        project.env(),
        port=port,
        otlp_endpoint=f"http://127.0.0.1:{dead_collector_port}",
        SHUTDOWN_FLUSH_TIMEOUT_SECONDS=str(FLUSH_TIMEOUT_SECONDS),
        OTEL_EXPORTER_OTLP_TIMEOUT=str(EXPORT_TIMEOUT_SECONDS),
    )
    with ServiceProcess([str(project.console_script)], cwd=project.root, env=env, port=port) as service:
        service.wait_ready()
        statuses = [
            httpx.get(
                f"{service.url}/items/{n % 3 + 1}", headers={"X-Account-Id": "acct-1"}, timeout=10
            ).status_code
            for n in range(30)
        ]
        assert statuses == [200] * 30
        stopped = service.stop(timeout=SHUTDOWN_BOUND_SECONDS)

    assert stopped.returncode in (0, -signal.SIGTERM), str(stopped)
    assert "Application shutdown complete" in stopped.stdout, str(stopped)
    # Production stdout is JSON lines only, the exporter's complaints and uvicorn's own included.
    records = [json.loads(line) for line in stopped.stdout.splitlines() if line.strip()]
    exporters = [r for r in records if r["logger"].startswith("opentelemetry.exporter")]
    assert exporters, "the exporter did not say the collector is unreachable"
    assert all(r["level"] in ("warning", "error") for r in exporters)
    assert stopped.stderr.strip() == "", stopped.stderr
