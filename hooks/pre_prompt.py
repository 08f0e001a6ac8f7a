"""Cookiecutter pre-prompt hook: make the shared `template/` tree look like a cookiecutter template.

Cookiecutter runs this (not Jinja-rendered) inside a temporary copy of the repository before it
reads cookiecutter.json, so the renames below never touch the real checkout.
"""

from pathlib import Path

TEMPLATE = Path("template")
# Cookiecutter renders the first top-level folder whose name holds `cookiecutter`, `{{` and `}}`.
# It creates that folder before pre_gen_project can refuse a bad slug; with `/` replaced, a slug
# like `a/b` makes one folder that the failed hook removes, never a nested one left behind.
# A valid slug has no `/`, so its folder name is the slug itself.
# (`\u002f` is `/` to Jinja; a literal slash would split this very name.)
PROJECT_DIR = Path(r"{{cookiecutter.project_slug | replace('\u002f', '-')}}")
# Copier's answers file only makes sense for copier; cookiecutter could not render its name.
COPIER_ONLY = ["{{_copier_conf.answers_file}}"]


def main() -> None:
    TEMPLATE.rename(PROJECT_DIR)
    for name in COPIER_ONLY:
        (PROJECT_DIR / name).unlink()


if __name__ == "__main__":
    main()
