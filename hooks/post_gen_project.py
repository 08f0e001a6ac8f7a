"""Cookiecutter post-generation hook: leave out disabled features exactly as copier does.

Copier skips the paths its conditional `_exclude` entries name; cookiecutter renders everything,
so this hook removes the same paths afterwards (and any folder that leaves empty). Then it prints
the next steps copier prints (copier.yml's `_message_after_copy`).
"""

import json
import shutil
import sys
from pathlib import Path

ANSWERS = json.loads(r"""{{ cookiecutter | tojson }}""")

sys.path.insert(0, ANSWERS["_repo_dir"] + "/hooks")
from copier_spec import excluded_paths, load_spec, message_after_generation  # noqa: E402


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    parent = path.parent
    while parent != Path(".") and parent.exists() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


def main() -> int:
    repo_dir = ANSWERS["_repo_dir"]
    spec = load_spec(repo_dir)
    for relative in excluded_paths(spec, ANSWERS, repo_dir):
        remove(Path(relative))
    print(message_after_generation(spec, ANSWERS, repo_dir, str(Path.cwd())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
