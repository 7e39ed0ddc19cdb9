"""Benchmark of issue 19: mirror mode at the speed of a plain run, and the removal of those who left.

    python -m bench.mirror                        # 1,000,000 rows, 1% leave, at Klaviyo's published limits
    python -m bench.mirror --rows 100000 --limits off
    python -m bench.mirror --markdown             # also rewrites the mirror table in BENCHMARKS.md

Two simulators, both at real limits unless --limits off (the client then keeps no pace of its own):
- `plain`: the segment exported in add mode without a state (what the product this replaces does);
- `mirror`: the same segment on another list, three mirror runs with one state: `first` (everything
  is sent, and the identifiers recorded), `unchanged` (the same segment: nothing to send or remove,
  the delta run's own cost) and `leavers` (the segment without every 100th row: nothing to send, 1% to
  look up and remove). Targets: first <= 1.2 x plain; leavers - unchanged <= 30 s.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.run import MAPPING, RSS_BASE_BYTES, RSS_BYTES_PER_PROFILE
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
BEGIN, END = "<!-- bench:mirror:begin -->", "<!-- bench:mirror:end -->"
FIRST_RATIO, REMOVAL_SECONDS = 1.2, 30.0


@dataclass
class Measured:
    run: str
    wall_seconds: float
    max_rss_mb: float
    requests: int
    jobs: int
    sent: int
    removed: int
    status: str
    exit_code: int | None


def drop_rows(source: Path, target: Path, share: float) -> int:
    """Copies a generated segment without every 1/share-th row; returns how many were left out."""
    return copy_rows(source, target, share, lambda _line: None)


def measure(
    name: str, runs: list[tuple[str, Path, tuple[str, ...]]], workdir: Path, real: bool, timeout: float
) -> list[Measured]:
    logs = workdir / name
    logs.mkdir()
    list_id = f"Lmirror{name}"
    results: list[Measured] = []
    with Simulator([list_id], real, logs / "simulator.log") as simulator:
        env = simulator_env(simulator.url, real)
        for run, segment, extra in runs:
            report = logs / f"{run}.json"
            extra = tuple(item.replace("{state}", str(logs / "state")) for item in extra)
            args = export_args(segment, list_id, report, "bench-mirror", MAPPING, *extra)
            done = simulated_export(simulator, args, env, logs / f"{run}.log", report, timeout)
            counts = done.report.get("counts", {})
            results.append(
                Measured(
                    run,
                    round(done.process.wall_seconds, 1),
                    round(done.process.max_rss_bytes / 1e6),
                    done.requests,
                    done.jobs,
                    counts.get("sent", 0),
                    counts.get("removed", 0),
                    done.report.get("status", "?"),
                    done.process.exit_code,
                )
            )
            print(_row(results[-1]), flush=True)
    return results


def _row(m: Measured) -> str:
    return (
        f"| {m.run} | {m.wall_seconds:.1f} | {m.requests:,} | {m.jobs:,} | {m.sent:,} | {m.removed:,} | "
        f"{m.max_rss_mb:,.0f} | {m.status}{'' if m.exit_code == 0 else f' (exit {m.exit_code})'} |"
    )


def render(rows: int, left: int, results: list[Measured], command: str, floor_mb: float) -> str:
    by_run = {m.run: m for m in results}
    plain, first = by_run["plain"], by_run["first"]
    unchanged, leavers = by_run["unchanged"], by_run["leavers"]
    ratio = first.wall_seconds / plain.wall_seconds if plain.wall_seconds else float("inf")
    extra = leavers.wall_seconds - unchanged.wall_seconds
    lines = [
        f"{rows:,} rows; {left:,} rows (1%) leave the segment for the last run. Command: `{command}`.",
        "",
        "| run | wall s | requests | import jobs | sent | removed | peak RSS MB | status |",
        "|---|---|---|---|---|---|---|---|",
        *(_row(m) for m in results),
        "",
        "| target | measured | |",
        "|---|---|---|",
        f"| first mirror run ≤ {FIRST_RATIO} × plain run | {first.wall_seconds:.1f} s / {plain.wall_seconds:.1f} s"
        f" = {ratio:.2f} | {'met' if ratio <= FIRST_RATIO else 'NOT met'} |",
        f"| 1% leavers removed ≤ {REMOVAL_SECONDS:.0f} s on top of the delta run | {leavers.wall_seconds:.1f} s − "
        f"{unchanged.wall_seconds:.1f} s = {extra:.1f} s | {'met' if extra <= REMOVAL_SECONDS else 'NOT met'} |",
        f"| peak RSS ≤ {floor_mb:,.0f} MB (250 MB + 24 B × profiles) | "
        f"{max(m.max_rss_mb for m in results):,.0f} MB | "
        f"{'met' if max(m.max_rss_mb for m in results) <= floor_mb else 'NOT met'} |",
    ]
    return "\n".join(lines)


def update_markdown(table: str) -> None:
    replace_marked_block(BENCHMARKS_MD, BEGIN, END, table, "## Issue 19: mirror by lookup")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.mirror", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--left", type=float, default=0.01, help="share of rows that leave (default 0.01)")
    parser.add_argument("--limits", choices=("real", "off"), default="real")
    parser.add_argument("--markdown", action="store_true", help="rewrite the mirror table in BENCHMARKS.md")
    args = parser.parse_args(argv)
    command = " ".join(["python -m bench.mirror", *(sys.argv[1:] if argv is None else argv)])
    workdir = Path(tempfile.mkdtemp(prefix="klaviyo-bench-mirror-"))
    real, timeout = args.limits == "real", 300 + args.rows / 2_000
    try:
        with interruptible():
            original, smaller = workdir / "segment.csv", workdir / "segment-smaller.csv"
            print(f"generating {args.rows:,} rows ...", flush=True)
            expected = write_segment(original, args.rows, seed=7, track=False)
            left = drop_rows(original, smaller, args.left)
            print("| run | wall s | requests | import jobs | sent | removed | peak RSS MB | status |", flush=True)
            results = measure("plain", [("plain", original, ())], workdir, real, timeout)
            mirror = ("--mode", "mirror", "--state", "{state}")
            runs = [
                ("first", original, mirror),
                ("unchanged", original, mirror),
                ("leavers", smaller, mirror),
            ]
            results += measure("mirror", runs, workdir, real, timeout)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    floor_mb = (RSS_BASE_BYTES + RSS_BYTES_PER_PROFILE * expected.valid) / 1e6
    table = render(args.rows, left, results, command, floor_mb)
    print("\n" + table)
    if args.markdown:
        update_markdown(table)
        print(f"\nupdated {BENCHMARKS_MD.relative_to(ROOT)}")
    return 0 if all(m.exit_code == 0 for m in results) else 1


if __name__ == "__main__":
    sys.exit(main())
