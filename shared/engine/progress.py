"""Progress of a run: a bar on a terminal, periodic log lines with counts and rate elsewhere."""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

from shared.engine.report import Counts
from shared.sources import ReadProgress

log = logging.getLogger(__name__)

# The bar when the segment's size is known: bytes read of it, the time spent and the time left
# (at the average rate so far), then the counts.
_BYTES_FORMAT = "{percentage:3.0f}%|{bar}| {n_fmt}B of {total_fmt}B read [{elapsed}<{remaining}, {rate_fmt}]{postfix}"


def counts_text(counts: Counts) -> str:
    """The counts beside the bar, as integers with thousands separators (failed only once some have)."""
    text = (
        f"rows={counts.rows_read:,} sent={counts.sent:,} accepted={counts.accepted:,} "
        f"rejected={counts.rejected:,} dup={counts.duplicates:,}"
    )
    return text + (f" failed={counts.failed:,}" if counts.failed else "")


class ProgressLog:
    """Logs counts and rows/s at most every `interval` seconds."""

    def __init__(self, run_id: str, interval: float = 5.0, reading: ReadProgress | None = None) -> None:
        self.run_id, self.interval, self.reading = run_id, interval, reading
        self._start = self._last = time.monotonic()

    def __call__(self, counts: Counts) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        rate = counts.rows_read / max(now - self._start, 1e-9)
        reading = self.reading
        share = f" ({reading.bytes_read:,} of {reading.total:,} bytes)" if reading is not None and reading.total else ""
        log.info(
            "run %s: %d rows read%s (%.0f rows/s), %d sent, %d accepted, %d rejected, %d duplicates",
            self.run_id,
            counts.rows_read,
            share,
            rate,
            counts.sent,
            counts.accepted,
            counts.rejected,
            counts.duplicates,
        )


class ProgressBar:
    """A tqdm bar of the segment's bytes read of its size, with the time left, when the size is known
    (`reading` of a SegmentSource); else of rows read. The counts beside it are integers; the bar is
    drawn at most every `interval` seconds, and at once when Klaviyo finishes jobs (accepted or
    failed changes), so `accepted` is seen counting up. Called between chunks, never per row."""

    def __init__(
        self, reading: ReadProgress | None = None, stream: TextIO | None = None, interval: float = 0.2
    ) -> None:
        from tqdm import tqdm

        self._reading = reading if reading is not None and reading.total else None
        file = stream if stream is not None else sys.stderr
        if self._reading is not None:
            self._bar = tqdm(
                total=self._reading.total,
                unit="B",
                unit_scale=True,
                unit_divisor=1000,
                bar_format=_BYTES_FORMAT,
                file=file,
                dynamic_ncols=True,
                smoothing=0,
            )
        else:
            self._bar = tqdm(unit=" rows", unit_scale=True, file=file, dynamic_ncols=True, smoothing=0)
        self.interval = interval
        self._drawn = time.monotonic()
        self._jobs_seen = (0, 0)  # accepted and failed when last drawn

    def __call__(self, counts: Counts) -> None:
        self._bar.n = self._reading.bytes_read if self._reading is not None else counts.rows_read
        self._bar.set_postfix_str(counts_text(counts), refresh=False)
        jobs = (counts.accepted, counts.failed)
        now = time.monotonic()
        if jobs != self._jobs_seen or now - self._drawn >= self.interval:
            self._jobs_seen, self._drawn = jobs, now
            self._bar.refresh()

    def close(self) -> None:
        self._bar.close()
