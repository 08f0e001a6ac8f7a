"""Write cookiecutter.json from copier.yml, or check that it is current.

python hooks/cookiecutter_json.py          # rewrite cookiecutter.json
python hooks/cookiecutter_json.py --check  # exit 1 if it has drifted from copier.yml
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from copier_spec import cookiecutter_context, load_spec

REPO_DIR = Path(__file__).resolve().parent.parent
TARGET = REPO_DIR / "cookiecutter.json"


def render() -> str:
    context = cookiecutter_context(load_spec(REPO_DIR))
    return json.dumps(context, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    expected = render()
    if "--check" in argv:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if current != expected:
            print(
                "cookiecutter.json is out of date: run `python hooks/cookiecutter_json.py`", file=sys.stderr
            )
            return 1
        return 0
    TARGET.write_text(expected, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
