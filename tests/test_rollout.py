"""A rollout loses nothing: the booted service, drained and then stopped the way Kubernetes stops a
pod, answers every request it was sent and exports the SERVER span of every one of them.

What the cluster does, played against the all-features service (console script, every trace kept,
OTLP export to a receiver in this process):
1. steady traffic from several keep-alive clients, the "router" (as kube-proxy would);
2. a few slow uploads (POST /notes with a body that trickles in) are started;
3. the endpoints controller removes the pod: the router starts no new request (the drain,
   `preStop` in the Deployment; shortened here), while the uploads are still in flight;
4. the kubelet sends SIGTERM after the drain; the uploads finish after it, and the process must
   exit within the rest of the Deployment's `terminationGracePeriodSeconds`.
Then: zero failed requests, and a SERVER span for every answered request (matched by its
`llm_request_id`).
"""

from __future__ import annotations

import itertools
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from helpers.otlp_receiver import OtlpReceiver
from helpers.process import ServiceProcess, free_port, service_env
from helpers.project_env import ProjectEnv

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("env-copier-all_features")]

STEADY_CLIENTS = 3
SLOW_UPLOADS = 3
STEADY_SECONDS = 1.0
DRAIN_SECONDS = 0.5  # the preStop sleep, shortened: only its order matters here
UPLOAD_SECONDS = 2.0  # longer than the drain: the uploads are in flight at SIGTERM


@dataclass(frozen=True)
class Outcome:
    request_id: str
    started: float
    finished: float
    status: int | None
    error: str | None


class Router:
    """Sends requests to the pod until the drain begins; records every outcome."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.routing = threading.Event()
        self.routing.set()
        self.outcomes: list[Outcome] = []
        self._ids = itertools.count()
        self._lock = threading.Lock()

    def _send(self, client: httpx.Client, method: str, path: str, **kwargs: Any) -> None:
        request_id = f"req-{next(self._ids)}"
        headers = {"X-LLM-Request-Id": request_id, "Content-Type": "application/json"}
        started = time.monotonic()
        status, error = None, None
        try:
            status = client.request(method, self.url + path, headers=headers, **kwargs).status_code
        except httpx.HTTPError as exc:
            error = repr(exc)
        with self._lock:
            self.outcomes.append(Outcome(request_id, started, time.monotonic(), status, error))

    def steady(self) -> None:
        with httpx.Client(timeout=30) as client:
            while self.routing.is_set():
                self._send(client, "GET", f"/items/{next(self._ids) % 3 + 1}")

    def slow_upload(self) -> None:
        def body() -> Iterator[bytes]:
            pieces = [b'{"text": ', b'"uploaded ', b"slowly", b'"}']
            for piece in pieces:
                yield piece
                time.sleep(UPLOAD_SECONDS / len(pieces))

        with httpx.Client(timeout=30) as client:
            self._send(client, "POST", "/notes", content=body())


def grace_after_drain(project: ProjectEnv) -> float:
    """What the Deployment leaves the process after SIGTERM: the grace period minus the drain."""
    deployment = yaml.safe_load((project.root / "deploy" / "kubernetes" / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return float(pod["terminationGracePeriodSeconds"] - container["lifecycle"]["preStop"]["sleep"]["seconds"])


def test_drain_then_sigterm_loses_no_request_and_no_span(
    project_env: Callable[[str, str], ProjectEnv], redis_url: str, tmp_path: Path
) -> None:
    project = project_env("copier", "all_features")
    with OtlpReceiver() as receiver:
        port = free_port()
        env = service_env(
            project.env(),
            port=port,
            otlp_endpoint=receiver.endpoint,
            METRICS_PORT=str(free_port()),
            DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'notes.sqlite3'}",
            REDIS_URL=redis_url,
        )
        project.run(str(project.console_script), "migrate", env=env)  # the uploads store notes
        with ServiceProcess([str(project.console_script)], cwd=project.root, env=env, port=port) as service:
            service.wait_ready()
            router = Router(service.url)
            steady = [threading.Thread(target=router.steady) for _ in range(STEADY_CLIENTS)]
            for thread in steady:
                thread.start()
            time.sleep(STEADY_SECONDS)
            uploads = [threading.Thread(target=router.slow_upload) for _ in range(SLOW_UPLOADS)]
            for thread in uploads:
                thread.start()
            time.sleep(0.2)
            router.routing.clear()  # the drain: no new requests for this pod
            time.sleep(DRAIN_SECONDS)
            sigterm_at = time.monotonic()
            # One SIGTERM, then the wait the kubelet grants before its SIGKILL.
            stopped = service.stop(timeout=grace_after_drain(project))
            for thread in steady + uploads:
                thread.join(timeout=30)
    spans = receiver.spans

    outcomes = router.outcomes
    failed = [o for o in outcomes if o.error or o.status not in (200, 201)]
    assert failed == [], f"{len(failed)} of {len(outcomes)} requests failed: {failed[:5]}"
    in_flight = [o for o in outcomes if o.started < sigterm_at < o.finished]
    assert len(in_flight) >= SLOW_UPLOADS, "the uploads must still be running when SIGTERM arrives"
    assert len(outcomes) > 50, f"only {len(outcomes)} requests: not steady traffic"

    assert stopped.returncode in (0, -signal.SIGTERM), str(stopped)
    assert "Traceback" not in stopped.stdout + stopped.stderr, str(stopped)
    assert receiver.errors == []
    server_spans = [s for s in spans if s.kind == "SERVER"]
    by_request = {s.attributes.get("llm_request_id"): s for s in server_spans}
    lost = [o.request_id for o in outcomes if o.request_id not in by_request]
    assert lost == [], f"{len(lost)} of {len(outcomes)} answered requests have no SERVER span: {lost[:5]}"
    assert len(server_spans) == len(outcomes), "one SERVER span per request"
    uploaded = [by_request[o.request_id] for o in in_flight]
    assert all(s.attributes["http.response.status_code"] == 201 for s in uploaded)
    print(
        f"\nrollout: {len(outcomes)} requests, {len(in_flight)} in flight at SIGTERM, "
        f"0 failed, {len(server_spans)} SERVER spans received"
    )
