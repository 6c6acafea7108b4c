"""The judge benchmark (see ``benchmarks/judge/__init__.py``)::

    python -m benchmarks.judge [--quick] [--runs N] [--good-runs N] [--aa-runs N]
                               [--out FILE] [--plots DIR] [--workers N] [--only shadow]

Prints the markdown report; with ``--out`` also rewrites the judge block of that file (normally
``docs/benchmarks.md``) and saves the plots under ``--plots`` (default ``docs/img``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.judge.report import markdown, plot, write_block
from benchmarks.judge.run import run_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.judge", description=__doc__)
    parser.add_argument("--runs", type=int, default=100, help="releases per cell of a bad scenario (100)")
    parser.add_argument("--good-runs", type=int, default=40, help="releases per cell of a good scenario (40)")
    parser.add_argument(
        "--aa-runs", type=int, default=160, help="releases per cell of identical models (160)"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: a few runs per cell")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    parser.add_argument("--out", type=Path, default=None, help="markdown file whose judge block to rewrite")
    parser.add_argument("--plots", type=Path, default=Path("docs/img"), help="where --out puts the plots")
    parser.add_argument(
        "--only", choices=["shadow"], help="only the shadow phase (its own block of --out; --runs per cell)"
    )
    args = parser.parse_args(argv)
    if args.only == "shadow":
        return _shadow(args)
    runs, good, aa = (4, 2, 4) if args.quick else (args.runs, args.good_runs, args.aa_runs)
    if min(runs, good, aa) < 1:
        parser.error("--runs, --good-runs and --aa-runs must be at least 1")
    results = run_all(runs, good, aa, workers=args.workers)
    command = "python -m benchmarks.judge" + (
        " --quick" if args.quick else f" --runs {runs} --good-runs {good} --aa-runs {aa}"
    )
    plots = plot(results, args.plots, args.out.parent) if args.out else {}
    report = markdown(results, command, plots)
    print(report)
    if args.out:
        write_block(args.out, report)
        print(
            f"wrote the judge block of {args.out} and {len(plots)} plot(s) under {args.plots}",
            file=sys.stderr,
        )
    return 0


def _shadow(args: argparse.Namespace) -> int:
    from benchmarks.judge.shadow import SHADOW_MARKERS, run_all_shadow, shadow_markdown
    from benchmarks.judge.truth import measure_models
    from benchmarks.serving.report import replace_block

    runs = 4 if args.quick else args.runs
    models = measure_models()
    command = "python -m benchmarks.judge --only shadow" + (" --quick" if args.quick else f" --runs {runs}")
    report = shadow_markdown(models, run_all_shadow(models, runs), command)
    print(report)
    if args.out:
        replace_block(args.out, SHADOW_MARKERS, report)
        print(f"wrote the shadow block of {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
