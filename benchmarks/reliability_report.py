"""Run the reliability suite and record its own figures in docs/reliability.md (never typed by hand).

    .venv/bin/python benchmarks/reliability_report.py                 # default tests (what CI runs)
    .venv/bin/python benchmarks/reliability_report.py -m "slow or not slow"   # everything

The suite's conftest tallies faults injected, bad inputs tried, runs completed and table rows lost, and writes them
as JSON to ``$SENET_RELIABILITY_FIGURES``; this script runs pytest with that set, prints the table, and replaces the
block between the ``figures`` markers in the doc with it, the command and pytest's outcome line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "reliability.md"
START, END = "<!-- figures:start -->", "<!-- figures:end -->"
HEADLINE = ("faults_injected", "bad_inputs_tried", "runs_completed", "rows_checked", "rows_lost")


def run_suite(marker: str, extra: list[str], log: Path | None = None) -> tuple[dict, str, float, int]:
    """pytest tests/reliability -m MARKER; returns (figures, pytest outcome line, wall seconds, exit code)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "figures.json"
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "tests/reliability",
            "-m",
            marker,
            "-q",
            "-p",
            "no:cacheprovider",
            *extra,
        ]
        t0 = time.perf_counter()
        proc = subprocess.run(
            cmd,
            cwd=REPO,
            env={**os.environ, "SENET_RELIABILITY_FIGURES": str(out)},
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - t0
        if log is not None:
            log.write_text(proc.stdout + proc.stderr)
        if not out.is_file():
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
            raise SystemExit(f"the suite wrote no figures (pytest exit code {proc.returncode})")
        figures = json.loads(out.read_text())
    outcome = next(
        (ln.strip("= ") for ln in reversed(proc.stdout.splitlines()) if re.search(r"\d+ (passed|failed)", ln)),
        f"exit code {proc.returncode}",
    )
    return figures, outcome, wall, proc.returncode


def render(figures: dict, outcome: str, wall: float, command: str) -> str:
    rows = [f"| {key.replace('_', ' ')} | {figures[key]} |" for key in HEADLINE]
    kinds = [f"| fault: {k} | {v} |" for k, v in figures["faults_by_kind"].items()]
    kinds += [f"| bad input: {k} | {v} |" for k, v in figures["bad_inputs_by_kind"].items()]
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            f"Produced by `{command}` on {stamp} ({wall:.0f} s wall): pytest said `{outcome}`.",
            "",
            "| figure | value |",
            "|---|---|",
            *rows,
            "",
            "| by kind | count |",
            "|---|---|",
            *kinds,
        ]
    )


def write_doc(doc: Path, block: str) -> None:
    text = doc.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{doc} lacks the {START} ... {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{START}\n{block}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--marker", default="not slow", help="pytest -m expression (default: what CI runs)")
    ap.add_argument("--doc", type=Path, default=DOC, help="markdown file with figures markers to update")
    ap.add_argument("--no-doc", action="store_true", help="only print the table")
    ap.add_argument("--log", type=Path, help="also save pytest's full output here")
    args, extra = ap.parse_known_args(argv)
    figures, outcome, wall, code = run_suite(args.marker, extra, args.log)
    command = "benchmarks/reliability_report.py " + shlex.join(["-m", args.marker, *extra])
    block = render(figures, outcome, wall, ".venv/bin/python " + command)
    print(block)
    if not args.no_doc:
        write_doc(args.doc, block)
        print(f"\nupdated {args.doc}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
