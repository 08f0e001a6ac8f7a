"""Read copier.yml so that cookiecutter follows the same questions, validators and exclusions.

copier.yml is the single source of truth. Cookiecutter cannot read it, so:
- `cookiecutter.json` is generated from it (see cookiecutter_json.py);
- the cookiecutter hooks call `validation_errors` and `excluded_paths` below, which render
  copier.yml's own validator and `_exclude` expressions with the answers.

Only the standard library, PyYAML and Jinja2 are used: cookiecutter already depends on both.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

SPEC_FILE = "copier.yml"
# Cookiecutter's side of copier's computed `answers_refused` question: an extension
# (cookiecutter_extension.py) that refuses a bad answer in one line after the last question.
EXTENSION = "hooks.cookiecutter_extension.RefuseInvalidAnswers"
REFUSAL = "{{ refuse_invalid_answers(cookiecutter) }}"


def load_spec(repo_dir: str | Path) -> dict[str, Any]:
    with open(Path(repo_dir) / SPEC_FILE, encoding="utf-8") as spec_file:
        spec: dict[str, Any] = yaml.safe_load(spec_file)
    return spec


def questions(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The questions a user answers, in order (settings and the computed namespace left out)."""
    return {
        name: settings
        for name, settings in spec.items()
        if not name.startswith("_") and settings.get("when") is not False
    }


def _environment(repo_dir: str | Path) -> SandboxedEnvironment:
    # The same sandbox, strictness and loader root copier uses, so an expression that works here
    # works there (validators import macros from hooks/answers.jinja).
    return SandboxedEnvironment(
        loader=FileSystemLoader(str(repo_dir)), undefined=StrictUndefined, keep_trailing_newline=True
    )


def _answered(spec: dict[str, Any], answers: dict[str, Any]) -> dict[str, Any]:
    return {name: answers[name] for name in questions(spec) if name in answers}


def validation_errors(spec: dict[str, Any], answers: dict[str, Any], repo_dir: str | Path) -> list[str]:
    """One message per invalid answer, each naming its question, in question order."""
    env = _environment(repo_dir)
    context = _answered(spec, answers)
    errors: list[str] = []
    for name, question in questions(spec).items():
        if name not in context:
            errors.append(f"question '{name}': no answer given")
            continue
        value = context[name]
        choices = question.get("choices")
        if choices is not None and str(value) not in [str(choice) for choice in choices]:
            allowed = ", ".join(str(choice) for choice in choices)
            errors.append(f"question '{name}': {value!r} is not one of {allowed}")
            continue
        validator = question.get("validator")
        if validator:
            message = env.from_string(validator).render(context).strip()
            if message:
                errors.append(f"question '{name}': {value!r} {message}")
    return errors


def excluded_paths(spec: dict[str, Any], answers: dict[str, Any], repo_dir: str | Path) -> list[str]:
    """The relative paths that copier's conditional `_exclude` entries leave out for these answers."""
    env = _environment(repo_dir)
    context = _answered(spec, answers)
    paths: list[str] = []
    for entry in spec.get("_exclude", []):
        if "{" not in entry:
            continue  # static patterns (caches) never exist in a freshly rendered project
        rendered = env.from_string(entry).render(context).strip()
        if not rendered:
            continue
        if any(char in rendered for char in "*?[]!") or rendered.startswith("/"):
            raise ValueError(f"conditional _exclude entry must be a plain relative path: {rendered!r}")
        paths.append(rendered)
    return paths


def message_after_generation(
    spec: dict[str, Any], answers: dict[str, Any], repo_dir: str | Path, dst_path: str
) -> str:
    """copier's `_message_after_copy` for a service cookiecutter generated into `dst_path`."""
    context = {**_answered(spec, answers), "_copier_conf": {"dst_path": dst_path}}
    return _environment(repo_dir).from_string(spec.get("_message_after_copy", "")).render(context)


def _to_cookiecutter_namespace(text: str, names: list[str]) -> str:
    """Rewrite `{{ project_slug | ... }}` as `{{ cookiecutter.project_slug | ... }}`."""
    pattern = re.compile(r"(?<![\w.])(" + "|".join(map(re.escape, names)) + r")\b")

    def rewrite(expression: re.Match[str]) -> str:
        return pattern.sub(r"cookiecutter.\1", expression.group(0))

    return re.sub(r"\{\{.*?\}\}|\{%.*?%\}", rewrite, text)


def cookiecutter_context(spec: dict[str, Any]) -> dict[str, Any]:
    """The content of cookiecutter.json: same questions, order, defaults, choices and help."""
    asked = questions(spec)
    names = list(asked)
    context: dict[str, Any] = {}
    prompts: dict[str, str] = {}
    for name, question in asked.items():
        default = question.get("default")
        if isinstance(default, str):
            default = _to_cookiecutter_namespace(default, names)
        choices = question.get("choices")
        if choices is not None:
            # Cookiecutter offers the first choice as the default.
            choices = [str(choice) for choice in choices]
            default_choice = str(default)
            context[name] = [default_choice, *[c for c in choices if c != default_choice]]
        else:
            context[name] = default
        prompts[name] = question["help"]
    context["__answers_refused"] = REFUSAL
    context["__prompts__"] = prompts
    context["_extensions"] = [EXTENSION]
    return context
