"""Which code a benchmark block measured: the commit every block of ``docs/benchmarks.md`` names,
and the one way the benchmarks ask a command for a line of text (git, ``nproc``, ``envoy --version``)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from benchmarks.serving.plan import REPO_ROOT


def run_text(argv: Sequence[str], *, cwd: Path = REPO_ROOT, timeout_s: float = 15.0) -> str | None:
    """What ``argv`` printed (stdout, else stderr), stripped; None when it failed or printed nothing."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout_s, check=False, cwd=cwd
        )
    except (OSError, subprocess.SubprocessError):
        return None
    text = (done.stdout or done.stderr).strip()
    return text if done.returncode == 0 and text else None


def commit(cwd: Path = REPO_ROOT) -> str:
    """The short hash of ``HEAD``, with " (with uncommitted changes)" when tracked files differ
    from it (the block then measured code no commit holds); "unknown" outside a git checkout."""
    head = run_text(["git", "rev-parse", "--short", "HEAD"], cwd=cwd)
    if not head:
        return "unknown"
    dirty = run_text(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd)
    return head + (" (with uncommitted changes)" if dirty else "")
