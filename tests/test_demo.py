"""The README's run command really generates a service, starts it and shows its telemetry."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

from helpers.project_env import default_uv_cache_dir


def test_demo_generates_starts_and_shows_a_trace(template_snapshot: Path, tmp_path: Path) -> None:
    """The README's command as written, from a fresh clone; port taken, previous demo in the way."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LOGFIRE_", "VIRTUAL_ENV"))}
    env["UV_CACHE_DIR"] = str(default_uv_cache_dir())
    (tmp_path / "my-service").mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        result = subprocess.run(
            ["scripts/uv", "run", "scripts/demo.py", "--once", "--dest", str(tmp_path), "--port", str(busy)],
            cwd=template_snapshot,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"deleting the previous demo service in {tmp_path / 'my-service'}" in output
    moved = re.search(rf"port {busy} is busy: using (\d+) instead \(choose one with --port\)", output)
    assert moved is not None, output
    port = int(moved.group(1))

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
