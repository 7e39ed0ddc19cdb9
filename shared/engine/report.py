"""Run reports: counts and outcome of one export run, and the file of rows not sent or not imported."""

from __future__ import annotations

import contextlib
import csv
import heapq
import os
import tempfile
import threading
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Literal, NamedTuple

import orjson

# Why a row was not imported: rejected (never sent: invalid, too large, or refused by Klaviyo's
# validation), duplicate (an earlier row has the same identifier), failed (inside a Klaviyo job).
# not_subscribed: the row says yes to marketing but was not subscribed (or not on every channel asked).
Outcome = Literal["rejected", "duplicate", "failed", "not_subscribed"]


class RejectLine(NamedTuple):
    """One line of the rejects file: a row that was not imported, and why."""

    source: str  # the segment part the row came from ("" when Klaviyo names a profile no row matches)
    row: int  # the row's number in that part (0 when there is no row)
    identifier: str  # the row's identifiers, masked
    outcome: Outcome
    field: str  # the mapped field that made the row invalid, when one field did
    reason: str


REJECTS_COLUMNS = list(RejectLine._fields)
MAX_REASONS = 20  # distinct reasons the report names per outcome; the rest are summed
OTHER_REASONS = "(other reasons)"
# Reject lines held in memory before they are sorted and spooled to disk (about 250 bytes each).
RUN_LINES = 50_000


@dataclass
class Counts:
    rows_read: int = 0
    sent: int = 0  # profiles in import jobs Klaviyo took
    accepted: int = 0  # imported by those jobs
    failed: int = 0  # failed inside those jobs (see rejects file)
    rejected: int = 0  # never sent: invalid, or refused by Klaviyo's validation
    duplicates: int = 0
    not_sent: int = 0  # valid rows read but not sent: the run failed (or its time ran out) first
    unchanged: int = 0  # delta run: accepted by an earlier run exactly as they are now, not sent
    added: int = 0  # sync state: accepted, not on the list from an earlier run (dry run: would be added)
    updated: int = 0  # sync state: accepted, on the list and sent again (dry run: would be updated)
    removed: int = 0  # mirror: taken off the list, having left the segment (dry run: would be)
    # With `subscribe`: consenting rows Klaviyo took for subscription (on one channel asked or more;
    # dry run: would be), consenting rows not subscribed on any channel (see rejects file), rows
    # whose consent is not yes (only imported), and with unsubscribe_withdrawn those unsubscribed.
    subscribed: int = 0
    not_subscribed: int = 0
    no_consent: int = 0
    unsubscribed: int = 0

    @property
    def unaccounted(self) -> int:
        return self.rows_read - self.sent - self.rejected - self.duplicates - self.not_sent - self.unchanged


@dataclass
class RunReport:
    run_id: str
    export_name: str
    list_id: str
    source: str
    source_version: str
    started_at: str
    finished_at: str = ""
    status: str = ""  # a RunStatus once the run ends (a str here keeps the report's schema in the API as it is)
    dry_run: bool = False
    counts: Counts = field(default_factory=Counts)
    job_ids: list[str] = field(default_factory=list)
    retries: dict[str, int] = field(default_factory=dict)
    # Rows not imported, by outcome (rejected, duplicate, failed) and reason: the rejects file in brief.
    reasons: dict[str, dict[str, int]] = field(default_factory=dict)
    duration_seconds: float = 0.0
    rows_per_second: float = 0.0
    error: str | None = None
    rejects_file: str | None = None
    mode: str = "add"  # add | mirror
    sync_state: str | None = None  # where the sync state lives (delta runs); None: every profile is sent
    list_members: int | None = None  # reconcile: members the list had when the run read it
    metadata: str | None = None  # the file that listed the parts read (a CDM model.json) and its etag
    parts: list[str] = field(default_factory=list)  # the files read, in order

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2)

    def summary(self) -> str:
        c = self.counts
        lines = [
            f"run {self.run_id} of export {self.export_name!r}: {self.status}"
            + (" (dry run: nothing sent)" if self.dry_run else ""),
            f"  source      {self.source} (version {self.source_version or 'n/a'})",
            f"  rows read   {c.rows_read:,}",
            f"  sent        {c.sent:,} in {len(self.job_ids):,} import jobs",
            f"  accepted    {c.accepted:,} imported into list {self.list_id}",
            f"  failed      {c.failed:,} failed inside Klaviyo jobs",
            f"  rejected    {c.rejected:,} invalid rows, not sent",
            f"  duplicates  {c.duplicates:,} repeated identifiers, first row kept",
        ]
        if self.sync_state:
            verb = "would be " if self.dry_run else ""
            lines += [
                f"  sync        mode {self.mode}, state in {self.sync_state}",
                f"  unchanged   {c.unchanged:,} sent before as they are now, not sent again",
                f"  added       {c.added:,} {verb}added (not on the list from an earlier run)",
                f"  updated     {c.updated:,} {verb}updated (changed since they were sent)",
                f"  removed     {c.removed:,} {verb}removed from the list (left the segment)",
            ]
        if c.subscribed or c.not_subscribed or c.no_consent or c.unsubscribed:
            verb = "would be " if self.dry_run else ""
            lines += [
                f"  subscribed  {c.subscribed:,} consenting rows {verb}subscribed to marketing",
                f"  not subscr. {c.not_subscribed:,} consenting rows not subscribed (see rejects)",
                f"  no consent  {c.no_consent:,} rows without a yes, only imported",
            ]
            if c.unsubscribed:
                lines.append(f"  unsubscr.   {c.unsubscribed:,} rows whose consent is withdrawn {verb}unsubscribed")
        lines += [
            f"  time        {self.duration_seconds:.1f} s, {self.rows_per_second:,.0f} rows/s",
        ]
        if c.not_sent:
            lines.insert(-1, f"  not sent    {c.not_sent:,} valid rows read but not sent before the run stopped")
        if self.retries:
            lines.append("  retries     " + ", ".join(f"{k} x{v}" for k, v in sorted(self.retries.items())))
        for outcome, reasons in sorted(self.reasons.items()):
            for reason, count in reasons.items():
                lines.append(f"  {outcome:<11} {count:,} x {reason}")
        if self.error:
            lines.append(f"  error       {self.error}")
        if self.rejects_file:
            lines.append(f"  rejects     {self.rejects_file}")
        return "\n".join(lines)


class RejectsFile:
    """Rows that were not imported, one line each (masked identifiers only), in row order: sorted by
    part (in the segment's order, see `order_parts`) and row number within the part. Lines come in
    any order (a chunk's at a time, Klaviyo's failures as its jobs finish, from several threads).
    At most `run_lines` are held in memory: each time that many have come, they are sorted and
    spooled to a run file of their own, and `close` merges the runs into the file at `path`."""

    def __init__(self, run_lines: int | None = None) -> None:
        fd, self.path = tempfile.mkstemp(prefix="klaviyo-rejects-", suffix=".csv")
        os.close(fd)  # written whole by close()
        self.run_lines = run_lines or RUN_LINES
        self._lock = threading.Lock()
        self.count = 0
        self._reasons: Counter[tuple[str, str]] = Counter()
        self._held: list[RejectLine] = []
        self._runs: list[str] = []  # paths of the sorted run files, in the order they were spooled
        self._parts: dict[str, int] = {}
        self._closed = False

    def order_parts(self, names: list[str]) -> None:
        """The segment's parts in order: lines sort by this order of their part (lines naming no
        known part, such as a profile Klaviyo failed that no row matches, come last)."""
        with self._lock:
            self._parts = {name: index for index, name in enumerate(names)}

    def add(self, line: RejectLine) -> None:
        self.add_many([line])

    def add_many(self, lines: list[RejectLine]) -> None:
        with self._lock:
            self._held.extend(lines)
            self.count += len(lines)
            self._reasons.update((line.outcome, line.reason) for line in lines)
            if len(self._held) >= self.run_lines:
                self._spool()

    def reasons(self) -> dict[str, dict[str, int]]:
        """How many rows each reason holds, by outcome, most frequent first."""
        summary: dict[str, dict[str, int]] = {}
        with self._lock:
            ranked = self._reasons.most_common()
        for (outcome, reason), count in ranked:
            reasons = summary.setdefault(outcome, {})
            if len(reasons) < MAX_REASONS:
                reasons[reason] = count
            else:
                reasons[OTHER_REASONS] = reasons.get(OTHER_REASONS, 0) + count
        return summary

    def close(self) -> None:
        """Writes the file at `path`: the header, then every line in row order. Lines added after
        are not written."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            held, self._held = self._sorted_held(), []
            runs, self._runs = self._runs, []
        with open(self.path, "w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(REJECTS_COLUMNS)
            if not runs:
                writer.writerows(held)
                return
            with contextlib.ExitStack() as files:
                readers = [csv.reader(files.enter_context(open(run, newline="", encoding="utf-8"))) for run in runs]
                spooled = [((self._key(row[0], int(row[1])), row) for row in reader) for reader in readers]
                in_memory = ((self._key(line.source, line.row), line) for line in held)
                for _, line in heapq.merge(*spooled, in_memory, key=lambda keyed: keyed[0]):
                    writer.writerow(line)
        _remove(runs)

    def read_bytes(self) -> bytes:
        self.close()
        with open(self.path, "rb") as f:
            return f.read()

    def discard(self) -> None:
        self.close()
        with self._lock:
            runs, self._runs = self._runs, []
        _remove([*runs, self.path])

    def _key(self, source: str, row: int) -> tuple[int, str, int]:
        return self._parts.get(source, len(self._parts)), source, row

    def _sorted_held(self) -> list[RejectLine]:
        return sorted(self._held, key=lambda line: self._key(line.source, line.row))

    def _spool(self) -> None:
        """The lines held, sorted into a run file of their own (under the lock)."""
        fd, path = tempfile.mkstemp(prefix="klaviyo-rejects-run-", suffix=".csv")
        with open(fd, "w", newline="", encoding="utf-8") as run:
            csv.writer(run).writerows(self._sorted_held())
        self._runs.append(path)
        self._held = []


def _remove(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
