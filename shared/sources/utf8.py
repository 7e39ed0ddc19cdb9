"""UTF-8 checks of the bytes read: whole blocks checked by Arrow in place, and streams checked piece by piece."""

from __future__ import annotations

import codecs
import re

import numpy as np
import pyarrow as pa

# Arrow drops a byte order mark at the start of what it parses, where the csv module keeps it.
BOM = codecs.BOM_UTF8
# Bytes that are not UTF-8, as they appear in text decoded with errors="surrogateescape".
UNDECODABLE = re.compile("[\udc80-\udcff]")


def valid_utf8(data: bytes | pa.Buffer) -> bool:
    """Whether the bytes are valid UTF-8, checked by Arrow in place (decoding them would make a copy
    of up to four times their size)."""
    ends = pa.py_buffer(np.array([0, len(data)], dtype=np.int64))
    try:
        pa.Array.from_buffers(pa.large_string(), 1, [None, ends, pa.py_buffer(data)]).validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def unmarked_utf8(block: bytes, utf8: bool = False) -> bool:
    """A block both fast paths may take: not empty, no byte order mark, valid UTF-8 (known to be,
    given `utf8`: its reader checked every byte)."""
    return bool(block) and not block.startswith(BOM) and (utf8 or block.isascii() or valid_utf8(block))


class Utf8Watch:
    """Checks a stream read piece by piece as UTF-8: a character cut by the end of one piece is
    checked with the first bytes of the next."""

    def __init__(self) -> None:
        self._cut = b""  # the start of the last piece's cut character

    @property
    def cut_at_end(self) -> bool:
        return bool(self._cut)

    def valid(self, data: bytes) -> bool:
        """Whether the piece, after those before it, is still valid UTF-8."""
        start = 0
        if self._cut:
            start = min(_utf8_size(self._cut[0]) - len(self._cut), len(data))
            self._cut += data[:start]
            if len(self._cut) < _utf8_size(self._cut[0]):
                return True  # still cut: the next piece finishes it
            seam, self._cut = self._cut, b""
            if not valid_utf8(seam):
                return False
        elif data.isascii():
            return True
        end = len(data)
        for at in range(len(data) - 1, max(start, len(data) - 3) - 1, -1):
            if data[at] >= 0xC0:  # the last character's lead byte: is it whole?
                if at + _utf8_size(data[at]) > len(data):
                    end, self._cut = at, data[at:]
                break
            if data[at] < 0x80:
                break
        return valid_utf8(pa.py_buffer(data).slice(start, end - start))


def _utf8_size(lead: int) -> int:
    """The bytes of a UTF-8 character from its lead byte (1 for a byte that cannot lead one)."""
    return 2 if 0xC0 <= lead < 0xE0 else 3 if 0xE0 <= lead < 0xF0 else 4 if 0xF0 <= lead < 0xF8 else 1
