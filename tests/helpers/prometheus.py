"""A real Prometheus server and promtool for the deploy tests.

- `promtool(...)` runs Debian's promtool (installed by `.ci/run` with the `prometheus` package).
- `rule_groups(path)` reads a PrometheusRule manifest and returns its `spec` (a plain rule file),
  `write_rule_file()` writes it where promtool and Prometheus can load it.
- `PrometheusServer` starts `prometheus` on 127.0.0.1 (free port, temporary config and data
  directory, 1 s scrape and rule evaluation), waits until it is ready, and wraps the HTTP API
  calls the tests need (instant queries, targets, rules, reload).
- `scrape(url)` reads a service's `/metrics` (Prometheus text format) into
  `{(sample name, labels): value}`.
- `local_stack_config(project, targets)` is a generated project's own local-stack configuration
  (deploy/local/prometheus.yml) with only what the container network decides swapped out.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

PROMETHEUS = "prometheus"
PROMTOOL = "promtool"


# A sample on /metrics: its name and its labels.
MetricKey = tuple[str, frozenset[tuple[str, str]]]


def scrape(url: str, headers: Mapping[str, str] | None = None) -> dict[MetricKey, float]:
    """A service's `/metrics`, one value per sample."""
    response = httpx.get(url, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def missing_binaries() -> list[str]:
    """The Prometheus binaries not on PATH (the tests fail with this list rather than skip)."""
    return [name for name in (PROMETHEUS, PROMTOOL) if shutil.which(name) is None]


def promtool(
    *args: str | os.PathLike[str], cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def rule_groups(prometheusrule: Path) -> dict[str, Any]:
    """The `spec` of a PrometheusRule manifest: exactly the content of a Prometheus rule file."""
    manifest = yaml.safe_load(prometheusrule.read_text(encoding="utf-8"))
    assert manifest["kind"] == "PrometheusRule", manifest["kind"]
    spec: dict[str, Any] = manifest["spec"]
    return spec


def write_rule_file(spec: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def rules(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Every recording and alerting rule of a rule file, in order."""
    return [rule for group in spec["groups"] for rule in group["rules"]]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrometheusError(AssertionError):
    pass


LOCAL_CONFIG = Path("deploy/local/prometheus.yml")


def local_stack_config(
    project: Path, targets: Sequence[str], interval: str = "1s"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The project's local-stack Prometheus configuration, ready to run on this machine.

    Only three things change, each decided by the compose network or the test's pace: the
    scrape target (`app:<port>` becomes the booted processes' addresses), the rule file path
    (`rules/` is where compose mounts deploy/prometheus/) and the scrape and evaluation
    intervals. Returns (the generated file as parsed, the configuration to run).
    """
    original: dict[str, Any] = yaml.safe_load((project / LOCAL_CONFIG).read_text(encoding="utf-8"))
    config: dict[str, Any] = yaml.safe_load(yaml.safe_dump(original))
    config["global"].update(scrape_interval=interval, evaluation_interval=interval)
    assert config["rule_files"] == ["rules/rules.yml"], config["rule_files"]
    config["rule_files"] = [str(project / "deploy" / "prometheus" / "rules.yml")]
    (job,) = config["scrape_configs"]
    (static,) = job["static_configs"]
    static["targets"] = list(targets)
    return original, config


@dataclass
class PrometheusServer:
    """`with PrometheusServer(workdir, targets={"job": ["127.0.0.1:8000"]}) as prom: prom.query(...)`."""

    workdir: Path
    targets: dict[str, Sequence[str]]
    rule_files: Sequence[Path] = ()
    interval: str = "1s"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    #: A complete configuration to run instead of the one built from `targets` and `rule_files`.
    base_config: dict[str, Any] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.workdir / "prometheus.log"

    def config(self) -> dict[str, Any]:
        if self.base_config is not None:
            return self.base_config
        return {
            "global": {"scrape_interval": self.interval, "evaluation_interval": self.interval},
            "rule_files": [str(path) for path in self.rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": list(addresses)}]}
                for job, addresses in self.targets.items()
            ],
        }

    def start(self, ready_timeout: float = 30) -> PrometheusServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_file = self.workdir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(self.config(), sort_keys=False), encoding="utf-8")
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config_file}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--web.enable-lifecycle",
                    # Keep exemplars so the dashboard's exemplar queries can be checked.
                    "--enable-feature=exemplar-storage",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait(
            lambda: httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200, ready_timeout, "ready"
        )
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def _wait(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise PrometheusError(f"prometheus exited with {self.process.returncode}:\n{self.log()}")
            try:
                if check():
                    return
            except (httpx.HTTPError, PrometheusError) as error:
                last_error = error
            time.sleep(0.2)
        raise PrometheusError(f"prometheus not {what} after {timeout} s ({last_error!r}):\n{self.log()}")

    def api(self, path: str, **params: Any) -> Any:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result (a list of {metric, value} for vectors)."""
        data = self.api("query", query=expr)
        if data["resultType"] != "vector":
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_exemplars(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("query_exemplars", query=expr, start=start, end=end)
        return result

    def targets_health(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self.api("targets")["activeTargets"]
        return active

    def rule_groups(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = self.api("rules")["groups"]
        return groups

    def wait_for(
        self, expr: str, timeout: float = 60, predicate: Callable[[list[dict[str, Any]]], bool] = bool
    ) -> list[dict[str, Any]]:
        """Poll an instant query until `predicate(result)` holds (default: a non-empty result)."""
        found: list[dict[str, Any]] = []

        def check() -> bool:
            nonlocal found
            found = self.query(expr)
            return predicate(found)

        self._wait(check, timeout, f"returning {expr!r} as expected (last: {found})")
        return found

    def wait_up(self, jobs: Iterable[str], timeout: float = 60) -> None:
        """Wait until every job's targets were scraped successfully (`up == 1`)."""
        for job in jobs:
            self.wait_for(f'up{{job="{job}"}} == 1', timeout)

    def wait_rules_evaluated(self, timeout: float = 60) -> list[dict[str, Any]]:
        """Wait until every loaded rule has been evaluated at least once; returns the rule groups."""

        def evaluated(groups: list[dict[str, Any]]) -> bool:
            return bool(groups) and all(
                rule.get("lastEvaluation", "").startswith("0001") is False
                for group in groups
                for rule in group["rules"]
            )

        groups: list[dict[str, Any]] = []

        def check() -> bool:
            nonlocal groups
            groups = self.rule_groups()
            return evaluated(groups)

        self._wait(check, timeout, "done evaluating every rule")
        return groups
