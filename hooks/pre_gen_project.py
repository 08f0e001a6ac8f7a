"""Cookiecutter pre-generation hook: reject bad answers with copier.yml's own validators.

Cookiecutter renders this file with Jinja before running it. On failure it deletes the
half-created project folder, so a rejected answer leaves no files behind.
"""

import json
import sys

ANSWERS = json.loads(r"""{{ cookiecutter | tojson }}""")

sys.path.insert(0, ANSWERS["_repo_dir"] + "/hooks")
from copier_spec import load_spec, validation_errors  # noqa: E402


def main() -> int:
    repo_dir = ANSWERS["_repo_dir"]
    errors = validation_errors(load_spec(repo_dir), ANSWERS, repo_dir)
    for error in errors:
        print(f"Invalid answer for {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
