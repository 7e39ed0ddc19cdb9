"""rejects.csv lists the rows not imported in row order (part by part, in the segment's order, then by
row), whatever order they were found in, and however many there are."""

from __future__ import annotations

import csv

import orjson

from shared.cli import EXIT_OK, main
from shared.engine import report as report_module


def part(first: int, rows: int) -> str:
    """Rows of people first..first+rows-1; every 7th email is invalid, every 11th repeats person 0's."""
    lines = ["email"]
    for n in range(first, first + rows):
        if n % 7 == 3:
            lines.append(f"nope{n}")
        elif n % 11 == 5:
            lines.append("person0@example.com")
        else:
            lines.append(f"person{n}@example.com")
    return "\n".join(lines) + "\n"


def test_rejects_of_a_folder_segment_are_in_part_and_row_order(env, tmp_path, klaviyo, list_id, monkeypatch):
    # Klaviyo fails some profiles inside its jobs: their lines come last, as the jobs finish; and a
    # chunk's invalid rows and duplicates are found apart. Few lines held in memory: the file is merged
    # from sorted runs spooled to disk.
    klaviyo.configure(profile_failure_rate=0.2, seed=3)
    monkeypatch.setattr(report_module, "RUN_LINES", 25)
    folder = tmp_path / "segment"
    folder.mkdir()
    names = ["part-00000.csv", "part-00001.csv", "part-00002.csv"]
    for index, name in enumerate(names):
        (folder / name).write_text(part(index * 1000, 400))
    report_path = tmp_path / "out" / "report.json"
    assert main(["run", str(folder), "--list-id", list_id, "--report", str(report_path), "--no-progress"]) == EXIT_OK
    report = orjson.loads(report_path.read_bytes())
    with open(report["rejects_file"], newline="", encoding="utf-8") as f:
        lines = list(csv.DictReader(f))
    counts = report["counts"]
    assert len(lines) == counts["rejected"] + counts["duplicates"] + counts["failed"]
    assert {line["outcome"] for line in lines} == {"rejected", "duplicate", "failed"}
    parts = [str(folder / name) for name in names]
    assert {line["source"] for line in lines} == set(parts), "rejects in every part"
    order = [(parts.index(line["source"]), int(line["row"])) for line in lines]
    assert order == sorted(order), "rejects.csv is not in (part, row) order"
    assert len(set(order)) == len(order)
    # Row numbers are the file's lines (the header is line 1): row 5 of the first part is person 3.
    first_invalid = next(line for line in lines if line["outcome"] == "rejected")
    assert (first_invalid["source"], first_invalid["row"]) == (parts[0], "5")
