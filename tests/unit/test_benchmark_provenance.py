"""The commit a benchmark block names (``benchmarks/provenance.py``): the checkout's HEAD, marked
when tracked files differ from it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from benchmarks.provenance import commit


def _git(repo: Path, *argv: str) -> str:
    identity = ["-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]
    done = subprocess.run(["git", *identity, *argv], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.txt").write_text("one\n")
    _git(repo, "add", "a.txt")
    _git(repo, "commit", "-q", "-m", "first")
    return repo


def test_a_clean_checkout_is_named_by_its_short_head(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    (repo / "untracked.txt").write_text("not part of the code measured\n")
    assert commit(repo) == _git(repo, "rev-parse", "--short", "HEAD")


def test_changed_tracked_files_are_said(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    (repo / "a.txt").write_text("two\n")
    assert commit(repo) == _git(repo, "rev-parse", "--short", "HEAD") + " (with uncommitted changes)"


def test_outside_a_checkout_the_commit_is_unknown(tmp_path: Path) -> None:
    assert commit(tmp_path) == "unknown"
