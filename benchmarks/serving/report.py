"""The report around the measurements: the run's header, the markdown blocks it rewrites, the judge."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.serving.cpu import CpuShare
from benchmarks.serving.measure import say
from benchmarks.serving.plan import JUDGE_SCRIPT, JUDGE_TIMEOUT_S, REPO_ROOT


def report_header(facts: dict[str, str], elapsed_s: float, cpu: dict[str, CpuShare]) -> list[str]:
    rows = ["| | |", "| --- | --- |"]
    rows += [f"| {key} | {value} |" for key, value in facts.items()]
    rows.append(f"| benchmark wall time | {elapsed_s:.0f} s (training and model-server starts included) |")
    shares = " · ".join(f"{name} {share.others / share.seconds:.0%}" for name, share in cpu.items())
    rows.append(f"| CPU used by other processes during each phase (share of one core) | {shares} |")
    busy = [name for name, share in cpu.items() if share.others / share.seconds > 0.10]
    warning = (
        [
            f"**The machine was not idle**: other processes used more than 10 % of a core during "
            f"{', '.join(busy)}; those numbers are pessimistic. Re-run on an idle machine.",
            "",
        ]
        if busy
        else []
    )
    return ["### Run", "", *rows, "", *warning]


def replace_block(path: Path, markers: tuple[str, str], body: str) -> None:
    """Replace what lies between ``markers`` in ``path`` (appending the block if it is missing)."""
    start, end = markers
    block = f"{start}\n{body.strip()}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if start in text and end in text and text.index(start) < text.index(end):
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def run_judge() -> str:
    say(f"running {JUDGE_SCRIPT.name} (default runs and seed)")
    done = subprocess.run(
        [sys.executable, str(JUDGE_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=JUDGE_TIMEOUT_S,
        check=True,
        cwd=REPO_ROOT,
    )
    lines = done.stdout.strip().splitlines()
    if lines and lines[0].startswith("# "):  # its title becomes a sub-heading of the doc's section
        lines[0] = "#### " + lines[0][2:]
    command = f"`python benchmarks/{JUDGE_SCRIPT.name}` (its defaults), run {datetime.now(UTC):%Y-%m-%d}"
    return "\n".join([f"Output of {command}:", "", *lines])
