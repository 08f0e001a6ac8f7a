"""The README's run command really generates a service, starts it and shows its telemetry."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers import REPO_DIR
from helpers.process import free_port
from helpers.project_env import default_uv_cache_dir


def test_demo_generates_starts_and_shows_a_trace(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LOGFIRE_"))}
    env["UV_CACHE_DIR"] = str(default_uv_cache_dir())
    result = subprocess.run(
        [sys.executable, "scripts/demo.py", "--once", "--dest", str(tmp_path), "--port", str(port)],
        cwd=REPO_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output

    assert (tmp_path / "my-service" / "pyproject.toml").is_file()
    assert f"ready: API docs http://127.0.0.1:{port}/docs" in output
    assert "GET /items/1 -> 200" in output
    assert "GET /items/999999 -> 404" in output
    # The service's own development console (not the demo's lines) shows each request span, printed
    # when it starts, and the `item.fetched` event nested under it.
    console = [line for line in output.splitlines() if not line.startswith("demo>")]
    assert any(line.endswith(" GET /items/1") for line in console), output
    assert any(line.endswith("  item.fetched") for line in console), output
    # The counters moved for the requests the demo sent, labelled by route template.
    counters = [line for line in output.splitlines() if "http_server_request_duration_seconds_count" in line]
    assert any(
        'http_route="/items/{item_id}"' in line and 'http_response_status_code="200"' in line
        for line in counters
    ), output
