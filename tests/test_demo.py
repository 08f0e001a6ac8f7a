"""The README's run command really generates a service, starts it and shows its telemetry, on a
machine as fresh as the Quick start promises: a clone, Python, no uv, an empty home folder."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from helpers.project_env import default_uv_cache_dir

# What a fresh Debian or Ubuntu machine has on PATH (no uv there, nor in /usr/local/bin or ~/.local).
SYSTEM_PATH = "/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"
# The machine's own network settings (a proxy, a company CA bundle) are part of any fresh machine.
NETWORK_SETTINGS = ("SSL_CERT_FILE", "SSL_CERT_DIR", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY")


def fresh_machine_env(home: Path) -> dict[str, str]:
    """PATH of the system folders, an empty HOME, the shared uv cache (only to save downloads)."""
    env = {"PATH": SYSTEM_PATH, "HOME": str(home), "UV_CACHE_DIR": str(default_uv_cache_dir())}
    for name in NETWORK_SETTINGS:
        for variant in (name, name.lower()):
            if variant in os.environ:
                env[variant] = os.environ[variant]
    return env


def readme_run_command() -> list[str]:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    quick_start = readme.split("## Quick start", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    (command,) = [line for line in quick_start.splitlines() if "demo.py" in line]
    return command.split()


@pytest.mark.slow
def test_demo_generates_starts_and_shows_a_trace(template_snapshot: Path, tmp_path: Path) -> None:
    """The README's command as written, from a fresh clone; port taken, previous demo in the way."""
    if shutil.which("python3", path=SYSTEM_PATH) is None:
        pytest.fail(f"this test needs a python3 in {SYSTEM_PATH}, as the Quick start does")
    assert shutil.which("uv", path=SYSTEM_PATH) is None, f"uv in {SYSTEM_PATH}: not a fresh machine"
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(template_snapshot), str(clone)], check=True)
    assert not (clone / ".tools").exists()
    home = tmp_path / "home"
    home.mkdir()
    dest = tmp_path / "build"
    (dest / "my-service").mkdir(parents=True)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        result = subprocess.run(
            [*readme_run_command(), "--once", "--dest", str(dest), "--port", str(busy)],
            cwd=clone,
            env=fresh_machine_env(home),
            capture_output=True,
            text=True,
            timeout=420,
            check=False,
        )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    assert "installing it into .tools/uv" in output and (clone / ".tools" / "uv" / "bin" / "uv").is_file()
    assert "Running pip as the 'root' user" not in result.stderr, result.stderr
    assert f"deleting the previous demo service in {dest / 'my-service'}" in output
    moved = re.search(rf"port {busy} is busy: using (\d+) instead \(choose one with --port\)", output)
    assert moved is not None, output
    port = int(moved.group(1))

    assert (dest / "my-service" / "pyproject.toml").is_file()
    assert f"ready: API docs http://127.0.0.1:{port}/docs" in output
    assert "GET /items/1 -> 200" in output
    assert "GET /items/999999 -> 404" in output
    # The service's own development console (not the demo's lines) shows each request span, printed
    # when it starts, and the `item.fetched` event nested under it, although its stdout is a pipe.
    console = [line for line in output.splitlines() if not line.startswith("demo>")]
    assert any(line.endswith(" GET /items/1") for line in console), output
    assert any(line.endswith("  item.fetched") for line in console), output
    # The counters moved for the requests the demo sent, labelled by route template.
    counters = [line for line in output.splitlines() if "http_server_request_duration_seconds_count" in line]
    assert any(
        'http_route="/items/{item_id}"' in line and 'http_response_status_code="200"' in line
        for line in counters
    ), output

    # The README's `uvx copier copy ...`, as its one line says to run it without uv on PATH.
    service = tmp_path / "orders-api"
    copied = subprocess.run(
        [
            "scripts/uv",
            "tool",
            "run",
            "copier",
            "copy",
            "--quiet",
            "--defaults",
            "-r",
            "HEAD",
            ".",
            str(service),
        ],
        cwd=clone,
        env=fresh_machine_env(home),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert copied.returncode == 0, copied.stdout + copied.stderr
    assert (service / ".copier-answers.yml").is_file()
