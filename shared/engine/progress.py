"""Progress of a run: a bar on a terminal, periodic log lines with counts and rate elsewhere."""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

from shared.engine.report import Counts

log = logging.getLogger(__name__)


class ProgressLog:
    """Logs counts and rows/s at most every `interval` seconds."""

    def __init__(self, run_id: str, interval: float = 5.0) -> None:
        self.run_id, self.interval = run_id, interval
        self._start = self._last = time.monotonic()

    def __call__(self, counts: Counts) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        rate = counts.rows_read / max(now - self._start, 1e-9)
        log.info(
            "run %s: %d rows read (%.0f rows/s), %d sent, %d accepted, %d rejected, %d duplicates",
            self.run_id,
            counts.rows_read,
            rate,
            counts.sent,
            counts.accepted,
            counts.rejected,
            counts.duplicates,
        )


class ProgressBar:
    """A tqdm bar of rows read, with sent/accepted/rejected beside it."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        from tqdm import tqdm

        self._bar = tqdm(unit=" rows", unit_scale=True, file=stream, dynamic_ncols=True, mininterval=0.2)
        self._last = 0

    def __call__(self, counts: Counts) -> None:
        self._bar.update(counts.rows_read - self._last)
        self._last = counts.rows_read
        self._bar.set_postfix(
            sent=counts.sent, accepted=counts.accepted, rejected=counts.rejected, dup=counts.duplicates, refresh=False
        )

    def close(self) -> None:
        self._bar.close()
