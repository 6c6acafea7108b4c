"""The report around the measurements: the run's header and the markdown block it rewrites."""

from __future__ import annotations

from pathlib import Path

from benchmarks.serving.cpu import CpuShare


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
