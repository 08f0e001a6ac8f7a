"""Both engines render the same template into the same service, and refuse the same bad answers.

Every variant in helpers/variants.py is generated once per session by each engine (pytest-copie /
pytest-cookies) and compared byte for byte; the other checks read those shared outputs.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import copier
import pytest
import yaml
from copier.errors import UserMessageError
from helpers import REPO_DIR, engines, variants

Generated = Callable[[str, str], Path]

ALL_VARIANTS = list(variants.VARIANTS)

# --- output parity -----------------------------------------------------------------------------


def _diff(name: str, left: bytes | str, right: bytes | str) -> str:
    if isinstance(left, bytes) and isinstance(right, bytes):
        try:
            a, b = left.decode().splitlines(), right.decode().splitlines()
        except UnicodeDecodeError:
            return f"{name}: binary files differ"
        return "\n".join(difflib.unified_diff(a, b, f"copier/{name}", f"cookiecutter/{name}", lineterm=""))
    return f"{name}: {left!r} != {right!r}"


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_engines_render_identical_projects(generated: Generated, variant: str) -> None:
    copier_tree = engines.tree(generated("copier", variant))
    cookie_tree = engines.tree(generated("cookiecutter", variant))

    assert engines.COPIER_ANSWERS_FILE in copier_tree, "copier must record its answers for `copier update`"
    assert engines.COPIER_ANSWERS_FILE not in cookie_tree
    del copier_tree[engines.COPIER_ANSWERS_FILE]

    only_copier = sorted(set(copier_tree) - set(cookie_tree))
    only_cookie = sorted(set(cookie_tree) - set(copier_tree))
    assert not only_copier and not only_cookie, (
        f"only copier: {only_copier}\nonly cookiecutter: {only_cookie}"
    )
    differing = [name for name in copier_tree if copier_tree[name] != cookie_tree[name]]
    assert not differing, "\n\n".join(_diff(n, copier_tree[n], cookie_tree[n]) for n in differing)
    copier_exec = [
        p for p in engines.executables(generated("copier", variant)) if p != engines.COPIER_ANSWERS_FILE
    ]
    assert copier_exec == engines.executables(generated("cookiecutter", variant)), "executable bits differ"


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_copier_answers_file_records_the_answers(generated: Generated, variant: str) -> None:
    recorded = yaml.safe_load((generated("copier", variant) / engines.COPIER_ANSWERS_FILE).read_text())
    assert recorded["_src_path"], "copier update needs the template's source"
    for name, value in variants.answers(variant).items():
        assert recorded[name] == value, name
    assert "cookiecutter" not in recorded, "the computed namespace must not be stored as an answer"


# --- nothing left unrendered -------------------------------------------------------------------

# Template syntax that is legitimately *output* (written inside {% raw %}), by file and pattern.
# Everything else that looks like `{{`, `{%` or `{#` is an unrendered (or escaped-by-mistake) tag.
RAW_CONTENT: list[tuple[str, str | None, re.Pattern[str], str]] = [
    # (path glob, substring the line must contain or None, pattern removed, why)
    (".github/workflows/*.y*ml", None, re.compile(r"\$\{\{[^{}]*\}\}"), "GitHub Actions expressions"),
    (
        "deploy/*.y*ml",
        None,
        re.compile(r"\{\{[^{}]*\$(?:labels|value|externalLabels|externalURL)\b[^{}]*\}\}"),
        "Prometheus alert templates ($labels / $value)",
    ),
    (
        "deploy/*",
        "legendFormat",
        re.compile(r"\{\{\s*[A-Za-z_][A-Za-z0-9_]*\s*\}\}"),
        "Grafana legend label references",
    ),
]
JINJA_OPENERS = re.compile(r"\{\{|\{%|\{#")


def unrendered_markers(root: Path) -> list[str]:
    problems: list[str] = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if JINJA_OPENERS.search(relative):
            problems.append(f"{relative}: unrendered path")
        if not path.is_file() or path.is_symlink():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        rules = [
            (line_hint, pattern)
            for glob, line_hint, pattern, _ in RAW_CONTENT
            if fnmatch.fnmatch(relative, glob)
        ]
        for number, line in enumerate(text.splitlines(), 1):
            for line_hint, pattern in rules:
                if line_hint is None or line_hint in line:
                    line = pattern.sub("", line)
            if JINJA_OPENERS.search(line):
                problems.append(f"{relative}:{number}: {line.strip()[:160]}")
    return problems


@pytest.mark.parametrize("engine", engines.ENGINES)
@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_no_unrendered_template_syntax(generated: Generated, engine: str, variant: str) -> None:
    problems = unrendered_markers(generated(engine, variant))
    assert not problems, "unrendered Jinja in the generated project:\n" + "\n".join(problems)


def test_unrendered_marker_scan_is_precise(tmp_path: Path) -> None:
    """The allowlist lets exactly the legitimate raw syntax through, nothing else."""
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    (tmp_path / "deploy" / "grafana").mkdir(parents=True)
    (tmp_path / "src").mkdir()
    (tmp_path / ".github/workflows/ci.yml").write_text("run: echo ${{ matrix.python }}\n")
    (tmp_path / "deploy/rules.yaml").write_text(
        'summary: "{{ $labels.http_route }} at {{ $value | humanize }}"\n'
    )
    (tmp_path / "deploy/grafana/dash.json").write_text('{"legendFormat": "{{http_route}} {{ status }}"}\n')
    assert unrendered_markers(tmp_path) == []

    (tmp_path / "src/app.py").write_text("name = '{{ cookiecutter.project_slug }}'\n")
    (tmp_path / "deploy/grafana/dash.json").write_text('{"title": "{{ cookiecutter.project_name }}"}\n')
    (tmp_path / "deploy/rules.yaml").write_text("name: {{ cookiecutter.project_slug }}\n{% if x %}\n")
    (tmp_path / "src/x{{ cookiecutter.package_name }}").mkdir()
    (tmp_path / "README.md").write_text("{# a comment #}\n${{ github.sha }}\n")
    found = unrendered_markers(tmp_path)
    assert len(found) == 7, found


# --- disabled features leave nothing behind ----------------------------------------------------

# Paths that only exist with a flag on (copier `_exclude` + cookiecutter post_gen).
FLAG_PATHS = {"with_kubernetes": "deploy/kubernetes", "with_grafana_dashboard": "deploy/grafana"}
# Files that may legitimately be empty.
EMPTY_OK = {"__init__.py", "py.typed", ".gitkeep"}


def _feature_pattern(flag: str) -> re.Pattern[str]:
    """A path part naming the feature (`httpx`, `test_httpx.py`, `redis_client.py`; not `pydantic_ai`)."""
    token = re.escape(flag.removeprefix("with_"))
    not_longer_name = "(?!_ai)" if flag == "with_pydantic" else ""
    return re.compile(rf"(?<![a-z0-9]){token}(?![a-z0-9]){not_longer_name}")


@pytest.mark.parametrize("engine", engines.ENGINES)
@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_no_empty_folders_or_files(generated: Generated, engine: str, variant: str) -> None:
    root = generated(engine, variant)
    assert engines.empty_dirs(root) == []
    empty_files = [
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.stat().st_size == 0 and p.name not in EMPTY_OK
    ]
    assert empty_files == [], "files rendered empty (a disabled feature should not leave a file)"


@pytest.mark.parametrize("engine", engines.ENGINES)
@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_disabled_features_leave_no_files(generated: Generated, engine: str, variant: str) -> None:
    root = generated(engine, variant)
    paths = [p.relative_to(root).as_posix() for p in root.rglob("*")]
    for flag, enabled in variants.effective_flags(variant).items():
        if flag in FLAG_PATHS:
            assert (root / FLAG_PATHS[flag]).is_dir() == enabled, (flag, enabled)
        if not enabled:
            pattern = _feature_pattern(flag)
            leftovers = [p for p in paths if any(pattern.search(part) for part in p.split("/"))]
            assert leftovers == [], f"{flag} is off but these paths are there: {leftovers}"


# --- cookiecutter.json cannot drift from copier.yml ---------------------------------------------


def _run_generator(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(repo / "hooks" / "cookiecutter_json.py"), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=repo,
    )


def test_cookiecutter_json_is_in_sync_with_copier_yml() -> None:
    result = _run_generator(REPO_DIR, "--check")
    assert result.returncode == 0, result.stderr


def test_copier_yml_keeps_the_rules_both_engines_need() -> None:
    """The rules copier.yml's header states; each one broke an engine when ignored."""
    spec = yaml.safe_load((REPO_DIR / "copier.yml").read_text(encoding="utf-8"))
    asked = {name: q for name, q in spec.items() if not name.startswith("_") and q.get("when") is not False}
    namespace = spec["cookiecutter"]["default"]
    for name, question in asked.items():
        if "when" in question:  # copier leaves an unasked answer out of _copier_answers
            assert f"{name}={name}" in namespace, f"{name}: add it to the cookiecutter namespace by hand"
        assert question.get("type") in ("str", "bool"), f"{name}: copier casts other types unvalidated"
        assert question.get("help"), f"{name}: every question explains itself"
        assert not question.get("secret"), f"{name}: secrets are never answers"
    assert list(spec)[-1] == "cookiecutter", "the namespace question must come last"
    assert not {"_tasks", "_migrations", "_jinja_extensions"} & set(spec), "these need --trust"


def test_one_line_refusal_checks_every_question_in_order() -> None:
    """hooks/answers.jinja lists the questions its copier-side refusal walks: it must not drift."""
    macros = (REPO_DIR / "hooks" / "answers.jinja").read_text(encoding="utf-8")
    listed = re.search(r"set QUESTIONS = \[([^\]]*)\]", macros)
    assert listed is not None
    assert re.findall(r"'(\w+)'", listed.group(1)) == list(variants.QUESTIONS)


def test_cookiecutter_json_drift_is_detected(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(REPO_DIR / "hooks", repo / "hooks", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO_DIR / "copier.yml", repo / "copier.yml")
    shutil.copy2(REPO_DIR / "cookiecutter.json", repo / "cookiecutter.json")
    assert _run_generator(repo, "--check").returncode == 0

    spec = (repo / "copier.yml").read_text()
    assert '\n  default: "8000"\n' in spec
    spec = spec.replace('\n  default: "8000"\n', '\n  default: "8080"\n', 1)
    spec = spec.replace(
        "\nwith_httpx:",
        "\nwith_extra_flag:\n  type: bool\n  help: A new question\n  default: false\n\nwith_httpx:",
        1,
    )
    (repo / "copier.yml").write_text(spec)

    drifted = _run_generator(repo, "--check")
    assert drifted.returncode == 1
    assert "out of date" in drifted.stderr

    assert _run_generator(repo).returncode == 0
    assert _run_generator(repo, "--check").returncode == 0
    context = json.loads((repo / "cookiecutter.json").read_text())
    assert context["http_port"] == "8080"
    assert list(context).index("with_extra_flag") == list(context).index("with_httpx") - 1
    assert context["__prompts__"]["with_extra_flag"] == "A new question"


def test_every_question_reaches_cookiecutter() -> None:
    context = yaml.safe_load((REPO_DIR / "cookiecutter.json").read_text())
    assert [name for name in context if not name.startswith("_")] == list(variants.QUESTIONS)


# --- bad answers: refused by both engines, naming the question, writing nothing -----------------

BAD_ANSWERS: list[Any] = [
    pytest.param({"package_name": "1service"}, "package_name", id="package-not-identifier"),
    pytest.param({"package_name": "my-service"}, "package_name", id="package-with-hyphen"),
    pytest.param({"package_name": "class"}, "package_name", id="package-keyword"),
    pytest.param({"http_port": 80}, "http_port", id="port-privileged"),
    pytest.param({"http_port": 70000}, "http_port", id="port-too-high"),
    pytest.param({"http_port": "abc"}, "http_port", id="port-not-a-number"),
    pytest.param(
        {"metrics_separate_port": True, "metrics_port": 8000}, "metrics_port", id="metrics-port-clash"
    ),
    pytest.param({"project_slug": "My_Service"}, "project_slug", id="slug-uppercase-underscore"),
    pytest.param({"project_slug": "-svc"}, "project_slug", id="slug-leading-hyphen"),
    pytest.param({"author_email": "not-an-email"}, "author_email", id="email-no-at"),
    pytest.param({"author_email": "a b@example.com"}, "author_email", id="email-space"),
    pytest.param({"python_version": "3.10"}, "python_version", id="choice-outside-list"),
    pytest.param(
        {"slo_availability_percent": "100"}, "slo_availability_percent", id="slo-choice-outside-list"
    ),
    pytest.param({"k8s_namespace": "Prod_NS"}, "k8s_namespace", id="namespace-not-dns-label"),
    pytest.param({"logfire_project_url": "http://x"}, "logfire_project_url", id="url-not-https"),
    # copier would read any other text as True (hooks/answers.jinja): a typo must not switch on a feature.
    pytest.param({"with_httpx": "maybe"}, "with_httpx", id="flag-not-a-boolean"),
    pytest.param({"with_kubernetes": "2"}, "with_kubernetes", id="flag-a-number"),
]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd, check=False, timeout=120
    )


@pytest.mark.parametrize(("bad", "question"), BAD_ANSWERS)
def test_copier_rejects_bad_answer(
    template_snapshot: Path, tmp_path: Path, bad: dict[str, Any], question: str
) -> None:
    """copier's API as `copier copy -d name=value` uses it (in-process: ~10x cheaper than the CLI)."""
    dst = tmp_path / "out"
    # A choice outside the list fails in copier's own parsing (ValueError); the others in
    # hooks/answers.jinja's one-line refusal (UserMessageError).
    with pytest.raises((ValueError, UserMessageError), match=f"'{question}'"):
        copier.run_copy(
            str(template_snapshot),
            str(dst),
            data=bad,
            defaults=True,
            unsafe=False,
            vcs_ref="HEAD",
            quiet=True,
        )
    assert not dst.exists() or not any(dst.iterdir()), "a refused answer must not write files"


@pytest.mark.parametrize(("bad", "question"), BAD_ANSWERS)
def test_cookiecutter_rejects_bad_answer(
    cookies: Any,
    template_snapshot: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    bad: dict[str, Any],
    question: str,
) -> None:
    """Through pytest-cookies: choices fail in cookiecutter itself, validators in the pre_gen hook."""
    baked = cookies.bake(extra_context=bad, template=str(template_snapshot))
    assert baked.exception is not None and baked.project_path is None
    message = str(baked.exception) + capfd.readouterr().err
    assert question in message, message[-3000:]
    # pytest-cookies bakes into <tmp_path>/cookies/bakeNN/
    assert list((tmp_path / "cookies").glob("*/*")) == [], "a refused answer must not write files"


@pytest.mark.parametrize("engine", engines.ENGINES)
def test_command_line_names_the_question(template_snapshot: Path, tmp_path: Path, engine: str) -> None:
    """What a user sees: each CLI exits non-zero, names the question, and writes nothing."""
    out = tmp_path / "out"
    if engine == "copier":
        command = ["copier", "copy", "--defaults", "-r", "HEAD", "-d", "package_name=class"]
        command += [str(template_snapshot), str(out)]
    else:
        command = ["cookiecutter", "--no-input", "-o", str(out), str(template_snapshot), "package_name=class"]
    result = subprocess.run(
        [sys.executable, "-m", *command],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
        timeout=120,
    )
    assert result.returncode != 0, result.stdout + result.stderr
    assert "'package_name'" in result.stderr and "keyword" in result.stderr, result.stderr[-3000:]
    assert not out.exists() or not any(out.iterdir())


# --- next steps after generating ------------------------------------------------------------------


@pytest.mark.parametrize("engine", engines.ENGINES)
def test_both_engines_print_the_next_steps(template_snapshot: Path, tmp_path: Path, engine: str) -> None:
    """Install (writes uv.lock), commit (copier update needs a clean history), run, test, update."""
    if engine == "copier":
        command = [
            "copier",
            "copy",
            "--defaults",
            "-r",
            "HEAD",
            str(template_snapshot),
            str(tmp_path / "svc"),
        ]
    else:
        command = ["cookiecutter", "--no-input", "-o", str(tmp_path), str(template_snapshot)]
    result = _cli(*command, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = result.stdout + result.stderr
    steps = [
        "uv sync",
        "git init && git add -A && git commit -m",
        "uv run my-service  # http://127.0.0.1:8000/docs",
        "make check",
        "uvx copier update --defaults --conflict inline",
    ]
    positions = [printed.find(step) for step in steps]
    assert -1 not in positions and positions == sorted(positions), printed[-3000:]
    moving = "Generated with cookiecutter, which cannot update a service"
    assert (moving in printed) == (engine == "cookiecutter")
