"""Cookiecutter extension: refuse a bad answer in one line, before anything is written.

cookiecutter.json ends with `__answers_refused: "{{ refuse_invalid_answers(cookiecutter) }}"`,
which cookiecutter renders after the last question. A bad answer prints one line naming the
question and exits 1 (a failing pre_gen_project hook also refuses, but cookiecutter then logs
a traceback). The checks are copier.yml's own validators (copier_spec.py).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jinja2 import Environment
from jinja2.ext import Extension

REPO_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_DIR / "hooks"))
from copier_spec import load_spec, validation_errors  # noqa: E402


def refuse_invalid_answers(answers: Mapping[str, Any]) -> str:
    errors = validation_errors(load_spec(REPO_DIR), dict(answers), REPO_DIR)
    if errors:
        print(f"Invalid answer for {errors[0]}", file=sys.stderr)
        raise SystemExit(1)
    return ""


class RefuseInvalidAnswers(Extension):
    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        environment.globals["refuse_invalid_answers"] = refuse_invalid_answers
