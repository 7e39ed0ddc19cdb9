"""Benchmark of issue 6: a segment of which a share changed since the last run, exported as a delta
run (only new and changed profiles) next to a full run of the same segment.

    python -m bench.delta                          # 1,000,000 rows, 1% changed, both modes
    python -m bench.delta --rows 100000 --modes pipeline
    python -m bench.delta --markdown               # also rewrites the delta table in BENCHMARKS.md

Each mode gets a fresh simulator and a fresh sync state; three runs follow each other:
`first` (the original segment, with --state: everything is sent), `delta` (the changed segment,
with --state) and `full` (the changed segment again, with --state --full: everything is sent).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.run import MAPPING
from bench.stack import (
    ROOT,
    Simulator,
    copy_rows,
    export_args,
    interruptible,
    replace_marked_block,
    simulated_export,
    simulator_env,
)
from tools.segment_gen import write_segment

BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
BEGIN, END = "<!-- bench:delta:begin -->", "<!-- bench:delta:end -->"
TIERS = (b"bronze", b"silver", b"gold", b"platinum")
TIER_COLUMN = 7  # loyalty_tier in tools/segment_gen.py's rows


@dataclass
class Measured:
    mode: str
    run: str
    wall_seconds: float
    max_rss_mb: float
    requests: int
    jobs: int
    sent: int
    unchanged: int
    exit_code: int | None


def change_rows(source: Path, target: Path, share: float) -> int:
    """Copies a generated segment, giving every 1/share-th row another loyalty tier; returns how many."""

    def next_tier(line: bytes) -> bytes:
        fields = line.split(b",")
        if len(fields) > TIER_COLUMN and fields[TIER_COLUMN] in TIERS:
            fields[TIER_COLUMN] = TIERS[(TIERS.index(fields[TIER_COLUMN]) + 1) % len(TIERS)]
        return b",".join(fields)

    return copy_rows(source, target, share, next_tier)


def measure_mode(mode: str, original: Path, changed: Path, workdir: Path, timeout: float) -> list[Measured]:
    list_id = f"Ldelta{mode}"
    logs = workdir / mode
    logs.mkdir()
    state = ("--state", str(logs / "state"))
    results: list[Measured] = []
    with Simulator([list_id], mode == "real", logs / "simulator.log") as simulator:
        env = simulator_env(simulator.url, mode == "real")  # as bench.run does
        for run, segment, extra in (("first", original, ()), ("delta", changed, ()), ("full", changed, ("--full",))):
            report = logs / f"{run}.json"
            args = export_args(segment, list_id, report, "bench-delta", MAPPING, *state, *extra)
            done = simulated_export(simulator, args, env, logs / f"{run}.log", report, timeout)
            counts = done.report.get("counts", {})
            results.append(
                Measured(
                    mode,
                    run,
                    round(done.process.wall_seconds, 1),
                    round(done.process.max_rss_bytes / 1e6),
                    done.requests,
                    done.jobs,
                    counts.get("sent", 0),
                    counts.get("unchanged", 0),
                    done.process.exit_code,
                )
            )
            print(_row(results[-1]), flush=True)
    return results


def _row(m: Measured) -> str:
    return (
        f"| {m.mode} | {m.run} | {m.wall_seconds:.1f} | {m.requests:,} | {m.jobs:,} | {m.sent:,} | "
        f"{m.unchanged:,} | {m.max_rss_mb:,.0f} | {'ok' if m.exit_code == 0 else f'exit {m.exit_code}'} |"
    )


def render(rows: int, share: float, changed: int, results: list[Measured], command: str) -> str:
    lines = [
        f"{rows:,} rows, {changed:,} of them changed ({share:.0%} of rows; a few of those are invalid or",
        f"duplicate rows, which are never sent). Command: `{command}`.",
        "",
        "| simulator | run | wall s | requests | import jobs | sent | unchanged | peak RSS MB | status |",
        "|---|---|---|---|---|---|---|---|---|",
        *(_row(m) for m in results),
    ]
    return "\n".join(lines)


def update_markdown(table: str) -> None:
    replace_marked_block(BENCHMARKS_MD, BEGIN, END, table, "## Delta runs (issue 6)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.delta", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--changed", type=float, default=0.01, help="share of rows changed (default 0.01)")
    parser.add_argument("--modes", default="pipeline,real", help="pipeline (no rate limits), real, or both")
    parser.add_argument("--markdown", action="store_true", help="rewrite the delta table in BENCHMARKS.md")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip() in ("pipeline", "real")]
    command = " ".join(["python -m bench.delta", *(sys.argv[1:] if argv is None else argv)])
    workdir = Path(tempfile.mkdtemp(prefix="klaviyo-bench-delta-"))
    try:
        with interruptible():
            original, changed_path = workdir / "segment.csv", workdir / "segment-changed.csv"
            print(f"generating {args.rows:,} rows ...", flush=True)
            write_segment(original, args.rows, seed=7, track=False)
            changed = change_rows(original, changed_path, args.changed)
            print("| simulator | run | wall s | requests | import jobs | sent | unchanged | peak RSS MB | status |")
            results: list[Measured] = []
            for mode in modes:
                results += measure_mode(mode, original, changed_path, workdir, 120 + args.rows / 5_000)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    table = render(args.rows, args.changed, changed, results, command)
    print("\n" + table)
    if args.markdown:
        update_markdown(table)
        print(f"\nupdated {BENCHMARKS_MD.relative_to(ROOT)}")
    return 0 if all(m.exit_code == 0 for m in results) else 1


if __name__ == "__main__":
    sys.exit(main())
