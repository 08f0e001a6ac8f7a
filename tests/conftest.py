"""Shared fixtures (the logic lives in tests/helpers/, one module per concern).

pytest-copie and pytest-cookies both register `--template`, so pyproject's addopts disables the
cookies plugin (`-p no:cookies`) and its fixtures are re-exported here instead.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO_DIR, datastores, engines, prometheus, variants
from helpers.project_env import ProjectEnv, create_env, default_uv_cache_dir, find_python, put_uv_on_path
from pytest_cookies.plugin import _cookiecutter_config_file, cookies, cookies_session

# cookiecutter.json loads a Jinja extension from hooks/ (cookiecutter_extension.py). cookiecutter
# puts the template on sys.path itself; pytest-cookies renders the context first, without it.
sys.path.append(str(REPO_DIR))

__all__ = ["_cookiecutter_config_file", "cookies", "cookies_session"]


def pytest_addoption(parser: pytest.Parser) -> None:
    # pytest-cookies' own option (its plugin, which would register it, is disabled).
    parser.getgroup("cookies").addoption(
        "--keep-baked-projects",
        action="store_true",
        default=False,
        dest="keep_baked_projects",
        help="Keep projects directories generated with 'cookies.bake()'.",
    )


def pytest_sessionstart(session: pytest.Session) -> None:
    # Locally the Prometheus checks skip (with the reason) when Debian's `prometheus` package is
    # missing; in CI a skipped check would be a check not done.
    missing = prometheus.missing_binaries()
    if os.environ.get("CI") and missing:
        pytest.exit(f"CI needs {', '.join(missing)}: .ci/run installs Debian's prometheus package", 1)


def pytest_configure(config: pytest.Config) -> None:
    # `scripts/uv run pytest` on a machine without uv: the uv it installed is not on PATH, but the
    # generated services' Makefiles, CI steps and the benchmark call `uv`. Tests that need a machine
    # without uv (tests/test_demo.py) give their commands a PATH of their own.
    put_uv_on_path()
    # `--template` defaults to the working directory: make the fixtures find this repo from anywhere.
    if not (Path(config.option.template) / "copier.yml").is_file():
        config.option.template = str(REPO_DIR)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Make `--dist loadgroup` work on pytest 9 (runs on each xdist worker).

    pytest-xdist 3.8 tags a grouped test by appending `@<group>` to `item._nodeid`, but pytest 9
    builds `item.nodeid` from `item._id`, so the tag is lost and grouped tests are spread over
    all workers (each then builds its own module fixtures); pytest-xdist issue #1386, fix pending
    in PR #1388. Apply the same tag where pytest 9 reads it; a no-op once xdist does it itself.
    """
    if not getattr(config.option, "loadgroup", False):
        return
    try:
        from _pytest.nodeid import NodeId  # pytest >= 9.2; older pytest reads `_nodeid` as xdist expects
    except ImportError:
        return

    for item in items:
        groups = {
            str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
            for mark in item.iter_markers("xdist_group")
        }
        if groups and "@" not in item.nodeid and hasattr(item, "_id"):
            item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(sorted(groups))}")


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """A folder every xdist worker of this run shares (and only this run)."""
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


@pytest.fixture(scope="session")
def uv_cache_dir() -> Path:
    """One uv cache for every generated project, every worker and every run (never deleted)."""
    path = default_uv_cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def template_snapshot(shared_dir: Path) -> Path:
    """The template as a fresh clone (plus uncommitted work) would see it, frozen for the session."""
    return engines.shared_once(shared_dir, "template", engines.snapshot_template)


@pytest.fixture(scope="session")
def generated(
    shared_dir: Path, template_snapshot: Path, copie_session: Any, cookies_session: Any
) -> Callable[[str, str], Path]:
    """`generated(engine, variant)` -> the rendered project, built once per session across workers.

    Treat the result as read-only: several tests (and workers) read the same folder.
    """

    def generate(engine: str, variant: str) -> Path:
        answers = variants.answers(variant)
        if engine == "copier":

            def build(dest: Path) -> None:
                engines.generate_copier(copie_session, template_snapshot, answers, dest)

        elif engine == "cookiecutter":

            def build(dest: Path) -> None:
                engines.generate_cookiecutter(cookies_session, template_snapshot, answers, dest)

        else:
            raise ValueError(f"unknown engine {engine!r}")
        return engines.shared_once(shared_dir / "generated", f"{engine}-{variant}", build)

    return generate


@pytest.fixture(scope="session")
def project_env(
    shared_dir: Path, generated: Callable[[str, str], Path], uv_cache_dir: Path
) -> Callable[[str, str], ProjectEnv]:
    """`project_env(engine, variant)` -> a uv-synced copy of that generated project (once per session).

    The interpreter is the variant's minimum Python (`python_version`); a missing one skips the
    caller with the reason, since it cannot be installed offline.
    """

    def make(engine: str, variant: str) -> ProjectEnv:
        version = variants.python_version(variant)
        python = find_python(version)
        if python is None:
            pytest.skip(f"no Python {version} interpreter on this machine for variant {variant!r}")
        source = generated(engine, variant)
        root = engines.shared_once(
            shared_dir / "envs",
            f"{engine}-{variant}",
            lambda dest: create_env(source, dest, python, uv_cache_dir),
        )
        return ProjectEnv(root=root, python=python, uv_cache_dir=uv_cache_dir)

    return make


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis for this worker, started on first use (services with Redis are ready with it)."""
    assert shutil.which("redis-server"), "install Debian's redis-server package (.ci/run does)"
    with datastores.running_redis() as url:
        yield url


@pytest.fixture(scope="session")
def datastore_env(redis_url: str) -> Iterator[dict[str, str]]:
    """A real PostgreSQL and Redis for this worker, as the variables the generated tests read."""
    assert datastores.postgres_bin_dir(), "install Debian's postgresql package (.ci/run does)"
    with datastores.running_postgres() as dsn:
        yield {
            "TEST_DATABASE_URL": dsn.replace("postgresql://", "postgresql+asyncpg://"),
            "TEST_REDIS_URL": redis_url,
        }
