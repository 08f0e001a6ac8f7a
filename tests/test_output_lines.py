"""Every line arrives, every line clean: what the default service writes when stdout is a file.

Real processes, started as the generated README says, with stdout and stderr going to files (as in
a container or `> service.log`) and without PYTHONUNBUFFERED, then stopped with SIGTERM:

- development: the console script's readable console holds the request span and its event;
- production under uvicorn (the console script) and under gunicorn (`gunicorn -c gunicorn.conf.py`,
  what `make run-prod` runs): every stdout line is a JSON object, uvicorn's and gunicorn's own
  lines included, none carries terminal codes (uvicorn's `color_message`), stderr stays empty.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from helpers.process import ServiceProcess, Stopped, free_port, service_env
from helpers.project_env import ProjectEnv

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("env-copier-default")]

ProjectEnvFactory = Callable[[str, str], ProjectEnv]


def serve_one_request(project: ProjectEnv, args: list[str], run_mode: str, **extra: str) -> Stopped:
    port = free_port()
    env = service_env(project.env(), port=port, run_mode=run_mode, **extra)
    with ServiceProcess(args, cwd=project.root, env=env, port=port) as service:
        service.wait_ready()
        assert httpx.get(service.url + "/items/1", headers={"X-Account-Id": "acct-1"}, timeout=10).is_success
        return service.stop()


def json_lines(stopped: Stopped) -> list[dict[str, Any]]:
    """Every stdout line parsed; fails on the first line that is not a JSON object or has colours."""
    assert stopped.stdout.endswith("\n"), stopped
    records = []
    for line in stopped.stdout.splitlines():
        assert "\x1b" not in line and "\\u001b" not in line, f"terminal codes in {line!r}"
        record = json.loads(line)
        assert isinstance(record, dict), line
        assert "color_message" not in record, line
        records.append(record)
    assert stopped.stderr == "", stopped
    return records


def messages(records: list[dict[str, Any]], logger: str) -> list[str]:
    return [record["message"] for record in records if record.get("logger") == logger]


def test_development_console_writes_every_line_to_a_file(project_env: ProjectEnvFactory) -> None:
    project = project_env("copier", "default")
    stopped = serve_one_request(project, [str(project.console_script)], "development")
    lines = stopped.stdout.splitlines()
    assert any(line.endswith(" GET /items/1") for line in lines), stopped
    assert any(line.endswith("  item.fetched") for line in lines), stopped
    assert any(line.endswith(" service.stopping") for line in lines), stopped


def test_production_stdout_is_json_lines_under_uvicorn(project_env: ProjectEnvFactory) -> None:
    project = project_env("copier", "default")
    records = json_lines(serve_one_request(project, [str(project.console_script)], "production"))
    uvicorn = messages(records, "uvicorn.error")
    assert any(message.startswith("Started server process") for message in uvicorn), uvicorn
    assert "Application startup complete." in uvicorn and "Application shutdown complete." in uvicorn
    assert "item.fetched" in messages(records, f"{project.package}.api.items")


def test_production_stdout_is_json_lines_under_gunicorn(project_env: ProjectEnvFactory) -> None:
    project = project_env("copier", "default")
    gunicorn = [str(project.venv_bin / "gunicorn"), "-c", "gunicorn.conf.py"]
    records = json_lines(serve_one_request(project, gunicorn, "production", WEB_CONCURRENCY="1"))
    master = messages(records, "gunicorn.error")
    assert any(message.startswith("Starting gunicorn") for message in master), master
    assert any(message.startswith("Booting worker") for message in master), master
    assert "Shutting down: Master" in master, master
    worker = messages(records, "uvicorn.error")
    assert "Application startup complete." in worker and "Application shutdown complete." in worker
    assert "item.fetched" in messages(records, f"{project.package}.api.items")
    # No access lines from gunicorn or uvicorn: the service's own (ACCESS_LOG, off in production).
    assert not messages(records, "uvicorn.access") and not messages(records, "gunicorn.access")
