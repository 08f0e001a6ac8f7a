"""The template repository's own Python (hooks, scripts, tests) is ruff-clean, like what it generates."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import REPO_DIR


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_repo_python_is_ruff_clean(command: list[str]) -> None:
    # template/ is excluded in pyproject.toml: its files are Jinja, checked once rendered.
    result = subprocess.run(
        [sys.executable, "-m", "ruff", *command, "--no-cache", "."],
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
