"""A generated service's schema changes the way its README says, and its tests notice a model
changed without a migration.

In a copy of the all-features service (its own environment, the copy's code first on the path):
the README's "Change the schema" model is put into `db.py`; the service's migration tests then
fail (autogenerate finds the new column); the README's commands (`uv run alembic revision
--autogenerate`, `make migrate`) write and apply the migration, which passes ruff and mypy; and
the migration tests pass again, on SQLite and on a real PostgreSQL.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.project_env import ProjectEnv

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("env-copier-all_features")]

README_SECTION = "### Change the schema"


def section(readme: str) -> str:
    return re.split(r"\n##+ ", readme.split(f"\n{README_SECTION}\n", 1)[1], maxsplit=1)[0]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def test_change_the_schema_as_the_readme_says(
    project_env: Callable[[str, str], ProjectEnv], datastore_env: dict[str, str], tmp_path: Path
) -> None:
    project = project_env("copier", "all_features")
    copy = tmp_path / "service"
    shutil.copytree(
        project.root,
        copy,
        ignore=shutil.ignore_patterns(".venv", "*cache*", "__pycache__", "*.sqlite3"),
    )
    database = tmp_path / "local.sqlite3"
    env = project.env(
        # `uv run` in the copy, with the environment as it is and the copy's code imported first.
        UV_PROJECT_ENVIRONMENT=str(project.root / ".venv"),
        UV_NO_SYNC="1",
        PYTHONPATH=str(copy / "src"),
        DATABASE_URL=f"sqlite+aiosqlite:///{database}",
        RUFF_NO_CACHE="true",
    )

    def run(*args: str, check: bool = True) -> str:
        result = ProjectEnv(copy, project.python, project.uv_cache_dir).run(*args, env=env, check=check)
        return result.stdout + result.stderr

    def migration_tests(**extra: str) -> str:
        tests = [str(project.venv_bin / "pytest"), "-q", "-p", "no:cacheprovider", "tests/test_migrations.py"]
        result = ProjectEnv(copy, project.python, project.uv_cache_dir).run(
            *tests, env={**env, **extra}, check=False
        )
        return result.stdout

    text = section((copy / "README.md").read_text())
    [model] = blocks(text, "python")
    [commands] = blocks(text, "bash")
    revise, migrate = commands.strip().splitlines()
    assert revise.startswith("uv run alembic revision --autogenerate -m ")
    assert migrate == "make migrate"

    run("make", "migrate")  # the local database at the newest revision, as the README asks first
    db_py = next((copy / "src").glob("*/db.py"))
    source = db_py.read_text()
    old_model = re.search(r"class Note\(Base\):\n.*?\n\n\n", source, flags=re.DOTALL)
    assert old_model is not None
    db_py.write_text(source.replace(old_model.group(0), model + "\n\n"))

    before = migration_tests()
    assert "1 failed" in before, before
    assert "a model changed without a migration" in before and "author" in before, before

    versions = next((copy / "src").glob("*/migrations/versions"))
    existing = set(versions.glob("*.py"))
    run("bash", "-c", revise)
    (written,) = set(versions.glob("*.py")) - existing
    migration = written.read_text()
    assert "add the note author" in migration and "batch_alter_table" in migration, migration
    assert 'add_column(sa.Column("author", sa.String(length=100), nullable=True))' in migration, migration
    run(str(project.venv_bin / "ruff"), "check", ".")
    run(str(project.venv_bin / "ruff"), "format", "--check", ".")
    assert "Success: no issues found" in run(str(project.venv_bin / "mypy"))

    run("make", "migrate")
    with sqlite3.connect(database) as connection:
        columns = {row[1] for row in connection.execute("PRAGMA table_info(notes)")}
    assert columns == {"id", "text", "author"}

    after = migration_tests(TEST_DATABASE_URL=datastore_env["TEST_DATABASE_URL"])
    assert "failed" not in after and "skipped" not in after and "7 passed" in after, after
