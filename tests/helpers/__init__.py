"""Helpers for the template repository's own tests (one module per concern)."""

from pathlib import Path

REPO_DIR = Path(__file__).resolve().parents[2]
