"""The template's README stays true: every question documented with its default, commands that exist."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

REPO_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_DIR / "hooks"))
from copier_spec import load_spec, questions  # noqa: E402

README = (REPO_DIR / "README.md").read_text(encoding="utf-8")


def question_rows() -> dict[str, str]:
    """`| `name` | default | ... |` rows of the README's Questions table, name -> default cell."""
    section = README.split("## Questions", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \|", section, flags=re.MULTILINE)
    return {name: default.strip() for name, default in rows}


def test_every_question_is_documented_in_order() -> None:
    assert list(question_rows()) == list(questions(load_spec(REPO_DIR)))


@pytest.mark.parametrize("name", list(questions(load_spec(REPO_DIR))))
def test_documented_default_matches_copier_yml(name: str) -> None:
    default = questions(load_spec(REPO_DIR))[name].get("default")
    documented = question_rows()[name]
    if isinstance(default, str) and "{{" in default:
        # Derived defaults are described in words; they must name what they derive from.
        derived_from = re.search(r"\{\{\s*(\w+)", default)
        assert derived_from is not None
        assert derived_from.group(1) in documented
    elif default == "":
        assert documented == "empty"
    else:
        literal = str(default).lower() if isinstance(default, bool) else str(default)
        assert documented == f"`{literal}`"


def test_ci_runs_the_readme_test_command() -> None:
    quick_start = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^python3 -m pip install uv && (.+)$", quick_start, flags=re.MULTILINE)
    assert len(commands) == 2, "the quick start shows exactly a run command and a test command"
    run_command, test_command = commands
    assert run_command == "uv run scripts/demo.py"
    assert (REPO_DIR / "scripts" / "demo.py").is_file()
    ci_script = (REPO_DIR / ".ci" / "run").read_text(encoding="utf-8")
    assert test_command in ci_script.splitlines()
