"""How a CSV part is cut into fields: its delimiter (given or sniffed), its dialect, and its checked header row."""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Iterator

from shared.privacy import short_names
from shared.sources.checked_stream import CUT_TEXT, MAX_LINE_BYTES
from shared.sources.csv_dialect import CsvDialect, unescaped
from shared.sources.errors import SegmentError
from shared.sources.utf8 import UNDECODABLE

DELIMITERS = ",;\t|"
_LONG_NUMBER = re.compile(r"\d[\d ()./-]{5,}\d")


def sniff_delimiter(data: bytes, dialect: CsvDialect) -> str:
    """Picks the delimiter among , ; TAB | by counting them in the first line (outside quotes)."""
    head = unescaped(data[: 64 * 1024], dialect.escape).decode("utf-8", errors="replace").lstrip("\ufeff")
    first_line = next((line for line in re.split(r"\r\n|\r|\n", _strip_quoted(head, dialect.quote)) if line), "")
    counts = {d: first_line.count(d) for d in DELIMITERS if d != dialect.quote}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _strip_quoted(text: str, quote: str) -> str:
    q = re.escape(quote)
    return re.sub(f"{q}(?:[^{q}]|{q}{q})*{q}", "", text)


def csv_dialect(name: str, delimiter: str, dialect: CsvDialect) -> type[csv.Dialect]:
    """The csv module's dialect of the part `name` for a delimiter, which must be one character other
    than a quote, the escape or a line break."""
    if len(delimiter) != 1 or delimiter in ("\r", "\n", dialect.quote, dialect.escape):
        raise SegmentError(
            f"{name}: the delimiter must be one character other than a quote, the escape or newline, not {delimiter!r}"
        )

    class Dialect(csv.excel):
        pass

    Dialect.delimiter = delimiter
    Dialect.quotechar = dialect.quote
    Dialect.escapechar = dialect.escape
    # Strict: a quote that never closes, or text after a closing quote, is an error (its row is
    # rejected and the lines it ran over are read again) instead of swallowing the following rows.
    Dialect.strict = True
    return Dialect


def header_end(head: bytes, dialect: CsvDialect) -> int | None:
    """Just past the header line when it is one plain line (else the csv module reads the part)."""
    head = unescaped(head, dialect.escape)
    end, quote = head.find(b"\n"), dialect.quote.encode()
    if end < 0 or head.count(quote, 0, end) % 2 or b"\r" in head[: max(end - 1, 0)] or head[:1] in b"\r\n":
        return None  # also blank lines before the header: the csv module skips them
    if dialect.escape and dialect.escape.encode() in head[:end]:
        return None  # an escape before a control character
    return end + 1


def read_header(name: str, data: io.RawIOBase, dialect: type[csv.Dialect]) -> list[str]:
    """The checked header row at the start of `data`."""
    text = io.TextIOWrapper(io.BufferedReader(data), encoding="utf-8", errors="surrogateescape", newline="")
    return next_header(name, csv.reader(text, dialect=dialect))


def next_header(name: str, reader: Iterator[list[str]]) -> list[str]:
    """The first row that is not blank (blank lines before it are skipped), checked."""
    try:
        header = next(reader, None)
        while header == []:
            header = next(reader, None)
    except csv.Error as exc:
        raise SegmentError(f"{name}: unreadable header row: {csv_reason(exc)}") from None
    return clean_header(name, header)


def clean_header(name: str, header: list[str] | None) -> list[str]:
    """The column names of a header row, stripped; a part whose header cannot be one is refused."""
    if not header or header == [""]:
        raise SegmentError(f"{name}: the file is empty: no header row")
    columns = [h.strip() for h in header]
    if any(CUT_TEXT in c for c in columns):
        raise SegmentError(f"{name}: the header row is longer than {MAX_LINE_BYTES:,} bytes: is this a CSV file?")
    if any(UNDECODABLE.search(c) for c in columns):
        raise SegmentError(f"{name}: the header row holds bytes that are not valid UTF-8")
    if any("\x00" in c for c in columns):
        raise SegmentError(f"{name}: the header row holds NUL bytes: is the file UTF-16 or binary?")
    duplicates = [column for column, count in Counter(columns).items() if count > 1]
    if duplicates:
        named = "" if looks_like_data(duplicates) else f": {short_names(sorted(set(duplicates)))}"
        raise SegmentError(f"{name}: the header names a column twice{named}")
    return columns


def looks_like_data(header: list[str]) -> bool:
    """True when a header holds what looks like an email or a phone number: a file without a header
    row, whose first row of personal data must not be quoted in messages."""
    return any("@" in column or _LONG_NUMBER.search(column) for column in header)


def csv_reason(exc: csv.Error) -> str:
    """Why the csv module could not read a row, in words for the rejects file."""
    message = str(exc)
    if "field limit" in message:
        return f"a field is longer than {csv.field_size_limit():,} characters"
    if "end of data" in message:
        return "a quoted field is never closed (an unbalanced quote)"
    if "expected after" in message:
        return "a closing quote is followed by more text (an unbalanced quote)"
    return f"unreadable CSV row: {message}"
