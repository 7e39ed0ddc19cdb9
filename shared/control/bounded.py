"""What fits in an Azure Table Storage entity, and cutting what would not.

A string property holds at most 64 KiB of UTF-16 (32,768 code units) and an entity at most 1 MiB
and 252 properties. A write past those limits fails (`PropertyValueTooLarge`): a run whose outcome
cannot be recorded stays `running`, a request whose body cannot be stored gets an empty 500. So
request fields are refused at validation when their stored form would be too large
(`stored_size_problem`), and the strings of a run record are cut with a marker (`bounded_fields`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

# The stored JSON of an export's `mapping`, `segment` or `csv` (UTF-16 code units, as Table Storage
# counts them): under the 32,768 a string property holds, with room to spare.
MAX_STORED_JSON_CHARS = 32_000
# A run's reason: long enough for any reason the app writes, short enough to read.
MAX_REASON_CHARS = 2_000
# Any other string of a run record (the segment's versions of a folder of many parts, who asked):
# about 20 such strings stay far below an entity's 1 MiB.
MAX_RUN_TEXT_CHARS = 8_000


def utf16_units(text: str) -> int:
    """The length of `text` as Table Storage counts it (characters outside the BMP count twice)."""
    return len(text.encode("utf-16-le")) // 2


def stored_json_chars(value: Any) -> int:
    """How long `value` is once the store writes it as JSON (store._to_entity serialises it with orjson)."""
    return utf16_units(orjson.dumps(value).decode())


def stored_size_problem(value: Any, limit: int = MAX_STORED_JSON_CHARS) -> str | None:
    """Why `value` cannot be stored as one JSON property (its size and the limit), or None; never the value."""
    size = stored_json_chars(value)
    if size <= limit:
        return None
    return f"too large to store: {size:,} characters as JSON, at most {limit:,}"


def bounded_text(text: str, limit: int) -> str:
    """`text` as it is when it has at most `limit` characters; else cut so that, with a marker saying it
    was cut and how long it was, it has `limit`."""
    if utf16_units(text) <= limit:
        return text
    marker = f" …(cut: {len(text):,} characters in all)"
    kept = text[: max(limit - len(marker), 0)]
    while utf16_units(kept) + len(marker) > limit:  # characters outside the BMP take two units
        kept = kept[: -max(1, (utf16_units(kept) + len(marker) - limit) // 2)]
    return kept + marker


def bounded_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    """A run record's fields with every string cut to what may be stored: the reason to MAX_REASON_CHARS,
    any other to MAX_RUN_TEXT_CHARS (values that are not strings are left as they are)."""
    return {
        name: bounded_text(value, MAX_REASON_CHARS if name == "reason" else MAX_RUN_TEXT_CHARS)
        if isinstance(value, str)
        else value
        for name, value in data.items()
    }
