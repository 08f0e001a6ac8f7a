"""`copier update` loses nothing: template changes arrive, user edits stay, conflicts stay visible.

Each test works on a throw-away git copy of this template with two PEP 440 tags:
`0.1.0` (the working tree as it is) and `0.2.0` (the same plus a realistic template change).
Every copier call goes through the command line without `--trust`, exactly as a user types it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from helpers.project_env import clean_env, default_uv_cache_dir
from packaging.version import Version

REPO_DIR = Path(__file__).resolve().parent.parent
BIN_DIR = Path(sys.executable).parent
COPIER = [sys.executable, "-m", "copier"]
COOKIECUTTER = [sys.executable, "-m", "cookiecutter"]
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Template Tests",
    "GIT_AUTHOR_EMAIL": "tests@example.com",
    "GIT_COMMITTER_NAME": "Template Tests",
    "GIT_COMMITTER_EMAIL": "tests@example.com",
    "GIT_CONFIG_GLOBAL": os.devnull,  # no user hooks, signing or templates from the machine
    "GIT_CONFIG_NOSYSTEM": "1",
}
CONFLICT_MARKERS = ("<<<<<<< ", "\n=======\n", ">>>>>>> ")

# The realistic template change shipped as 0.2.0 (applied by `apply_template_change`).
NEW_TITLE_SUFFIX = " (observable FastAPI service)"
NEW_README_SECTION = (
    "## Getting help\n\nAsk in the owning team's channel; the handover notes are in docs/handover.md.\n"
)
NEW_FILE = "docs/handover.md"
NEW_FILE_TEMPLATE = "# {{ cookiecutter.project_name }} handover\n\nWho owns what, and whom to call.\n"
NEW_SETTING = "    shutdown_grace_seconds: float = 10.0"

# The typical user edits made to a generated service (applied by `apply_user_edits`).
USER_TITLE = "# Orders (owned by the payments team)"
USER_ROUTE = '''"""Orders API, added by the service's team."""

from fastapi import APIRouter

router = APIRouter(prefix="/orders", tags=["orders"])


@router.get("/{order_id}")
async def get_order(order_id: int) -> dict[str, int]:
    return {"order_id": order_id}
'''
USER_NOTES = "Team notes: this file is ours and the template knows nothing about it.\n"


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        args,
        cwd=cwd,
        env={**os.environ, **GIT_ENV, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, (
        f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    )
    return result


def git(cwd: Path, *args: str) -> str:
    return run(["git", *args], cwd).stdout


def commit_all(cwd: Path, message: str) -> None:
    git(cwd, "add", "-A")
    git(cwd, "commit", "-q", "--no-verify", "-m", message)


def working_tree_files(repo: Path) -> list[str]:
    """Tracked and new (not ignored) files of the checkout: what the next commit would hold."""
    listed = git(repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    return sorted({name for name in listed if name and (repo / name).is_file()})


def settings_template(template_dir: Path) -> Path:
    return template_dir / "template" / "src" / "{{cookiecutter.package_name}}" / "settings.py"


def apply_template_change(repo: Path) -> None:
    """What a typical template release does: retitle the README, add a section, a file and a setting."""
    readme = repo / "template" / "README.md"
    lines = readme.read_text(encoding="utf-8").splitlines(keepends=True)
    assert lines[0].startswith("# "), "the generated README should start with its title"
    lines[0] = lines[0].rstrip("\n") + NEW_TITLE_SUFFIX + "\n"
    text = "".join(lines)
    readme.write_text(text + ("" if text.endswith("\n\n") else "\n") + NEW_README_SECTION, encoding="utf-8")

    new_file = repo / "template" / NEW_FILE
    assert not new_file.exists(), f"pick another name for the test's new file: {NEW_FILE} exists"
    new_file.parent.mkdir(parents=True, exist_ok=True)
    new_file.write_text(NEW_FILE_TEMPLATE, encoding="utf-8")

    settings = settings_template(repo)
    if settings.exists():
        # A new field right after the class docstring/header: far from the port default users edit.
        source = settings.read_text(encoding="utf-8")
        header = re.search(r"^class Settings\(BaseSettings\):\n(    \"\"\".*?\"\"\"\n)?", source, re.M | re.S)
        assert header is not None, "settings.py should define `class Settings(BaseSettings):`"
        settings.write_text(
            source[: header.end()] + NEW_SETTING + "\n" + source[header.end() :], encoding="utf-8"
        )


@dataclass(frozen=True)
class TemplateRepo:
    path: Path
    has_settings: bool

    @property
    def url(self) -> str:
        return f"git+file://{self.path}"


@pytest.fixture(scope="module")
def template_repo(tmp_path_factory: pytest.TempPathFactory) -> TemplateRepo:
    """A git copy of the template tagged 0.1.0 (as it is) and 0.2.0 (with a template change)."""
    repo = tmp_path_factory.mktemp("template-repo")
    for name in working_tree_files(REPO_DIR):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_DIR / name, repo / name)
    git(repo, "init", "-q", "-b", "main")
    commit_all(repo, "Template as it is")
    tag_release(repo, "0.1.0")
    apply_template_change(repo)
    commit_all(repo, "Template change")
    tag_release(repo, "0.2.0")
    return TemplateRepo(repo, settings_template(repo).exists())


def documented_tag_command(version: str) -> list[str]:
    """docs/updating.md's release tag command (written for 0.2.0) for `version`."""
    block = UPDATING_DOC.read_text(encoding="utf-8").split("<!-- release-tag -->", 1)[1]
    (command,) = [line.strip() for line in block.split("```", 2)[1].splitlines() if "git tag" in line]
    return shlex.split(command.replace("0.2.0", version))


def tag_release(repo: Path, version: str) -> None:
    """Tag the release as docs/updating.md says (an annotated tag on the release commit)."""
    run(documented_tag_command(version), repo)


def copier_copy(template: TemplateRepo, dst: Path, ref: str, *data: str) -> None:
    args = [*COPIER, "copy", "--quiet", "--defaults", "--vcs-ref", ref]
    for item in data:
        args += ["--data", item]
    run([*args, str(template.path), str(dst)], cwd=dst.parent)


def copier_update(project: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    # No --trust: the template must update with copier's default safety.
    return run([*COPIER, "update", "--quiet", "--defaults", "--conflict", "inline", *extra], cwd=project)


def answers(project: Path) -> dict[str, object]:
    loaded: dict[str, object] = yaml.safe_load((project / ".copier-answers.yml").read_text(encoding="utf-8"))
    return loaded


def project_files(project: Path) -> dict[str, bytes]:
    return {
        path.relative_to(project).as_posix(): path.read_bytes()
        for path in sorted(project.rglob("*"))
        if path.is_file() and ".git" not in path.relative_to(project).parts
    }


def apply_user_edits(project: Path) -> dict[str, str]:
    """Typical edits of a service's team; returns the files they own, path -> content."""
    package = str(answers(project)["package_name"])
    readme = project / "README.md"
    lines = readme.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[0] = USER_TITLE + "\n"
    readme.write_text("".join(lines), encoding="utf-8")

    route = project / "src" / package / "api" / "orders.py"
    route.parent.mkdir(parents=True, exist_ok=True)
    route.write_text(USER_ROUTE, encoding="utf-8")
    (project / "NOTES.md").write_text(USER_NOTES, encoding="utf-8")

    settings = project / "src" / package / "settings.py"
    if settings.exists():
        source = settings.read_text(encoding="utf-8")
        assert source.count("8000") == 1, "settings.py should hold the default port once"
        settings.write_text(source.replace("8000", "8080"), encoding="utf-8")
    return {f"src/{package}/api/orders.py": USER_ROUTE, "NOTES.md": USER_NOTES}


def files_with_markers(project: Path) -> set[str]:
    return {
        name
        for name, content in project_files(project).items()
        if all(marker.encode() in content for marker in CONFLICT_MARKERS)
    }


@pytest.fixture(scope="module")
def updated_service(template_repo: TemplateRepo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A service generated at 0.1.0, committed, edited by its team, committed, then updated to 0.2.0."""
    project = tmp_path_factory.mktemp("updated") / "orders"
    copier_copy(template_repo, project, "0.1.0")
    git(project, "init", "-q", "-b", "main")
    commit_all(project, "Generated at 0.1.0")
    apply_user_edits(project)
    commit_all(project, "Our edits")
    copier_update(project)
    yield project


def test_update_moves_the_answers_to_the_new_version(
    updated_service: Path, template_repo: TemplateRepo
) -> None:
    recorded = answers(updated_service)
    assert recorded["_commit"] == "0.2.0"
    assert recorded["_src_path"] == str(template_repo.path)


def next_steps(printed: str) -> list[str]:
    """The commands of copier's next-steps message, as printed, without their comments."""
    block = printed.split("Next steps:\n\n", 1)[1].split("\n\n", 1)[0]
    return [line.split("  # ", 1)[0].strip() for line in block.splitlines()]


def test_copy_records_the_newest_tagged_version(template_repo: TemplateRepo, tmp_path: Path) -> None:
    project = tmp_path / "svc"
    run([*COPIER, "copy", "--quiet", "--defaults", str(template_repo.path), str(project)], cwd=tmp_path)
    assert answers(project)["_commit"] == "0.2.0"


def test_next_steps_leave_a_clean_tree_that_updates(template_repo: TemplateRepo, tmp_path: Path) -> None:
    """The printed steps, run as printed (all but starting the server and `make check`), leave a
    committed tree with uv.lock; the first `copier update` then runs (copier refuses a dirty one)."""
    project = tmp_path / "orders"
    args = [*COPIER, "copy", "--defaults", "--vcs-ref", "0.1.0", str(template_repo.path), str(project)]
    copied = run(args, cwd=tmp_path)
    steps = next_steps(copied.stdout + copied.stderr)
    runnable = [step for step in steps if not step.startswith(("uv run ", "make "))]
    assert runnable[0] == f"cd {project}" and len(runnable) == 3, steps
    run(["bash", "-euc", "\n".join(runnable)], cwd=tmp_path, env=clean_env(default_uv_cache_dir()))
    assert git(project, "status", "--porcelain", "--untracked-files=all") == ""
    assert "uv.lock" in git(project, "ls-files").split()
    copier_update(project)
    assert answers(project)["_commit"] == "0.2.0"


def test_template_changes_arrive(updated_service: Path, template_repo: TemplateRepo) -> None:
    name = str(answers(updated_service)["project_name"])
    assert (updated_service / NEW_FILE).read_text(encoding="utf-8") == NEW_FILE_TEMPLATE.replace(
        "{{ cookiecutter.project_name }}", name
    )
    assert NEW_README_SECTION in (updated_service / "README.md").read_text(encoding="utf-8")
    if template_repo.has_settings:
        package = answers(updated_service)["package_name"]
        settings = (updated_service / "src" / str(package) / "settings.py").read_text(encoding="utf-8")
        assert NEW_SETTING in settings


def test_user_edits_survive(updated_service: Path, template_repo: TemplateRepo) -> None:
    package = str(answers(updated_service)["package_name"])
    assert (updated_service / "NOTES.md").read_text(encoding="utf-8") == USER_NOTES
    assert (updated_service / "src" / package / "api" / "orders.py").read_text(encoding="utf-8") == USER_ROUTE
    assert USER_TITLE in (updated_service / "README.md").read_text(encoding="utf-8")
    if template_repo.has_settings:
        settings = (updated_service / "src" / package / "settings.py").read_text(encoding="utf-8")
        assert "8080" in settings and "8000" not in settings


def test_overlapping_change_is_a_visible_conflict(updated_service: Path) -> None:
    """Both sides retitled the README: both titles stay, between markers git also knows about."""
    readme = (updated_service / "README.md").read_text(encoding="utf-8")
    conflict = re.search(r"^<<<<<<< .*?\n(.*?)^=======\n(.*?)^>>>>>>> .*?$", readme, re.M | re.S)
    assert conflict is not None, readme
    ours, theirs = conflict.groups()
    assert USER_TITLE in ours
    assert NEW_TITLE_SUFFIX in theirs
    # Only the overlapping change conflicts; everything else merged cleanly.
    assert files_with_markers(updated_service) == {"README.md"}
    unmerged = {line.split("\t", 1)[1] for line in git(updated_service, "ls-files", "-u").splitlines()}
    assert unmerged == {"README.md"}


def test_nothing_is_moved_aside(updated_service: Path) -> None:
    leftovers = [name for name in project_files(updated_service) if name.endswith((".rej", ".orig"))]
    assert leftovers == []


def test_resolved_update_is_a_working_tree(updated_service: Path) -> None:
    """Once the team keeps both titles, every Python file still compiles and nothing is left unmerged."""
    readme = updated_service / "README.md"
    text = readme.read_text(encoding="utf-8")
    resolved = re.sub(r"^<<<<<<< .*?\n(.*?)^=======\n(.*?)^>>>>>>> .*?\n", r"\1", text, flags=re.M | re.S)
    readme.write_text(resolved, encoding="utf-8")
    git(updated_service, "add", "README.md")
    assert git(updated_service, "ls-files", "-u") == ""
    assert files_with_markers(updated_service) == set()
    sources = [str(path) for path in (updated_service / "src").rglob("*.py")]
    if sources:
        run([sys.executable, "-m", "py_compile", *sources], cwd=updated_service)


FEATURE_FOLDERS = {"with_kubernetes": "deploy/kubernetes", "with_grafana_dashboard": "deploy/grafana"}


@pytest.mark.parametrize("flag", sorted(FEATURE_FOLDERS))
def test_toggling_a_feature_changes_exactly_its_files(
    flag: str, template_repo: TemplateRepo, tmp_path: Path
) -> None:
    """`copier update --data flag=false` (and back) leaves what a fresh generation would, plus our files."""
    project = tmp_path / "svc"
    copier_copy(template_repo, project, "0.2.0", f"{flag}=true")
    reference = tmp_path / "fresh-off"
    copier_copy(template_repo, reference, "0.2.0", f"{flag}=false")
    fresh = {True: project_files(project), False: project_files(reference)}
    feature_only = set(fresh[True]) - set(fresh[False])
    assert feature_only, f"{flag} should add files"
    # The feature's folder is part of what it adds (it may add a few related files elsewhere).
    assert {name for name in fresh[True] if name.startswith(FEATURE_FOLDERS[flag] + "/")} <= feature_only
    assert not set(fresh[False]) - set(fresh[True])

    (project / "NOTES.md").write_text(USER_NOTES, encoding="utf-8")
    git(project, "init", "-q", "-b", "main")
    commit_all(project, "Generated")
    for value in (False, True):
        copier_update(project, "--vcs-ref", "0.2.0", "--data", f"{flag}={str(value).lower()}")
        files = project_files(project)
        assert files.pop("NOTES.md") == USER_NOTES.encode()
        assert files == fresh[value], f"after {flag}={value}"
        empty = [path for path in project.rglob("*") if path.is_dir() and not any(path.iterdir())]
        assert not [path for path in empty if ".git" not in path.relative_to(project).parts]
        commit_all(project, f"{flag}={value}")


SECRET_NAME = re.compile(r"token|passw|secret|credential|api_?key|private_?key|(^|_)(auth|dsn)(_|$)", re.I)
SECRET_VALUE = re.compile(r"pylf_|token|passw|secret|bearer|-----BEGIN", re.I)


def test_copier_asks_no_secret() -> None:
    spec = yaml.safe_load((REPO_DIR / "copier.yml").read_text(encoding="utf-8"))
    asked = {name: settings for name, settings in spec.items() if not name.startswith("_")}
    assert not [
        name for name, settings in asked.items() if isinstance(settings, dict) and settings.get("secret")
    ]
    assert not [name for name in asked if SECRET_NAME.search(name)]
    cookiecutter_questions = json.loads((REPO_DIR / "cookiecutter.json").read_text(encoding="utf-8"))
    assert not [name for name in cookiecutter_questions if SECRET_NAME.search(name)]


def test_answers_file_holds_no_secret(template_repo: TemplateRepo, tmp_path: Path) -> None:
    """Even with a Logfire token in the environment, nothing secret lands in the answers or the files."""
    project = tmp_path / "svc"
    token = "pylf_v1_us_TopSecretTokenValue0123456789"
    run(
        [
            *COPIER,
            "copy",
            "--quiet",
            "--defaults",
            "--vcs-ref",
            "0.2.0",
            str(template_repo.path),
            str(project),
        ],
        cwd=tmp_path,
        env={"LOGFIRE_TOKEN": token},
    )
    recorded = answers(project)
    assert not [key for key in recorded if SECRET_NAME.search(key)]
    assert not [value for value in recorded.values() if SECRET_VALUE.search(str(value))]
    assert not [name for name, content in project_files(project).items() if token.encode() in content]


def test_template_needs_no_trust() -> None:
    """Settings that make copier demand `--trust` (exit 4 without it) are absent."""
    spec = yaml.safe_load((REPO_DIR / "copier.yml").read_text(encoding="utf-8"))
    assert not {"_tasks", "_migrations", "_jinja_extensions", "_external_data"} & set(spec)


# --- cookiecutter users moving to copier: the documented path, run as written ---------------------

UPDATING_DOC = REPO_DIR / "docs" / "updating.md"


def documented_migration_script() -> str:
    text = UPDATING_DOC.read_text(encoding="utf-8")
    block = re.search(r"<!-- migration-script -->\n```bash\n(.*?)```", text, re.S)
    assert block is not None, (
        "docs/updating.md should hold the migration script after <!-- migration-script -->"
    )
    return block.group(1)


def test_cookiecutter_service_moves_to_copier_and_updates(
    template_repo: TemplateRepo, tmp_path: Path
) -> None:
    # 1. A service generated with cookiecutter at 0.1.0 (non-default answer to see it carried over).
    config = tmp_path / "cookiecutter.yaml"
    replay_dir = tmp_path / "replay"
    config.write_text(
        f"replay_dir: {replay_dir}\ncookiecutters_dir: {tmp_path / 'cache'}\n", encoding="utf-8"
    )
    run(
        [
            *COOKIECUTTER,
            "--no-input",
            "--config-file",
            str(config),
            "--checkout",
            "0.1.0",
            "--output-dir",
            str(tmp_path / "out"),
            template_repo.url,
            "project_name=Orders",
            "with_httpx=yes",
        ],
        cwd=tmp_path,
    )
    project = tmp_path / "out" / "orders"
    git(project, "init", "-q", "-b", "main")
    commit_all(project, "Generated with cookiecutter at 0.1.0")
    # Edits away from the lines 0.2.0 changes: this update merges without a conflict.
    package = "orders"
    (project / "NOTES.md").write_text(USER_NOTES, encoding="utf-8")
    route = project / "src" / package / "api" / "orders.py"
    route.parent.mkdir(parents=True, exist_ok=True)
    route.write_text(USER_ROUTE, encoding="utf-8")
    commit_all(project, "Our edits")

    # 2. The migration exactly as docs/updating.md writes it.
    replay = replay_dir / f"{template_repo.path.name}.json"
    assert replay.exists(), sorted(path.name for path in replay_dir.iterdir())
    # `uvx copier` as written, with the copier under test (uvx would fetch one from the index).
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "uvx").write_text('#!/bin/sh\nexec "$@"\n', encoding="utf-8")
    (shims / "uvx").chmod(0o755)
    run(
        ["bash", "-euo", "pipefail", "-c", documented_migration_script()],
        cwd=tmp_path,
        env={
            "TEMPLATE": str(template_repo.path),
            "TAG": "0.1.0",
            "PROJECT": str(project),
            "REPLAY": str(replay),
            "PATH": os.pathsep.join([str(shims), str(BIN_DIR), os.environ["PATH"]]),
        },
    )

    # 3. Now a copier project at 0.2.0 with the cookiecutter answers, the template change and our edits.
    recorded = answers(project)
    assert recorded["_commit"] == "0.2.0"
    assert recorded["with_httpx"] is True
    assert recorded["project_name"] == "Orders"
    assert git(project, "ls-files", "-u") == ""
    assert files_with_markers(project) == set()
    assert (project / NEW_FILE).read_text(encoding="utf-8").startswith("# Orders handover")
    assert NEW_README_SECTION in (project / "README.md").read_text(encoding="utf-8")
    assert (project / "NOTES.md").read_text(encoding="utf-8") == USER_NOTES
    assert route.read_text(encoding="utf-8") == USER_ROUTE


# --- versions and changelog --------------------------------------------------------------------


def changelog_versions() -> list[str]:
    text = (REPO_DIR / "CHANGELOG.md").read_text(encoding="utf-8")
    return re.findall(r"^## \[(\d[^\]]*)\] - \d{4}-\d{2}-\d{2}$", text, re.M)


def test_changelog_names_every_release_with_a_pep440_version() -> None:
    text = (REPO_DIR / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "## [Unreleased]" in text
    versions = changelog_versions()
    assert versions, "CHANGELOG.md should list at least one release"
    parsed = [Version(version) for version in versions]  # raises on a non-PEP 440 version
    assert [str(version) for version in parsed] == versions, "write versions in normalized PEP 440 form"
    assert parsed == sorted(parsed, reverse=True), "newest release first"
    # The repository's own version is the newest release (or newer, while unreleased work piles up).
    with open(REPO_DIR / "pyproject.toml", "rb") as pyproject:
        assert Version(tomllib.load(pyproject)["project"]["version"]) >= parsed[0]
    # Every release tag of this repository has its entry (copier update only sees tagged versions).
    tags = git(REPO_DIR, "tag", "--list").split()
    release_tags = [tag for tag in tags if re.fullmatch(r"v?\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?", tag)]
    assert not [tag for tag in release_tags if tag.removeprefix("v") not in versions]


# --- one update command, wherever a user reads about updating ------------------------------------

UPDATE_COMMAND = "uvx copier update --defaults --conflict inline"


def test_one_update_command_everywhere() -> None:
    """Template README, docs/updating.md, the generated README and copier's next-steps message."""
    places = {
        "README.md": REPO_DIR / "README.md",
        "docs/updating.md": UPDATING_DOC,
        "template/README.md": REPO_DIR / "template" / "README.md",
        "copier.yml": REPO_DIR / "copier.yml",
    }
    for name, path in places.items():
        text = path.read_text(encoding="utf-8")
        assert UPDATE_COMMAND in text, name
        mentions = [line for line in text.splitlines() if re.search(r"(?<!`)copier update (?!brings)", line)]
        odd = [
            line for line in mentions if "uvx copier update" not in line or "--conflict inline" not in line
        ]
        assert odd == [], f"{name}: {odd}"
    generated_readme = places["template/README.md"].read_text(encoding="utf-8")
    # Conflicts are explained where the team looks: markers, exit status 0, what to do.
    for words in ("<<<<<<< before updating", "copier exits 0", "git status", "docs/updating.md"):
        assert words in generated_readme, words
