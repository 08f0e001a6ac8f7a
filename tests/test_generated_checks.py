"""Each generated variant passes its own quality gates in its own environment.

For every checked variant the generated project is copied, `uv sync`-ed from its own pyproject
(shared uv cache, the variant's minimum Python) and then its own ruff, ruff format, mypy (strict,
as its pyproject configures) and pytest run inside that environment. Tests of one (engine,
variant) share an xdist group, so the environment is built once, on one worker.
"""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path

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


# --- a Python minimum no interpreter here can run --------------------------------------------------

UNRUNNABLE = [
    str(choice)
    for choice in variants.QUESTIONS["python_version"]["choices"]
    if str(choice) not in variants.RUNNABLE_PYTHONS
]


@pytest.mark.parametrize("version", UNRUNNABLE)
def test_python_minimum_without_an_interpreter_resolves_lints_and_type_checks(
    generated: Callable[[str, str], Path],
    project_env: ProjectEnvFactory,
    tmp_path: Path,
    version: str,
) -> None:
    """What can be proven without that Python: every dependency (dev tools too) has a wheel for it
    on Linux, so `uv sync` installs without compiling, and ruff and mypy pass aimed at it."""
    variant = f"python_{version.replace('.', '_')}"
    assert variants.python_version(variant) == version
    project = tmp_path / "project"
    shutil.copytree(generated("copier", variant), project)
    tools = project_env("copier", "default")  # same answers but the minimum: same dependencies
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    assert pyproject["project"]["requires-python"] == f">={version}"
    assert pyproject["tool"]["mypy"]["python_version"] == version
    resolve = [
        *("uv", "pip", "compile", "pyproject.toml", "--group", "dev", "--quiet", "--no-header"),
        *("--python-version", version, "--python-platform", "x86_64-manylinux_2_28"),
        *("--only-binary", ":all:", "--output-file", str(tmp_path / "requirements.txt")),
    ]
    tools.run(*resolve)
    resolved = (tmp_path / "requirements.txt").read_text()
    assert "\nfastapi==" in resolved and "\nmypy==" in resolved, resolved
    for command in (["check", "--no-cache", "."], ["format", "--check", "--no-cache", "."]):
        result = subprocess.run(
            [str(tools.venv_bin / "ruff"), *command], cwd=project, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
    checked = subprocess.run(
        [str(tools.venv_bin / "mypy"), "--cache-dir", str(tmp_path / "mypy-cache")],
        cwd=project,
        env=tools.env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0 and "Success: no issues found" in checked.stdout, checked.stdout
