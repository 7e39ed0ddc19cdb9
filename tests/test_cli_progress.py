"""The command line's progress bar: bytes read of the segment's size with the time left, counts as
integers, and `accepted` counting up as Klaviyo finishes the import jobs."""

from __future__ import annotations

import io
import re
import sys

from shared.cli import EXIT_OK, main
from tests.conftest import member_emails


class Terminal(io.StringIO):
    """What a terminal would show of stderr: the bar is drawn only on a terminal."""

    def isatty(self) -> bool:
        return True


def test_the_bar_shows_bytes_of_the_total_the_time_left_and_accepted_counting_up(
    env, tmp_path, klaviyo, list_id, monkeypatch
):
    # 25,000 rows: jobs of 10,000, 10,000 and 5,000 profiles. A job takes longer the more profiles it
    # holds: the small one finishes a second before the others, and `accepted` is seen at 5,000.
    klaviyo.configure(processing_seconds=0.2, processing_seconds_per_profile=0.0002)
    segment = tmp_path / "segment.csv"
    segment.write_text("email\n" + "".join(f"person{n}@example.com\n" for n in range(25_000)))
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["run", str(segment), "--list-id", list_id]) == EXIT_OK
    drawn = [line.strip() for line in re.split(r"[\r\n]+", terminal.getvalue()) if "%|" in line]
    assert drawn, "no bar drawn on the terminal"
    *before_last, last = drawn
    size = segment.stat().st_size  # 588,896 bytes: shown as 589kB
    assert f"of {size / 1000:.0f}kB read" in last
    assert all(re.search(r"\[\d\d:\d\d<(\d\d:\d\d|\?)", line) for line in drawn)
    assert any(re.search(r"<\d\d:\d\d,", line) for line in before_last), "a time left is shown once the rate is known"
    assert not any("e+" in line for line in drawn), "counts are integers, not 2.5e+4"
    assert "rows=25,000 sent=25,000 accepted=25,000" in last
    accepted = [
        int(m.group(1).replace(",", "")) for line in before_last if (m := re.search(r"accepted=([\d,]+)", line))
    ]
    assert any(0 < n < 25_000 for n in accepted), f"accepted did not count up as jobs finished: {accepted}"
    assert len(member_emails(klaviyo, list_id)) == 25_000
