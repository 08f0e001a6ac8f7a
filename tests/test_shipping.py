"""The generated service's shipping files: container image, CI workflow, Makefile, pre-commit.

There is no Docker engine and no GitHub here, so every file is checked with the tools its users
would run, all installed from PyPI (hadolint, actionlint with shellcheck, check-jsonschema's vendored
GitHub-workflow schema, pre-commit and pre-commit-hooks; each shown to fail on a broken input), by
its structure, and by running for real what can run here: `make lint typecheck test`, `make dev`,
the README's quick start, the kustomize render, promtool, the hygiene hooks, and the image's
production command in an emulated container (non-editable install of the build context only,
started as uid 10001 over files it cannot write, probed with the image's own HEALTHCHECK).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from helpers import variants
from helpers.process import ServiceProcess, free_port, service_env
from helpers.project_env import ProjectEnv, clean_env, find_python
from packaging.specifiers import SpecifierSet
from packaging.version import Version

VENV_BIN = Path(sys.executable).parent

# Together they take every branch of the shipping files: default (Kubernetes on, metrics on the
# HTTP port, Python 3.11), with_kubernetes_off (no k8s targets, CI job or README rows), all_features
# (metrics on their own port: second EXPOSE, METRICS_PORT), python_3_13 (base image, CI Python).
SHIPPING_VARIANTS = ("default", "with_kubernetes_off", "all_features", "python_3_13")
K8S_VARIANTS = tuple(name for name in SHIPPING_VARIANTS if variants.effective_flags(name)["with_kubernetes"])

COMMON_TARGETS = {
    "help",
    "install",
    "dev",
    "run",
    "run-prod",
    "test",
    "lint",
    "format",
    "typecheck",
    "check",
    "docker-build",
    "up",
    "down",
    "rules-test",
}
KUBERNETES_TARGETS = {"k8s-render", "prometheusrule"}
DATABASE_TARGETS = {"migrate"}


# --------------------------------------------------------------------------------------------
# Generation


@dataclass(frozen=True)
class Project:
    name: str
    path: Path
    answers: dict[str, Any]

    def read(self, relative: str) -> str:
        return (self.path / relative).read_text(encoding="utf-8")


def _answers(path: Path) -> dict[str, Any]:
    answers = yaml.safe_load((path / ".copier-answers.yml").read_text(encoding="utf-8"))
    return {key: value for key, value in answers.items() if not key.startswith("_")}


@pytest.fixture(scope="module", params=SHIPPING_VARIANTS)
def project(request: pytest.FixtureRequest, generated: Callable[[str, str], Path]) -> Project:
    """The copier-generated variant (shared by the session: read it, never write to it)."""
    path = generated("copier", request.param)
    return Project(request.param, path, _answers(path))


@pytest.fixture(scope="module", params=K8S_VARIANTS)
def k8s_project(request: pytest.FixtureRequest, generated: Callable[[str, str], Path]) -> Project:
    """A copier-generated variant with the Kubernetes manifests (with_kubernetes on)."""
    path = generated("copier", request.param)
    return Project(request.param, path, _answers(path))


@pytest.fixture
def locked_project(
    project: Project,
    project_env: Callable[[str, str], ProjectEnv],
    uv_cache_dir: Path,
    tmp_path: Path,
) -> Path:
    """The project with a uv.lock, as after the README's first `uv sync` (the image needs it)."""
    if project.name in variants.CHECKED_VARIANTS:
        return project_env("copier", project.name).root
    python = find_python(project.answers["python_version"])
    if python is None:
        pytest.skip(f"no Python {project.answers['python_version']} installed to lock with")
    copy = tmp_path / "service"
    shutil.copytree(project.path, copy)
    result = run(["uv", "lock", "--quiet", "--python", python], copy, clean_env(uv_cache_dir))
    assert result.returncode == 0, result.stderr
    return copy


@pytest.fixture
def default_project(generated: Callable[[str, str], Path]) -> Project:
    """The default variant alone, for the checks that are run once (real runs, mutations)."""
    path = generated("copier", "default")
    return Project("default", path, _answers(path))


def run(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def tool(name: str) -> str:
    """A tool from this repo's dev environment (the wheels in pyproject.toml), else from PATH."""
    local = VENV_BIN / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run `uv sync` in the template repo")
    return found


def tool_env() -> dict[str, str]:
    """PATH with the dev environment first (actionlint finds shellcheck, make finds kubectl)."""
    return {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


# --------------------------------------------------------------------------------------------
# Dockerfile


@dataclass
class Instruction:
    keyword: str
    value: str


def dockerfile_stages(project: Project) -> list[list[Instruction]]:
    """The Dockerfile's build stages, each a list of instructions (the FROM line first)."""
    from dockerfile_parse import DockerfileParser

    parser = DockerfileParser(path=str(project.path / "Dockerfile"))
    stages: list[list[Instruction]] = []
    for item in parser.structure:
        keyword = item["instruction"]
        if keyword == "COMMENT":
            continue
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(Instruction(keyword, item["value"]))
    return stages


def instruction_args(value: str) -> list[str]:
    return shlex.split(value)


def exec_form(value: str) -> list[str]:
    command = json.loads(value)
    assert isinstance(command, list), f"not in exec form (no shell, signals reach the app): {value}"
    return [str(part) for part in command]


def final_env(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in stage:
        if instruction.keyword == "ENV":
            for pair in instruction_args(instruction.value):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def healthcheck_command(stage: list[Instruction]) -> list[str]:
    (healthcheck,) = [i.value for i in stage if i.keyword == "HEALTHCHECK"]
    _options, _, command = healthcheck.partition("CMD ")
    return exec_form(command.strip())


def test_dockerfile_passes_hadolint(project: Project) -> None:
    result = run([tool("hadolint"), "--no-color", "Dockerfile"], project.path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_dockerfile_builds_with_uv_and_ships_a_small_non_root_runtime(project: Project) -> None:
    stages = dockerfile_stages(project)
    assert len(stages) == 2, "builder + runtime"
    builder, runtime = stages
    python = project.answers["python_version"]
    text = project.read("Dockerfile")
    assert f"ARG PYTHON_VERSION={python}\n" in text
    for stage in stages:
        assert stage[0].value.startswith("python:${PYTHON_VERSION}-slim")

    builder_text = "\n".join(f"{i.keyword} {i.value}" for i in builder)
    assert "COPY --from=ghcr.io/astral-sh/uv:" in builder_text
    assert "uv sync --frozen --no-dev" in builder_text
    assert "--mount=type=cache,target=/root/.cache/uv" in builder_text

    # Nothing from the build toolchain reaches the final image.
    runtime_text = "\n".join(f"{i.keyword} {i.value}" for i in runtime)
    for forbidden in ("gcc", "build-essential", "apt-get install", "/uv ", "pip install", "COPY src"):
        assert forbidden not in runtime_text
    copies = [instruction_args(i.value) for i in runtime if i.keyword == "COPY"]
    assert copies == [["--from=builder", "/app/.venv", "/app/.venv"]]

    # Non-root numeric user, set before the command runs.
    keywords = [i.keyword for i in runtime]
    (user,) = [i.value for i in runtime if i.keyword == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit() and int(gid) > 0
    assert keywords.index("USER") < keywords.index("CMD")


def test_dockerfile_runs_the_production_command(project: Project) -> None:
    runtime = dockerfile_stages(project)[-1]
    env = final_env(runtime)
    assert env["RUN_MODE"] == "production"
    assert "ENVIRONMENT" not in env, "where the image runs says where it is (overlays, compose)"
    assert env["HOST"] == "0.0.0.0"
    assert env["PORT"] == str(project.answers["http_port"])
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"].startswith("/app/.venv/bin:")

    (cmd,) = [i.value for i in runtime if i.keyword == "CMD"]
    assert exec_form(cmd) == [project.answers["project_slug"]]

    (expose,) = [i.value for i in runtime if i.keyword == "EXPOSE"]
    expected = [str(project.answers["http_port"])]
    if project.answers["metrics_separate_port"]:
        expected.append(str(project.answers["metrics_port"]))
        assert env["METRICS_PORT"] == str(project.answers["metrics_port"])
    else:
        assert "METRICS_PORT" not in env
    assert expose.split() == expected

    probe = healthcheck_command(runtime)
    assert probe[:2] == ["python", "-c"]
    assert "/healthz" in probe[2]


def test_dockerfile_user_matches_the_kubernetes_security_context(k8s_project: Project) -> None:
    runtime = dockerfile_stages(k8s_project)[-1]
    (user,) = [i.value for i in runtime if i.keyword == "USER"]
    deployment = yaml.safe_load(k8s_project.read("deploy/kubernetes/deployment.yaml"))
    pod = deployment["spec"]["template"]["spec"]["securityContext"]
    assert user == f"{pod['runAsUser']}:{pod['runAsGroup']}"
    assert pod["runAsNonRoot"] is True
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def dockerignore_admits(patterns: list[str], relative: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for raw in patterns:
        negated = raw.startswith("!")
        pattern = raw[1:] if negated else raw
        pattern = pattern.strip("/")
        variants = [pattern]
        if pattern.startswith("**/"):
            variants.append(pattern[3:])
        if any(fnmatch.fnmatchcase(c, v) for c in candidates for v in variants):
            included = negated
    return included


def dockerignore_patterns(project: Project) -> list[str]:
    lines = project.read(".dockerignore").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def build_context_sources(project: Project) -> list[str]:
    """Every path the build reads from the context: COPY sources and RUN bind mounts."""
    sources: list[str] = []
    for stage in dockerfile_stages(project):
        for instruction in stage:
            args = instruction_args(instruction.value)
            if instruction.keyword == "COPY" and not any(a.startswith("--from=") for a in args):
                sources += [a for a in args if not a.startswith("--")][:-1]
            if instruction.keyword == "RUN":
                for arg in args:
                    if arg.startswith("--mount=") and "type=bind" in arg:
                        options = dict(o.split("=", 1) for o in arg[len("--mount=") :].split(","))
                        sources.append(options["source"])
    return sources


def test_every_build_context_source_exists_and_passes_dockerignore(
    project: Project, locked_project: Path
) -> None:
    path = locked_project
    sources = build_context_sources(project)
    assert {"pyproject.toml", "uv.lock", "README.md", "src"} <= set(sources)
    patterns = dockerignore_patterns(project)
    for source in sources:
        assert (path / source).exists(), f"COPY/bind source {source} is not in the generated project"
        assert dockerignore_admits(patterns, source), f".dockerignore drops {source}"
    # What must never reach the build context.
    for private in (".git", ".venv", "tests", ".env", "deploy", ".pytest_cache", "src/x/__pycache__"):
        assert not dockerignore_admits(patterns, private), f".dockerignore admits {private}"


def build_context_copy(project: Project, checkout: Path, destination: Path) -> None:
    """The files `docker build` would send from a working copy, selected by .dockerignore."""
    patterns = dockerignore_patterns(project)
    for source in sorted(checkout.rglob("*")):
        relative = source.relative_to(checkout).as_posix()
        if source.is_file() and dockerignore_admits(patterns, relative):
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


@pytest.fixture
def world_readable_tmp() -> Iterator[Path]:
    """A scratch folder uid 10001 can enter (pytest's own tmp folders are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="shipping-image-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
def test_image_command_serves_healthz_as_non_root_from_a_read_only_install(
    default_project: Project,
    project_env: Callable[[str, str], ProjectEnv],
    world_readable_tmp: Path,
) -> None:
    """The builder's uv commands and the runtime's ENV/USER/CMD/HEALTHCHECK, without Docker.

    The build context is taken from a synced working copy (with .venv and caches in it), so a
    .dockerignore that let too little or too much through would show here.
    """
    # One run stands for all variants: their Dockerfiles differ only in ports and Python version.
    project = default_project
    synced = project_env("copier", "default").root
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to start the service as uid 10001")
    python = Path(f"/usr/bin/python{project.answers['python_version']}")
    if not python.exists():
        pytest.skip(f"{python} (readable by non-root users) is not installed")
    runtime = dockerfile_stages(project)[-1]
    context = world_readable_tmp / "context"
    app = world_readable_tmp / "app"
    build_context_copy(project, synced, context)
    assert not (context / ".venv").exists()
    build_env = {
        **os.environ,
        "UV_PROJECT_ENVIRONMENT": str(app / ".venv"),
        "UV_COMPILE_BYTECODE": "1",
        "UV_LINK_MODE": "copy",
        "UV_PYTHON": str(python),
        "UV_PYTHON_DOWNLOADS": "never",
    }
    for step in (["--no-install-project"], ["--no-editable"]):
        result = run(["uv", "sync", "--frozen", "--no-dev", "--quiet", *step], context, build_env)
        assert result.returncode == 0, result.stderr
    shutil.rmtree(context)  # the runtime stage has no source tree

    uid, _, gid = next(i.value for i in runtime if i.keyword == "USER").partition(":")
    as_user = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
    port = free_port()
    env = final_env(runtime)
    env["PATH"] = (
        env["PATH"].replace("/app/.venv/bin", str(app / ".venv/bin")).replace("${PATH}", "/usr/bin:/bin")
    )
    # Loopback instead of the image's 0.0.0.0: tests never listen on other interfaces.
    env.update(HOST="127.0.0.1", PORT=str(port), HOME="/nonexistent")
    if "METRICS_PORT" in env:
        env["METRICS_PORT"] = str(free_port())
    command = exec_form(next(i.value for i in runtime if i.keyword == "CMD"))
    log_path = world_readable_tmp / "service.log"
    log = log_path.open("w")
    server = subprocess.Popen([*as_user, *command], cwd=app, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        probe = [*as_user, *healthcheck_command(runtime)]
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, f"the service exited:\n{log_path.read_text()}"
            if run(probe, app, env, timeout=10).returncode == 0:
                break
            assert time.monotonic() < deadline, "HEALTHCHECK never passed"
            time.sleep(0.3)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
    output = log_path.read_text()
    # uvicorn re-raises SIGTERM after a graceful shutdown.
    assert server.returncode in (0, -signal.SIGTERM), output
    for trouble in ("Traceback", "Permission denied", "Read-only file system"):
        assert trouble not in output, output
    assert not list(app.rglob("*.pyc.*")), "the service tried to write bytecode"


# --------------------------------------------------------------------------------------------
# GitHub Actions workflow


def workflow(project: Project) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(project.read(".github/workflows/ci.yml"))
    return data


def steps_text(job: dict[str, Any]) -> str:
    return "\n".join(str(step.get("run", "")) for step in job["steps"])


def test_workflow_matches_the_github_schema(project: Project) -> None:
    result = run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", ".github/workflows/ci.yml"],
        project.path,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflow_passes_actionlint_and_shellcheck(project: Project) -> None:
    env = tool_env()
    assert shutil.which("shellcheck", path=env["PATH"]), "actionlint would skip the run: scripts"
    result = run([tool("actionlint"), "-no-color", ".github/workflows/ci.yml"], project.path, env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflow_lints_type_checks_and_tests_the_code(project: Project) -> None:
    ci = workflow(project)
    code = ci["jobs"]["code"]
    commands = steps_text(code)
    for expected in (
        "uv sync --locked",
        "uv run ruff check",
        "uv run ruff format --check",
        "uv run mypy",
        "uv run pytest",
    ):
        assert expected in commands
    assert ci["env"]["UV_PYTHON"] == project.answers["python_version"]
    # The tools CI runs through `uv run` are the project's own dev dependencies.
    pyproject = tomllib.loads(project.read("pyproject.toml"))
    dev = " ".join(pyproject["dependency-groups"]["dev"])
    for name in ("ruff", "mypy", "pytest"):
        assert name in dev
    # Same uv in CI as in the image build.
    uses = {step["uses"].split("@")[0]: step for step in code["steps"] if "uses" in step}
    uv_version = uses["astral-sh/setup-uv"]["with"]["version"]
    assert f"ghcr.io/astral-sh/uv:{uv_version} " in project.read("Dockerfile")


def test_workflow_checks_kubernetes_only_when_generated(project: Project) -> None:
    jobs = workflow(project)["jobs"]
    if not project.answers["with_kubernetes"]:
        assert "kubernetes" not in jobs
        return
    commands = steps_text(jobs["kubernetes"])
    render = next(line for line in commands.splitlines() if "kubectl kustomize" in line)
    directory = shlex.split(render)[2]
    assert (project.path / directory / "kustomization.yaml").exists()


def test_workflow_checks_the_rules(project: Project) -> None:
    """The rules exist with or without Kubernetes; their check also compares the PrometheusRule."""
    commands = steps_text(workflow(project)["jobs"]["rules"])
    assert "promtool" in commands
    rule_tests = next(line for line in commands.splitlines() if "deploy/prometheus/check.sh" in line)
    assert (project.path / shlex.split(rule_tests)[-1]).exists()


def test_workflow_builds_and_smoke_tests_the_image(project: Project) -> None:
    commands = steps_text(workflow(project)["jobs"]["container"])
    assert "hadolint Dockerfile" in commands
    assert "docker build" in commands
    assert "--read-only" in commands
    assert f"127.0.0.1:{project.answers['http_port']}/readyz" in commands
    if project.answers["with_sqlalchemy"] or project.answers["with_redis"]:
        # No datastore next to the container: alive, and not ready (it starts without them).
        assert f"127.0.0.1:{project.answers['http_port']}/healthz" in commands
        assert '"status":"unavailable"' in commands


def test_workflow_gives_the_tests_their_datastores(project: Project) -> None:
    """The migrations run on PostgreSQL and the Redis tests run in CI: not skipped there."""
    code = workflow(project)["jobs"]["code"]
    services, env = code.get("services", {}), code.get("env", {})
    assert ("postgres" in services) == ("TEST_DATABASE_URL" in env) == project.answers["with_sqlalchemy"]
    assert ("redis" in services) == ("TEST_REDIS_URL" in env) == project.answers["with_redis"]
    if project.answers["with_sqlalchemy"]:
        postgres = services["postgres"]["env"]
        user, password, database = (postgres[f"POSTGRES_{k}"] for k in ("USER", "PASSWORD", "DB"))
        port = services["postgres"]["ports"][0].split(":")[0]
        assert (
            env["TEST_DATABASE_URL"] == f"postgresql+asyncpg://{user}:{password}@127.0.0.1:{port}/{database}"
        )
    if project.answers["with_redis"]:
        port = services["redis"]["ports"][0].split(":")[0]
        assert env["TEST_REDIS_URL"].startswith(f"redis://127.0.0.1:{port}/")


def test_the_linters_are_not_vacuous(default_project: Project, tmp_path: Path) -> None:
    """Each linter, fed the generated file with one typical mistake, fails (so a pass means something)."""
    project = default_project
    dockerfile = project.read("Dockerfile").replace("USER 10001:10001", "USER root")
    dockerfile = dockerfile.replace("WORKDIR /app\n", "WORKDIR /app\nRUN apt-get install gcc\n", 1)
    (tmp_path / "Dockerfile").write_text(dockerfile)
    linted = run([tool("hadolint"), "--no-color", "Dockerfile"], tmp_path)
    assert linted.returncode != 0
    assert "DL3002" in linted.stdout  # last USER is root
    assert "DL3008" in linted.stdout  # unpinned apt package

    workflow_text = project.read(".github/workflows/ci.yml")
    broken = workflow_text.replace("run: uv run pytest", 'run: uv run pytest -k "${{ matrix.nope }}"')
    assert broken != workflow_text
    (tmp_path / ".github/workflows").mkdir(parents=True)
    (tmp_path / ".github/workflows/ci.yml").write_text(broken)
    checked = run([tool("actionlint"), "-no-color", ".github/workflows/ci.yml"], tmp_path, tool_env())
    assert checked.returncode != 0
    assert "matrix" in checked.stdout

    (tmp_path / ".github/workflows/ci.yml").write_text(workflow_text.replace("runs-on:", "runs_on:"))
    schema = [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows"]
    assert run([*schema, ".github/workflows/ci.yml"], tmp_path).returncode != 0

    hooks = project.read(".pre-commit-config.yaml").replace("rev:", "revision:", 1)
    (tmp_path / ".pre-commit-config.yaml").write_text(hooks)
    validated = run([tool("pre-commit"), "validate-config", ".pre-commit-config.yaml"], tmp_path)
    assert validated.returncode != 0


# --------------------------------------------------------------------------------------------
# Makefile


def make_targets(project: Project) -> set[str]:
    """The documented targets (`target: ... ## help`), which `make help` lists."""
    targets = set()
    for line in project.read("Makefile").splitlines():
        if "## " in line and ":" in line and not line.startswith(("\t", "#")):
            targets.add(line.split(":", 1)[0])
    return targets


def test_makefile_has_the_everyday_targets(project: Project) -> None:
    expected = COMMON_TARGETS | (KUBERNETES_TARGETS if project.answers["with_kubernetes"] else set())
    expected |= DATABASE_TARGETS if project.answers["with_sqlalchemy"] else set()
    assert make_targets(project) == expected
    result = run(["make", "help"], project.path)
    assert result.returncode == 0, result.stderr
    listed = {line.split()[0] for line in result.stdout.splitlines() if line.strip()}
    assert listed == expected
    # Help texts that mention make variables show their values.
    assert f"{project.answers['container_image']}:dev" in result.stdout and "$(" not in result.stdout


def test_every_make_target_expands(project: Project) -> None:
    """`make -n` parses the file (tabs!) and expands each recipe without running it."""
    for target in sorted(make_targets(project)):
        result = run(["make", "-n", target], project.path)
        assert result.returncode == 0, f"make -n {target}: {result.stderr}"
        assert result.stdout.strip(), target
    if not project.answers["with_kubernetes"]:
        for target in sorted(KUBERNETES_TARGETS):
            assert run(["make", "-n", target], project.path).returncode != 0


def test_make_recipes_call_the_real_entry_points(project: Project) -> None:
    def recipe(target: str) -> str:
        return run(["make", "-n", target], project.path).stdout

    # The same console script as `make run`, reloading: the same console as `uv run <service>`.
    assert recipe("dev").strip() == (
        f"HOST=127.0.0.1 PORT={project.answers['http_port']} "
        f"uv run {project.answers['project_slug']} --reload"
    )
    assert recipe("run").strip() == f"uv run {project.answers['project_slug']}"
    assert f"docker build --tag {project.answers['container_image']}:dev ." in recipe("docker-build")
    assert "docker compose --file deploy/local/compose.yaml up --build --detach --wait" in recipe("up")
    assert "docker compose --file deploy/local/compose.yaml down --volumes" in recipe("down")
    if project.answers["with_sqlalchemy"]:
        # The console script's migration step, as the local stack and the init container run it.
        assert recipe("migrate").strip() == f"uv run {project.answers['project_slug']} migrate"


def test_make_up_without_compose_says_so_in_one_line(default_project: Project, tmp_path: Path) -> None:
    """No docker at all, and (where this machine has one) docker without its Compose plugin."""
    make = shutil.which("make")
    assert make is not None
    no_docker = tmp_path / "bin"
    no_docker.mkdir()
    (no_docker / "make").symlink_to(make)
    paths = {"no docker": str(no_docker)}
    docker = shutil.which("docker")
    if docker and run([docker, "compose", "version"], tmp_path).returncode != 0:
        paths["docker without compose"] = f"{Path(docker).parent}{os.pathsep}{no_docker}"
    for case, path in paths.items():
        for target in ("up", "down"):
            result = run(["make", target], default_project.path, {**os.environ, "PATH": path})
            lines = (result.stdout + result.stderr).strip().splitlines()
            assert result.returncode != 0 and len(lines) == 1, (case, target, lines)
            assert "Docker Compose v2 not found" in lines[0] and f"make {target} COMPOSE=" in lines[0]


def test_make_k8s_render_builds_the_kustomize_base(k8s_project: Project) -> None:
    result = run(["make", "--no-print-directory", "k8s-render"], k8s_project.path, tool_env())
    assert result.returncode == 0, result.stderr
    kinds = {doc["kind"] for doc in yaml.safe_load_all(result.stdout.split("\n", 1)[1]) if doc}
    assert {"Deployment", "Service", "ServiceMonitor", "PrometheusRule"} <= kinds


def test_make_rules_test_runs_promtool(k8s_project: Project) -> None:
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed (.ci/run installs Debian's prometheus package)")
    result = run(["make", "rules-test"], k8s_project.path, tool_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


@pytest.mark.parametrize("variant", ["with_redis_on", "with_redis_off", "all_features"])
def test_readme_datastore_example_is_not_one_already_instrumented(
    generated: Callable[[str, str], Path], variant: str
) -> None:
    project = generated("copier", variant)
    readme = (project / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Add a datastore\n", 1)[1].split("\n#", 1)[0]
    [suggested] = re.findall(r"^logfire\.(instrument_\w+)\(\)$", section, flags=re.M)
    instrumented = "".join(path.read_text() for path in project.glob("src/*/telemetry/instrumentations.py"))
    assert f"logfire.{suggested}()" not in instrumented, suggested
    assert ("Redis is instrumented already" in section) == ("instrument_redis()" in instrumented)


def test_readme_documents_every_make_target(project: Project) -> None:
    documented = set(re.findall(r"`make ([a-z0-9-]+)", project.read("README.md")))
    assert documented == make_targets(project)


def test_uv_lock_is_not_gitignored(project: Project, tmp_path: Path) -> None:
    """The image build and CI (`uv sync --locked`) need uv.lock in the repository."""
    shutil.copy(project.path / ".gitignore", tmp_path / ".gitignore")
    assert run(["git", "init", "--quiet"], tmp_path).returncode == 0
    assert run(["git", "check-ignore", "--quiet", "uv.lock"], tmp_path).returncode == 1


# --------------------------------------------------------------------------------------------
# pre-commit


def precommit_config(project: Project) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(project.read(".pre-commit-config.yaml"))
    return data


def test_precommit_config_is_valid(project: Project) -> None:
    result = run([tool("pre-commit"), "validate-config", ".pre-commit-config.yaml"], project.path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_precommit_ruff_hooks_match_the_project_ruff(project: Project) -> None:
    (ruff,) = [r for r in precommit_config(project)["repos"] if r["repo"].endswith("/ruff-pre-commit")]
    assert [hook["id"] for hook in ruff["hooks"]] == ["ruff-check", "ruff-format"]
    # No --config or rule selection on the hook: it reads pyproject.toml like `make lint`.
    for hook in ruff["hooks"]:
        assert set(hook.get("args", [])) <= {"--fix"}
    pyproject = tomllib.loads(project.read("pyproject.toml"))
    (requirement,) = [r for r in pyproject["dependency-groups"]["dev"] if r.startswith("ruff")]
    specifier = SpecifierSet(requirement.removeprefix("ruff"))
    assert Version(ruff["rev"].removeprefix("v")) in specifier


# Hook id -> (console script of the pre-commit-hooks package, files it applies to).
HYGIENE_HOOKS = {
    "trailing-whitespace": ("trailing-whitespace-fixer", "*"),
    "end-of-file-fixer": ("end-of-file-fixer", "*"),
    "check-yaml": ("check-yaml", "*.y*ml"),
    "check-toml": ("check-toml", "*.toml"),
    "check-json": ("check-json", "*.json"),
    "check-merge-conflict": ("check-merge-conflict", "*"),
    "check-added-large-files": ("check-added-large-files", "*"),
    "detect-private-key": ("detect-private-key", "*"),
    "mixed-line-ending": ("mixed-line-ending", "*"),
}
# Flags that make the git-aware hooks check plain files (no repository, nothing staged).
OFFLINE_ARGS = {"check-merge-conflict": ["--assume-in-merge"], "check-added-large-files": ["--enforce-all"]}


def test_generated_files_pass_the_hygiene_hooks(project: Project, tmp_path: Path) -> None:
    """pre-commit fetches hooks from GitHub (unreachable here): run the same release from PyPI.

    A fresh project must not be rewritten by its own hooks on the first commit.
    """
    from importlib.metadata import version

    (hygiene,) = [r for r in precommit_config(project)["repos"] if r["repo"].endswith("/pre-commit-hooks")]
    assert hygiene["rev"] == f"v{version('pre-commit-hooks')}", "bump the rev or the dev dependency"
    assert {hook["id"] for hook in hygiene["hooks"]} == set(HYGIENE_HOOKS)

    copy = tmp_path / "service"
    shutil.copytree(project.path, copy, ignore=shutil.ignore_patterns(".venv", "*cache*", "uv.lock"))
    files = sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file())
    # As after `git init`: two of the hooks ask git about the repository.
    assert run(["git", "init", "--quiet"], copy).returncode == 0
    for hook in hygiene["hooks"]:
        script, pattern = HYGIENE_HOOKS[hook["id"]]
        selected = [f for f in files if fnmatch.fnmatch(Path(f).name, pattern)]
        if not selected:
            continue
        args = [*hook.get("args", []), *OFFLINE_ARGS.get(hook["id"], [])]
        result = run([tool(script), *args, *selected], copy)
        assert result.returncode == 0, f"{hook['id']}: {result.stdout}{result.stderr}"


# --------------------------------------------------------------------------------------------
# README quick start


def quick_start(readme: str) -> str:
    """The README's first section that shows shell commands (how to run, test and check it)."""
    for section in re.split(r"(?m)^## ", readme)[1:]:
        if "```sh" in section:
            return section
    raise AssertionError("the README shows no shell commands")


def shell_commands(section: str) -> list[str]:
    """Each command line of the section's sh blocks, plus `# or: <command>` alternatives."""
    commands: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL):
        for line in block.splitlines():
            command, _, comment = line.partition("#")
            if command.strip():
                commands.append(command.strip())
            alternative = re.match(r"\s*or:\s*(.+)", comment)
            if alternative:
                commands.append(alternative.group(1).strip())
    return commands


def served_urls(section: str) -> list[str]:
    return re.findall(r"\| (http://127\.0\.0\.1:\d+/\S*) \|", section)


@pytest.mark.slow
def test_make_check_and_the_readme_quick_start_run_for_real(
    default_project: Project, project_env: Callable[[str, str], ProjectEnv]
) -> None:
    """In the synced default project: `make lint typecheck test` runs, every command of the README's
    quick start works as written (commands `make` already ran are not repeated), and each way the
    README, `make dev` and `make run-prod` start the server answers 200 on every URL it lists."""
    # Once: the variant matrix runs ruff, mypy and pytest for the other checked variants.
    project = default_project
    env = project_env("copier", "default")
    # The environment is synced already and shared with other tests: `uv run` uses it as it is,
    # ruff and pytest leave no caches behind (mypy shares its cache: it writes it atomically).
    make_env = env.env(UV_NO_SYNC="1", RUFF_NO_CACHE="true", PYTEST_ADDOPTS="-p no:cacheprovider")
    made = env.run("make", "lint", "typecheck", "test", env=make_env, timeout=600)
    assert "All checks passed!" in made.stdout
    assert "Success: no issues found" in made.stdout
    assert " passed" in made.stdout
    already_run = set(made.stdout.splitlines())

    section = quick_start(project.read("README.md"))
    commands = shell_commands(section)
    slug, package = project.answers["project_slug"], project.answers["package_name"]
    servers = [f"uv run {slug}", f"uv run python -m {package}"]
    assert set(servers) <= set(commands), commands
    factory = re.search(r"`(uvicorn --factory [\w.:]+)`", section)
    assert factory is not None, "the README no longer shows the app factory command"
    urls = served_urls(section)
    assert any(url.endswith("/healthz") for url in urls), urls

    for command in commands:
        if command in servers:
            continue
        for part in (p.strip() for p in command.split("&&")):
            if part in already_run:
                continue
            result = env.run("bash", "-c", part, check=False, timeout=600)
            assert result.returncode == 0, f"`{part}`:\n{result.stdout[-4000:]}{result.stderr[-4000:]}"

    # All servers boot at once (each on its own free port) to keep the wall time down.
    http_port = str(project.answers["http_port"])
    started: list[tuple[str, int, ServiceProcess]] = []
    try:
        for command in [*servers, f"uv run {factory.group(1)}", "make dev", "make run-prod"]:
            port = free_port()
            if command.startswith("uv run uvicorn"):
                command += f" --host 127.0.0.1 --port {port}"
            if command == "make dev":
                command += f" DEV_PORT={port}"
            run_env = service_env(env.env(), port=port, run_mode="development")
            if command == "make run-prod":
                run_env["WEB_CONCURRENCY"] = "2"
            service = ServiceProcess(["bash", "-c", command], cwd=env.root, env=run_env, port=port)
            started.append((command, port, service.start()))
        for command, port, service in started:
            service.wait_ready(timeout=120)
            for url in urls:
                response = httpx.get(url.replace(f":{http_port}/", f":{port}/"), timeout=10)
                assert response.status_code == 200, f"{command}: GET {url} -> {response.status_code}"
    finally:
        for _, _, service in started:
            service.kill()
