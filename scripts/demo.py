# /// script
# requires-python = ">=3.11"
# dependencies = ["copier>=9.19,<10"]
# ///
"""Generate a service from this checkout with default answers, start it, and show its telemetry.

    uv run scripts/demo.py            # generate into build/demo/, start, keep running (Ctrl-C stops)
    uv run scripts/demo.py --once     # the same, but stop after the sample requests (used by tests)

It needs copier only (the inline metadata above: `uv run` installs just that, not the template's
test tools). The generated service gets its own environment (`uv sync`), made by the uv that runs
this script: `uv run` exports its path as UV, and scripts/uv's own uv is not on PATH.

The service runs in the development run mode: spans and logs print readably on this console.
A few sample requests with tenant headers are sent as soon as it is ready, so a request trace,
its `item.fetched` event and the moved Prometheus counters are visible within seconds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import copier

REPO_DIR = Path(__file__).resolve().parent.parent
DEFAULT_DEST = REPO_DIR / "build" / "demo"
SERVICE_SLUG = "my-service"  # the default answer for project_slug
SAMPLE_TENANT = {
    "X-Account-Id": "acct-42",
    "X-Agent-Instance-Id": "agent-7",
    "X-Session-Id": "sess-2026",
    "X-LLM-Request-Id": "llmreq-1",
}


def generate(dest: Path) -> Path:
    project = dest / SERVICE_SLUG
    if project.exists():
        print(f"demo> deleting the previous demo service in {project}", flush=True)
        shutil.rmtree(project)
    copier.run_copy(str(REPO_DIR), str(project), vcs_ref="HEAD", defaults=True, unsafe=False, quiet=True)
    return project


def uv_executable() -> str:
    """The uv that runs this script (UV, set by `uv run`), else the one on PATH."""
    found = os.environ.get("UV") or shutil.which("uv")
    if not found:
        raise SystemExit("demo> uv not found: run this script as `scripts/uv run scripts/demo.py`")
    return found


def port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def wait_until_ready(base_url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the service exited with code {process.returncode} before it was ready")
        try:
            if get(f"{base_url}/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the service was not ready within {timeout:.0f} s")


def show_sample_traffic(base_url: str) -> None:
    for item_id in (1, 2, 999_999):
        status, body = get(f"{base_url}/items/{item_id}", SAMPLE_TENANT)
        print(f"demo> GET /items/{item_id} -> {status} {body}", flush=True)
    _, metrics = get(f"{base_url}/metrics")
    counts = [
        line for line in metrics.splitlines() if line.startswith("http_server_request_duration_seconds_count")
    ]
    print("demo> request counters on /metrics:", flush=True)
    for line in counts:
        print(f"demo>   {line}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dest", type=Path, default=DEFAULT_DEST, help="where to generate (default: build/demo)"
    )
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default: 8000)")
    parser.add_argument("--once", action="store_true", help="stop after the sample requests")
    args = parser.parse_args()
    if port_in_use(args.port):
        busy, args.port = args.port, free_port()
        print(f"demo> port {busy} is busy: using {args.port} instead (choose one with --port)", flush=True)

    print(f"demo> generating a service with default answers into {args.dest / SERVICE_SLUG}", flush=True)
    uv = uv_executable()
    project = generate(args.dest.resolve())
    print("demo> installing its environment (uv sync)", flush=True)
    subprocess.run([uv, "sync", "--quiet"], cwd=project, check=True)

    base_url = f"http://127.0.0.1:{args.port}"
    env = {**os.environ, "RUN_MODE": "development", "HOST": "127.0.0.1", "PORT": str(args.port)}
    env.pop("VIRTUAL_ENV", None)  # the service has its own environment, not this repo's
    print(f"demo> starting it: uv run {SERVICE_SLUG}", flush=True)
    process = subprocess.Popen([uv, "run", "--quiet", SERVICE_SLUG], cwd=project, env=env)
    try:
        wait_until_ready(base_url, process, timeout=60)
        print(
            f"demo> ready: API docs {base_url}/docs, metrics {base_url}/metrics, "
            f"health {base_url}/healthz and {base_url}/readyz",
            flush=True,
        )
        print(
            "demo> telemetry: spans and logs print on this console (development); set "
            "OTEL_EXPORTER_OTLP_ENDPOINT or LOGFIRE_TOKEN to ship them",
            flush=True,
        )
        show_sample_traffic(base_url)
        if args.once:
            return 0
        print(f"demo> try: curl -H 'X-Account-Id: acct-1' {base_url}/items/1   (Ctrl-C stops)", flush=True)
        process.wait()
        return process.returncode
    except KeyboardInterrupt:
        return 0
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    sys.exit(main())
