"""A generated project's own environment: a private copy of the project, `uv sync`-ed from its own
pyproject.toml with the shared uv cache, and a way to run commands inside it.

The generated output stays pristine (the engine-parity tests diff it); the environment lives in a
copy next to it, so `.venv`, `uv.lock` and tool caches never leak into those comparisons.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from helpers import variants

# Variables of the repo's own environment that must not steer the generated project's tools.
_LEAKY_ENV = (
    "VIRTUAL_ENV",
    "UV_PROJECT_ENVIRONMENT",
    "UV_PYTHON",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTEST_ADDOPTS",
    "PYTEST_XDIST_WORKER",
    "PYTEST_XDIST_WORKER_COUNT",
    "PYTEST_CURRENT_TEST",
    "LOGFIRE_TOKEN",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "COV_CORE_SOURCE",
)


def uv_executable() -> str | None:
    """The uv that runs the tests: `uv run` exports its own path as UV (scripts/uv's copy in
    .tools/ is not on PATH), else the uv on PATH; None without either."""
    exported = os.environ.get("UV")
    if exported and os.access(exported, os.X_OK):
        return exported
    return shutil.which("uv")


def put_uv_on_path() -> None:
    """Let every child process (a generated Makefile's `uv run`, a benchmark) find that same uv."""
    found = uv_executable()
    if found is None:
        return
    folder = str(Path(found).parent)
    path = os.environ.get("PATH", "")
    if folder not in path.split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([folder, path]) if path else folder


def default_uv_cache_dir() -> Path:
    """UV_CACHE_DIR if set, else uv's own default cache: shared by every worker and every run."""
    configured = os.environ.get("UV_CACHE_DIR")
    if configured:
        return Path(configured)
    found = uv_executable()
    if found:
        result = subprocess.run([found, "cache", "dir"], capture_output=True, text=True, check=False)
        if result.returncode == 0 and result.stdout.strip():
            return Path(result.stdout.strip())
    return Path.home() / ".cache" / "uv"


def _python_minor(executable: str) -> str | None:
    try:
        result = subprocess.run(
            [executable, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def find_python(version: str) -> str | None:
    """An installed interpreter for `version` ("3.12"), or None: the running one, pyenv, PATH."""
    candidates: list[str] = []
    if "{}.{}".format(*sys.version_info[:2]) == version:
        candidates.append(getattr(sys, "_base_executable", sys.executable))
    pyenv_root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates += sorted(glob.glob(f"{pyenv_root}/versions/{version}.*/bin/python{version}"), reverse=True)
    candidates += [f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"]
    on_path = shutil.which(f"python{version}")
    if on_path:
        candidates.append(on_path)
    for candidate in candidates:
        if os.path.exists(candidate) and _python_minor(candidate) == version:
            return candidate
    return None


def clean_env(uv_cache_dir: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in _LEAKY_ENV}
    env.update(
        UV_CACHE_DIR=str(uv_cache_dir),
        UV_PYTHON_DOWNLOADS="never",
        UV_NO_PROGRESS="1",
        NO_COLOR="1",
    )
    env.update(extra)
    return env


class CommandFailed(AssertionError):
    pass


@dataclass(frozen=True)
class ProjectEnv:
    root: Path
    python: str
    uv_cache_dir: Path

    @property
    def venv_bin(self) -> Path:
        return self.root / ".venv" / "bin"

    @property
    def package(self) -> str:
        """The service's import package, the one folder under src/ (either engine)."""
        (init,) = (self.root / "src").glob("*/__init__.py")
        return init.parent.name

    @property
    def console_script(self) -> Path:
        """The service's console script (`[project.scripts]` has exactly one entry)."""
        scripts = tomllib.loads((self.root / "pyproject.toml").read_text())["project"]["scripts"]
        (name,) = scripts
        return self.venv_bin / name

    def env(self, **extra: str) -> dict[str, str]:
        return clean_env(self.uv_cache_dir, VIRTUAL_ENV=str(self.root / ".venv"), **extra)

    def run(
        self, *args: str, timeout: float = 300, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the project folder; on failure the assertion shows its whole output."""
        result = subprocess.run(
            list(args),
            cwd=self.root,
            env=env or self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise CommandFailed(
                f"`{' '.join(args)}` exited {result.returncode} in {self.root}\n"
                f"--- stdout ---\n{result.stdout[-20000:]}\n--- stderr ---\n{result.stderr[-20000:]}"
            )
        return result

    def tool(self, name: str, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        """Run a console script installed in the project's own .venv (ruff, mypy, pytest, the service)."""
        return self.run(str(self.venv_bin / name), *args, **kwargs)  # type: ignore[arg-type]


def create_env(source: Path, dest: Path, python: str, uv_cache_dir: Path) -> ProjectEnv:
    """Copy the generated project to `dest` and `uv sync` it (default groups, so dev tools too)."""
    shutil.copytree(source, dest, symlinks=True)
    project = ProjectEnv(root=dest, python=python, uv_cache_dir=uv_cache_dir)
    project.run("uv", "sync", "--python", python, timeout=900)
    return project


def run_own_tests(
    project: ProjectEnv, variant: str, datastore_env: Callable[[], dict[str, str]]
) -> subprocess.CompletedProcess[str]:
    """The project's own pytest. With a datastore option, against real PostgreSQL and Redis
    (`datastore_env()`: TEST_DATABASE_URL, TEST_REDIS_URL), and none of their tests skipped."""
    flags = variants.effective_flags(variant)
    env = project.env()
    if flags["with_sqlalchemy"] or flags["with_redis"]:
        env.update(datastore_env())
    result = project.tool("pytest", "-q", "-rs", "-p", "no:cacheprovider", timeout=600, env=env)
    for variable in ("TEST_DATABASE_URL", "TEST_REDIS_URL"):
        assert variable not in result.stdout, (
            f"tests skipped for want of {variable}:\n{result.stdout[-3000:]}"
        )
    return result
