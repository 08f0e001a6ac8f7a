"""The default service under gunicorn with 2 real uvicorn workers: metrics stay right across workers.

The generated project is started the way its README says (`gunicorn -c gunicorn.conf.py`), with a
test-only wrapper app (written into a temporary directory, the service has no debug routes) that
adds one route holding its request until the test releases it. Which worker served what is read
from the per-process files in PROMETHEUS_MULTIPROC_DIR, which is what multiprocess mode merges.

- totals: N requests over fresh connections reach both workers; every scrape shows exactly N;
- a worker killed with SIGKILL while it holds requests: gunicorn replaces it, its `child_exit`
  hook drops the dead worker's in-progress count, and the gauge returns to 0 (its finished
  requests still count); a control run with the same config minus `child_exit` stays stuck;
- SIGTERM: the master stops both workers and exits 0.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from helpers.process import ServiceProcess, free_port, service_env
from helpers.project_env import ProjectEnv
from helpers.prometheus import MetricKey, scrape
from prometheus_client.multiprocess import MultiProcessCollector

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("env-copier-default")]

REQUESTS = 200
HOLDS = 6
COUNT = "http_server_request_duration_seconds_count"
ACTIVE = "http_server_active_requests"
CLOSE = {"Connection": "close"}  # a new connection per request, so that any worker may take it

WRAPPER = '''\
"""Test-only app: the generated service plus a route that holds requests until released."""

import asyncio
from pathlib import Path

from {package}.app import create_app

RELEASE = Path({release!r})

app = create_app()


@app.get("/mw/hold")
async def hold() -> dict[str, bool]:
    while not RELEASE.exists():
        await asyncio.sleep(0.02)
    return {{"held": True}}
'''

# The shipped config minus its child_exit hook (gunicorn reads the settings from the module).
CONTROL_CONF = """\
import runpy

globals().update(
    (name, value)
    for name, value in runpy.run_path({conf!r}).items()
    if name != "child_exit" and not name.startswith("__")
)
"""


@dataclass
class Gunicorn:
    service: ServiceProcess
    multiproc_dir: Path
    release: Path
    metrics_url: str

    @property
    def url(self) -> str:
        return self.service.url

    def workers(self) -> list[int]:
        master = self.service.pid
        return [int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()]

    def wait(self, condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.service.process is not None and self.service.process.poll() is not None:
                raise AssertionError(f"gunicorn exited while waiting for {what}: {self.service.describe()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} after {timeout}s: {self.service.describe()}")
            time.sleep(0.05)

    def serving(self, pids: set[int]) -> bool:
        """Whether each of `pids` has answered a request (a 404 on a fresh connection, not counted below).

        Read from the workers' own files rather than from their logs, whose format the service owns.
        """
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda _: httpx.get(self.url + "/items/0", headers=CLOSE, timeout=30), range(4)))
        answered = self.per_worker("histogram", COUNT, http_response_status_code="404")
        return all(answered.get(pid, 0) > 0 for pid in pids)

    def per_worker(self, kind: str, name: str, **labels: str) -> dict[int, float]:
        """`name`'s value in each process's own file (`kind` is counter, histogram, gauge_livesum)."""
        values: dict[int, float] = {}
        for path in self.multiproc_dir.glob(f"{kind}_*.db"):
            pid = int(path.stem.rsplit("_", 1)[1])
            values[pid] = sum(
                sample.value
                for metric in MultiProcessCollector.merge([str(path)])
                for sample in metric.samples
                if sample.name == name and labels.items() <= sample.labels.items()
            )
        return values

    def scrape(self) -> dict[MetricKey, float]:
        # A new connection each time, so that any worker may answer.
        return scrape(self.metrics_url, headers=CLOSE)


def value(scrape: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return scrape.get((name, frozenset(labels.items())), 0.0)


def items_ok(scrape: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> float:
    return value(
        scrape,
        COUNT,
        http_request_method="GET",
        http_route="/items/{item_id}",
        http_response_status_code="200",
    )


@pytest.fixture
def start_gunicorn(
    project_env: Callable[[str, str], ProjectEnv], tmp_path: Path, redis_url: str
) -> Iterator[Callable[..., Gunicorn]]:
    started: list[ServiceProcess] = []

    def start(child_exit: bool = True, variant: str = "default") -> Gunicorn:
        project = project_env("copier", variant)
        answers = yaml.safe_load((project.root / ".copier-answers.yml").read_text())
        package = answers["package_name"]
        workdir = tmp_path / f"run{len(started)}"
        multiproc_dir = workdir / "prometheus"
        multiproc_dir.mkdir(parents=True)
        release = workdir / "release"
        (workdir / "mw_app.py").write_text(WRAPPER.format(package=package, release=str(release)))
        conf = project.root / "gunicorn.conf.py"
        if not child_exit:
            control = workdir / "control.conf.py"
            control.write_text(CONTROL_CONF.format(conf=str(conf)))
            conf = control
        port = free_port()
        metrics_port = free_port() if answers["metrics_separate_port"] else port
        env = service_env(
            project.env(),
            port=port,
            PYTHONPATH=str(workdir),
            WEB_CONCURRENCY="2",
            PROMETHEUS_MULTIPROC_DIR=str(multiproc_dir),
            METRICS_PORT=str(metrics_port),
            # all_features is ready once its Redis answers.
            REDIS_URL=redis_url,
        )
        args = [str(project.venv_bin / "gunicorn"), "-c", str(conf), "mw_app:app"]
        service = ServiceProcess(args, cwd=project.root, env=env, port=port)
        started.append(service)
        service.start()
        service.wait_ready(timeout=120)
        run = Gunicorn(service, multiproc_dir, release, f"http://127.0.0.1:{metrics_port}/metrics")
        run.wait(lambda: len(run.workers()) == 2 and run.serving(set(run.workers())), "2 serving workers")
        return run

    yield start
    for service in started:
        service.kill()


def hold_requests(run: Gunicorn, pool: ThreadPoolExecutor) -> list[Future[int]]:
    """HOLDS requests that stay in flight until `run.release` exists, all counted in progress."""

    def one() -> int:
        try:
            return httpx.get(run.url + "/mw/hold", headers=CLOSE, timeout=120).status_code
        except httpx.TransportError:
            return -1  # its worker was killed

    held = [pool.submit(one) for _ in range(HOLDS)]
    run.wait(
        lambda: sum(run.per_worker("gauge_livesum", ACTIVE).values()) == HOLDS,
        f"{HOLDS} requests in progress",
    )
    return held


def kill_a_busy_worker(run: Gunicorn) -> tuple[int, int]:
    """SIGKILL a worker that holds requests; wait until gunicorn has booted its replacement."""
    in_flight = run.per_worker("gauge_livesum", ACTIVE)
    victim = max(in_flight, key=lambda pid: in_flight[pid])
    assert in_flight[victim] > 0 and victim in run.workers()
    before = set(run.workers())
    os.kill(victim, signal.SIGKILL)
    run.wait(
        lambda: (
            victim not in run.workers()
            and len(run.workers()) == 2
            and run.serving(set(run.workers()) - before)
        ),
        "replacement worker",
    )
    return victim, int(in_flight[victim])


def test_totals_are_exact_across_workers_and_a_killed_worker_is_cleaned_up(
    start_gunicorn: Callable[..., Gunicorn],
) -> None:
    started = time.monotonic()
    run = start_gunicorn(True)
    workers = run.workers()

    # N requests, each on a fresh connection, a few at a time: the kernel hands them to both workers.
    def item(_: int) -> int:
        return httpx.get(run.url + "/items/1", headers=CLOSE, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(item, range(REQUESTS)))
    assert statuses == [200] * REQUESTS

    served = run.per_worker(
        "histogram", COUNT, http_route="/items/{item_id}", http_response_status_code="200"
    )
    assert set(served) == set(workers), f"each worker writes its own file: {served}"
    assert all(count > 0 for count in served.values()), f"both workers served requests: {served}"
    assert sum(served.values()) == REQUESTS

    # Whichever worker answers a scrape, it reports the total of both.
    totals = [items_ok(run.scrape()) for _ in range(8)]
    assert totals == [REQUESTS] * 8, served

    # A worker dies (SIGKILL, e.g. the OOM killer) while it holds requests.
    with ThreadPoolExecutor(max_workers=HOLDS) as pool:
        held = hold_requests(run, pool)
        assert value(run.scrape(), ACTIVE, http_request_method="GET") == HOLDS
        victim, victim_held = kill_a_busy_worker(run)
        survivors_held = HOLDS - victim_held
        # child_exit has run: only the survivor's requests are still in progress.
        assert not (run.multiproc_dir / f"gauge_livesum_{victim}.db").exists()
        assert value(run.scrape(), ACTIVE, http_request_method="GET") == survivors_held
        run.release.touch()
        results = [future.result() for future in held]
    assert sorted(results) == sorted([-1] * victim_held + [200] * survivors_held)

    after = run.scrape()
    assert value(after, ACTIVE, http_request_method="GET") == 0
    # The dead worker's finished requests are kept: counters and histograms are not live files.
    assert items_ok(after) == REQUESTS
    held_ok = {"http_request_method": "GET", "http_route": "/mw/hold", "http_response_status_code": "200"}
    assert value(after, COUNT, **held_ok) == survivors_held, "killed requests never finished"

    stopped = run.service.stop()
    assert stopped.returncode == 0, str(stopped)
    output = stopped.stdout + stopped.stderr
    assert "Shutting down: Master" in output, str(stopped)
    assert "Traceback" not in output, str(stopped)
    print(
        f"\nmultiworker: {REQUESTS} requests served {served}, scrapes {totals}; "
        f"in progress {HOLDS} -> killed {victim} holding {victim_held} -> {survivors_held} -> 0; "
        f"{time.monotonic() - started:.1f}s"
    )


def test_without_child_exit_a_killed_workers_requests_stay_in_progress(
    start_gunicorn: Callable[..., Gunicorn],
) -> None:
    run = start_gunicorn(False)

    with ThreadPoolExecutor(max_workers=HOLDS) as pool:
        held = hold_requests(run, pool)
        victim, victim_held = kill_a_busy_worker(run)
        run.release.touch()
        for future in held:
            future.result()

    # The dead worker's file is still there, so its requests look in progress forever.
    assert (run.multiproc_dir / f"gauge_livesum_{victim}.db").exists()
    stuck = [value(run.scrape(), ACTIVE, http_request_method="GET") for _ in range(4)]
    assert stuck == [victim_held] * 4
    assert run.service.stop().returncode == 0
    print(
        f"\nmultiworker control (no child_exit): killed {victim} holding {victim_held}; gauge stays {stuck}"
    )


@pytest.mark.xdist_group("env-copier-all_features")
def test_with_a_metrics_port_the_master_serves_the_merged_metrics(
    start_gunicorn: Callable[..., Gunicorn],
) -> None:
    """all_features (METRICS_PORT): the workers cannot share that port, gunicorn's master serves it."""
    run = start_gunicorn(variant="all_features")

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(
            pool.map(
                lambda _: httpx.get(run.url + "/items/1", headers=CLOSE, timeout=30).status_code, range(50)
            )
        )
    assert statuses == [200] * 50

    assert [items_ok(run.scrape()) for _ in range(4)] == [50] * 4
    assert httpx.get(run.url + "/metrics", timeout=10).status_code == 404, "metrics leak on the public port"
    gzipped = httpx.get(run.metrics_url, headers={"Accept-Encoding": "gzip"}, timeout=10)
    assert gzipped.headers["content-encoding"] == "gzip"
    stopped = run.service.stop()
    assert stopped.returncode == 0, str(stopped)
    assert "Traceback" not in stopped.stdout + stopped.stderr, str(stopped)
