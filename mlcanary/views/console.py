"""The consoles every command prints to: stdout for the story, stderr for errors.

When the output is not a terminal (a log file, CI, a pipe) rich would squeeze everything into 80
columns; unless ``COLUMNS`` says otherwise the consoles then lay out for :data:`CAPTURED_WIDTH`
columns, the width every table and live view of mlcanary is designed to fit.
"""

from __future__ import annotations

import os
from typing import Final

from rich.console import Console

CAPTURED_WIDTH: Final = 100
"""Columns used when the output is not a terminal (and ``COLUMNS`` is not set)."""


def fit_captured_output(console: Console) -> Console:
    """Give ``console`` :data:`CAPTURED_WIDTH` columns when it does not write to a terminal."""
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console.width = CAPTURED_WIDTH
    return console
