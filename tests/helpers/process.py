"""Boot a generated service as a real process, wait for it, stop it with SIGTERM, keep its output.

    env = service_env(project.env(), port=port, otlp_endpoint=receiver.endpoint)
    with ServiceProcess([str(project.venv_bin / "my-service")], cwd=project.root, env=env, port=port) as svc:
        svc.wait_ready()
        httpx.get(svc.url + "/items/1")
        stopped = svc.stop()          # SIGTERM; exit code, stdout, stderr
    # leaving the block kills whatever is still running (also on failures)

Output goes to files, not pipes, so a chatty process can never block on a full pipe.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS picks it; tiny race accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def service_env(
    base: Mapping[str, str],
    *,
    port: int,
    otlp_endpoint: str | None = None,
    run_mode: str = "production",
    environment: str = "e2e",
    **extra: str,
) -> dict[str, str]:
    """The generated service's environment for a boot test.

    Production behaviour by default, labelled `e2e` (ENVIRONMENT is a label apart from RUN_MODE).
    No LOGFIRE_TOKEN (nothing may reach Logfire's cloud) and no inherited OTEL_* settings; every
    trace kept (LOGFIRE_TRACE_SAMPLE_RATE=1.0, production's default is 0.1); spans exported every
    100 ms instead of every 5 s, so tests wait for spans, not for a timer. No PYTHONUNBUFFERED:
    the service must write its lines to a file or pipe by itself.
    """
    env = {
        k: v
        for k, v in base.items()
        if not k.startswith(("OTEL_", "LOGFIRE_")) and k not in {"PORT", "PYTHONUNBUFFERED"}
    }
    env.update(
        RUN_MODE=run_mode,
        ENVIRONMENT=environment,
        HOST="127.0.0.1",
        PORT=str(port),
        LOGFIRE_TRACE_SAMPLE_RATE="1.0",
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    if otlp_endpoint is not None:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp_endpoint
    env.update(extra)
    return env


@dataclass(frozen=True)
class Stopped:
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"exit code {self.returncode}\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"


class ServiceProcess:
    def __init__(
        self,
        args: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        port: int,
        host: str = "127.0.0.1",
        ready_path: str = "/readyz",
    ) -> None:
        self.args = list(args)
        self.cwd = cwd
        self.env = dict(env)
        self.url = f"http://{host}:{port}"
        self.ready_path = ready_path
        self._log_dir = Path(tempfile.mkdtemp(prefix="service-"))
        self._stdout_path = self._log_dir / "stdout"
        self._stderr_path = self._log_dir / "stderr"
        self.process: subprocess.Popen[bytes] | None = None
        self.stopped: Stopped | None = None

    # --- lifecycle ---

    def start(self) -> ServiceProcess:
        with self._stdout_path.open("wb") as stdout, self._stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                self.args,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                # Its own process group: cleanup can kill anything it spawned, and a Ctrl-C aimed
                # at pytest does not reach it first.
                start_new_session=True,
            )
        return self

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def output(self) -> tuple[str, str]:
        read = lambda path: path.read_bytes().decode("utf-8", "replace") if path.exists() else ""  # noqa: E731
        return read(self._stdout_path), read(self._stderr_path)

    def describe(self) -> str:
        stdout, stderr = self.output()
        code = None if self.process is None else self.process.poll()
        return (
            f"`{' '.join(self.args)}` (exit code {code})\n"
            f"--- stdout ---\n{stdout[-15000:]}\n--- stderr ---\n{stderr[-15000:]}"
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Poll the readiness endpoint until it answers 200; fail with the process output."""
        assert self.process is not None, "not started"
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the service exited before it was ready: {self.describe()}")
            try:
                response = httpx.get(self.url + self.ready_path, timeout=2.0)
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text[:200]}"
            except httpx.TransportError as error:
                last = repr(error)
            time.sleep(0.1)
        raise AssertionError(f"{self.ready_path} not 200 after {timeout}s (last: {last}): {self.describe()}")

    def stop(self, timeout: float = 30.0) -> Stopped:
        """Send one real SIGTERM to the server process and wait for it to exit on its own."""
        assert self.process is not None, "not started"
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            returncode = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"still running {timeout}s after SIGTERM (killed): {self.describe()}"
            ) from None
        stdout, stderr = self.output()
        self.stopped = Stopped(returncode, stdout, stderr)
        return self.stopped

    def kill(self) -> None:
        """Make sure nothing of it is left running (SIGKILL to its process group)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
