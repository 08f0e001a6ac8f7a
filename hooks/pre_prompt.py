"""Cookiecutter pre-prompt hook: make the shared `template/` tree look like a cookiecutter template.

Cookiecutter runs this (not Jinja-rendered) inside a temporary copy of the repository before it
reads cookiecutter.json, so the renames below never touch the real checkout.
"""

from pathlib import Path

TEMPLATE = Path("template")
# Cookiecutter renders the first top-level folder whose name holds `cookiecutter`, `{{` and `}}`.
PROJECT_DIR = Path("{{cookiecutter.project_slug}}")
# Copier's answers file only makes sense for copier; cookiecutter could not render its name.
COPIER_ONLY = ["{{_copier_conf.answers_file}}"]


def main() -> None:
    TEMPLATE.rename(PROJECT_DIR)
    for name in COPIER_ONLY:
        (PROJECT_DIR / name).unlink()


if __name__ == "__main__":
    main()
