"""The template's README stays true: every question documented with its default, commands that exist."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
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
    if isinstance(default, str) and ("{{" in default or "{%" in default):
        # Derived defaults are described in words; they must name what they derive from.
        derived_from = [
            other for other in questions(load_spec(REPO_DIR)) if re.search(rf"\b{other}\b", default)
        ]
        assert derived_from and any(other in documented for other in derived_from)
    elif default == "":
        assert documented == "empty"
    else:
        literal = str(default).lower() if isinstance(default, bool) else str(default)
        assert documented == f"`{literal}`"


def quick_start_commands() -> list[str]:
    quick_start = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = quick_start.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_quick_start_is_clone_then_two_commands() -> None:
    clone, cd, run_command, test_command = quick_start_commands()
    assert clone.startswith("git clone ") and cd.startswith("cd ")
    assert run_command == "scripts/uv run scripts/demo.py"
    assert test_command == "scripts/test"


def test_ci_runs_the_readme_test_command() -> None:
    test_command = quick_start_commands()[-1]
    ci_script = (REPO_DIR / ".ci" / "run").read_text(encoding="utf-8")
    assert test_command in ci_script.splitlines()
    runner = (REPO_DIR / test_command).read_text(encoding="utf-8")
    assert "apt-get install" in runner and "scripts/uv run pytest -n auto" in runner


def test_demo_needs_copier_only() -> None:
    """Inline script metadata: `uv run scripts/demo.py` installs copier, not the template's dev group."""
    demo = (REPO_DIR / "scripts" / "demo.py").read_text(encoding="utf-8")
    block = demo.split("# /// script\n", 1)[1].split("# ///\n", 1)[0]
    metadata = tomllib.loads("\n".join(line.removeprefix("#").strip() for line in block.splitlines()))
    assert [re.split(r"[<>=~!\[ ]", spec)[0] for spec in metadata["dependencies"]] == ["copier"]


def test_uv_shim_installs_uv_on_an_externally_managed_python(tmp_path: Path) -> None:
    """`scripts/uv` with no uv on PATH: installs uv into .tools/ (pip --target: PEP 668 allows it)."""
    system = [Path(d) for d in ("/usr/bin", "/bin") if (Path(d) / "python3").exists()]
    python_dir = system[0] if system else Path(sys.executable).parent
    (tmp_path / "scripts").mkdir()
    shutil.copy2(REPO_DIR / "scripts" / "uv", tmp_path / "scripts" / "uv")
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "PATH": f"{python_dir}:/usr/bin:/bin"}
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"):
        if name in os.environ:
            env[name] = os.environ[name]  # the machine's network settings
    assert shutil.which("uv", path=env["PATH"]) is None, "this test needs a PATH without uv"
    result = subprocess.run(
        [str(tmp_path / "scripts" / "uv"), "--version"], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # pip's advice against root is for the system environment; .tools/ is ours (CI runs as root).
    assert "WARNING" not in result.stderr, result.stderr
    assert result.stdout.startswith("uv "), result.stdout
    assert (tmp_path / ".tools" / "uv" / "bin" / "uv").is_file()


def test_readme_commands_work_after_the_quick_start() -> None:
    """After the Quick start there may be no uv on PATH: the README's own commands go through
    scripts/, and one line says how to run its `uvx` commands (tests/test_demo.py runs one so)."""
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.DOTALL)
    commands = [
        command.strip()
        for block in blocks
        for command in block.replace("\\\n", " ").splitlines()
        if command.strip() and not command.lstrip().startswith("#")
    ]
    assert commands
    assert [
        command for command in commands if not command.startswith(("scripts/", "git clone ", "cd ", "uvx "))
    ] == []
    repo_commands = re.findall(r"`(uv run (?:pytest|python|bench)[^`]*)`", README)
    assert repo_commands == [], "commands in this checkout run through scripts/uv"
    assert "`uvx` is uv's tool runner" in README and "`scripts/uv tool run`" in README
