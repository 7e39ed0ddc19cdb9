"""How a segment's CSV files are written: header row or named columns, quote, escape and delimiter.

Producers differ: Spark, Databricks and Azure Data Factory write no header and escape a quote inside a
quoted value with a backslash by default; spreadsheets and most CDPs write a header and double the quote.
Both CSV readers (the Arrow fast path and the csv module) read every dialect alike."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from shared.privacy import short_names


@dataclass(frozen=True)
class CsvDialect:
    """The CSV dialect of a segment's files. `escape` escapes the next character (a quote inside a quoted
    value, or the escape itself); doubled quotes are read as one quote either way."""

    header: bool = True
    columns: tuple[str, ...] | None = None  # the column names when there is no header row
    escape: str | None = None
    quote: str = '"'
    delimiter: str | None = None  # None: sniffed among , ; TAB | (checked by the reader, which names the file)

    def __post_init__(self) -> None:
        if self.escape == self.quote:
            object.__setattr__(self, "escape", None)  # an escape equal to the quote means doubled quotes
        problem = self.problem()
        if problem:
            raise ValueError(problem)

    def problem(self) -> str | None:
        """Why this dialect cannot be read, or None."""
        if not self.header and not self.columns:
            return "without a header row the columns must be named"
        if self.columns is not None:
            if self.header:
                return "columns are named only when there is no header row"
            if any(not c.strip() for c in self.columns):
                return "a column name is empty"
            twice = sorted(c for c, n in Counter(self.columns).items() if n > 1)
            if twice:
                return f"a column is named twice: {short_names(twice)}"
        for role, char in (("quote", self.quote), ("escape", self.escape)):
            if char is not None and (len(char) != 1 or not char.isascii() or not char.isprintable() or char == " "):
                return f"the {role} must be one printable ASCII character"
        return None


def unescaped(data: bytes, escape: str | None) -> bytes:
    """`data` with every escaped character (the escape and the byte after it) replaced by two plain
    bytes, so that quotes and line ends can be found by position; an escape before a control character
    is kept (a block holding one is not plain)."""
    if escape is None or escape.encode() not in data:
        return data
    return _escaped_pair(escape).sub(b"__", data)


def _escaped_pair(escape: str) -> re.Pattern[bytes]:
    return re.compile(re.escape(escape.encode()) + rb"[^\x00-\x1f]", re.DOTALL)
