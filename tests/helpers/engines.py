"""Generate services with both engines, once per (engine, variant) per test session.

- `snapshot_template()` copies the template as a fresh clone would see it (tracked files plus
  uncommitted, non-ignored work, like `copier copy -r HEAD`) into a one-commit git repo. Both
  engines render from that snapshot: they see the same files, other helpers' concurrent edits can't
  change the template halfway through a session, and cookiecutter (which copies the whole
  repository for its pre_prompt hook) does not copy the repo's .venv every time.
- `shared_once()` runs a build step once across all xdist workers: a file lock in a directory
  every worker shares, a `.done` marker, and a `.failed` marker carrying the first error so the
  other workers report it instead of retrying.
- `generate_copier()` / `generate_cookiecutter()` drive pytest-copie's and pytest-cookies'
  session helpers and move the project to its shared place (their own temp dirs are per worker
  and removed when that worker ends).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock

from . import REPO_DIR

ENGINES: tuple[str, ...] = ("copier", "cookiecutter")
COPIER_ANSWERS_FILE = ".copier-answers.yml"

_GIT_ENV = {
    "GIT_AUTHOR_NAME": "Template Tests",
    "GIT_AUTHOR_EMAIL": "tests@example.com",
    "GIT_COMMITTER_NAME": "Template Tests",
    "GIT_COMMITTER_EMAIL": "tests@example.com",
}


class GenerationError(RuntimeError):
    """An engine refused or failed to render a variant that should render."""


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, **_GIT_ENV}
    result = subprocess.run(
        ["git", "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {cwd}:\n{result.stdout}{result.stderr}")
    return result.stdout


def template_files(repo: Path = REPO_DIR) -> list[str]:
    """Tracked and untracked-but-not-ignored files that exist (what `git add -A` would commit)."""
    listed = git(repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    return sorted({name for name in listed if name and os.path.lexists(repo / name)})


def snapshot_template(dest: Path, repo: Path = REPO_DIR) -> Path:
    """Copy the template's working tree into `dest` as a clean git repository with one commit.

    The repository itself lives beside `dest` (`dest/.git` is only a pointer): copier runs
    `git status` in the template, which always creates and removes `.git/index.lock`, while
    cookiecutter copies the whole template folder to run the pre-prompt hook. With the
    repository inside, a worker's copy could meet that lock file vanishing and fail.
    """
    dest.mkdir(parents=True)
    for name in template_files(repo):
        source, target = repo / name, dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            os.symlink(os.readlink(source), target)
        else:
            shutil.copy2(source, target)
    git(dest, "init", "-q", f"--separate-git-dir={dest.with_name(dest.name + '.git')}")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "Template snapshot for tests")
    return dest


def shared_once(shared_root: Path, key: str, build: Callable[[Path], None]) -> Path:
    """Return `shared_root/key`, built by `build(path)` exactly once across xdist workers."""
    shared_root.mkdir(parents=True, exist_ok=True)
    target = shared_root / key
    done = shared_root / f"{key}.done"
    failed = shared_root / f"{key}.failed"
    with FileLock(str(shared_root / f"{key}.lock")):
        if done.exists():
            return target
        if failed.exists():
            raise GenerationError(f"{key} failed earlier in this session:\n{failed.read_text()}")
        try:
            if target.exists():
                shutil.rmtree(target)
            build(target)
        except BaseException as error:
            failed.write_text("".join(traceback.format_exception(error)))
            raise
        done.touch()
    return target


def generate_copier(copie: Any, template: Path, answers: Mapping[str, Any], dest: Path) -> None:
    """Render with pytest-copie's `Copie` (copier `run_copy`, defaults + these answers) into `dest`."""
    result = copie.copy(extra_answers=dict(answers), template_dir=template)
    if result.exception is not None or result.project_dir is None:
        raise GenerationError(f"copier failed for {dict(answers)!r}: {result.exception!r}") from (
            result.exception if isinstance(result.exception, BaseException) else None
        )
    shutil.move(str(result.project_dir), str(dest))


def generate_cookiecutter(cookies: Any, template: Path, answers: Mapping[str, Any], dest: Path) -> None:
    """Render with pytest-cookies' `Cookies` (cookiecutter, no input + these answers) into `dest`."""
    result = cookies.bake(extra_context=dict(answers), template=str(template))
    if result.exception is not None:
        raise GenerationError(
            f"cookiecutter failed for {dict(answers)!r}: {result.exception!r}"
        ) from result.exception
    shutil.move(str(result.project_path), str(dest))


def tree(root: Path) -> dict[str, bytes | str]:
    """Every file under `root` by relative POSIX path: bytes for files, `-> target` for symlinks."""
    files: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_symlink():
            files[relative] = f"-> {os.readlink(path)}"
        elif path.is_file():
            files[relative] = path.read_bytes()
    return files


def executables(root: Path) -> list[str]:
    """Files under `root` with an executable bit (scripts must stay runnable in both engines)."""
    return sorted(
        path.relative_to(root).as_posix()
        for path in root.rglob("*")
        if path.is_file() and not path.is_symlink() and path.stat().st_mode & 0o111
    )


def empty_dirs(root: Path) -> list[str]:
    """Folders under `root` that contain nothing at all."""
    return sorted(
        path.relative_to(root).as_posix()
        for path in root.rglob("*")
        if path.is_dir() and not path.is_symlink() and not any(path.iterdir())
    )
