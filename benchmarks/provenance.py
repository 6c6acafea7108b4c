"""Which code a benchmark block measured: the commit every block of ``docs/benchmarks.md`` names."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _git(argv: list[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", *argv], capture_output=True, text=True, timeout=15, check=False, cwd=cwd
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def commit(cwd: Path = REPO_ROOT) -> str:
    """The short hash of ``HEAD``, with " (with uncommitted changes)" when tracked files differ
    from it (the block then measured code no commit holds); "unknown" outside a git checkout."""
    head = _git(["rev-parse", "--short", "HEAD"], cwd)
    if not head:
        return "unknown"
    dirty = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
    return head + (" (with uncommitted changes)" if dirty else "")
