"""Each generated variant passes its own quality gates in its own environment.

For every checked variant the generated project is copied, `uv sync`-ed from its own pyproject
(shared uv cache, the variant's minimum Python) and then its own ruff, ruff format, mypy (strict,
as its pyproject configures) and pytest run inside that environment. Tests of one (engine,
variant) share an xdist group, so the environment is built once, on one worker.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable

import pytest
from helpers import variants
from helpers.project_env import ProjectEnv, run_own_tests

ProjectEnvFactory = Callable[[str, str], ProjectEnv]

CASES = [("copier", name) for name in variants.CHECKED_VARIANTS] + [("cookiecutter", "default")]
PARAMS = [
    pytest.param(
        engine, variant, id=f"{engine}-{variant}", marks=pytest.mark.xdist_group(f"env-{engine}-{variant}")
    )
    for engine, variant in CASES
]

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("engine", "variant"), PARAMS)
def test_uv_sync_uses_the_variants_python(project_env: ProjectEnvFactory, engine: str, variant: str) -> None:
    project = project_env(engine, variant)
    expected = variants.python_version(variant)
    found = project.run(
        str(project.venv_bin / "python"), "-c", "import sys; print('{}.{}'.format(*sys.version_info[:2]))"
    )
    assert found.stdout.strip() == expected
    # The lock uv wrote resolves the project's own ranges; `--locked` proves it is consistent.
    project.run("uv", "sync", "--locked", "--python", project.python)


@pytest.mark.parametrize(("engine", "variant"), PARAMS)
def test_ruff_check(project_env: ProjectEnvFactory, engine: str, variant: str) -> None:
    project_env(engine, variant).tool("ruff", "check", "--no-cache", ".")


@pytest.mark.parametrize(("engine", "variant"), PARAMS)
def test_ruff_format(project_env: ProjectEnvFactory, engine: str, variant: str) -> None:
    project_env(engine, variant).tool("ruff", "format", "--check", "--no-cache", ".")


@pytest.mark.parametrize(("engine", "variant"), PARAMS)
def test_mypy_strict(project_env: ProjectEnvFactory, engine: str, variant: str) -> None:
    project = project_env(engine, variant)
    config = tomllib.loads((project.root / "pyproject.toml").read_text())["tool"]["mypy"]
    assert config.get("strict") is True, "the generated project must type-check strictly"
    result = project.tool("mypy")
    assert "Success: no issues found" in result.stdout, result.stdout


@pytest.mark.parametrize(("engine", "variant"), PARAMS)
def test_own_test_suite(
    project_env: ProjectEnvFactory, request: pytest.FixtureRequest, engine: str, variant: str
) -> None:
    project = project_env(engine, variant)
    result = run_own_tests(project, variant, lambda: request.getfixturevalue("datastore_env"))
    assert " passed" in result.stdout and " failed" not in result.stdout, result.stdout[-5000:]
