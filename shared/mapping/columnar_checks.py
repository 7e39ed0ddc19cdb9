"""The mapper's fast identifier checks over whole Arrow string columns: each marks a subset of what
normalize.plain_email and normalize.quick_e164 accept (rows it leaves out are checked row by row)."""

from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shared.mapping.normalize import SPECIAL_USE_TLDS, possible_lengths


def _byte_class(chars: bytes) -> np.ndarray:
    table = np.zeros(256, dtype=bool)
    table[np.frombuffer(chars, dtype=np.uint8)] = True
    return table


_DIGITS = b"0123456789"
_NOT_DIGIT = ~_byte_class(_DIGITS)
_PLUS, _HYPHEN, _AT = ord("+"), ord("-"), ord("@")
_ONE, _63 = np.uint64(1), np.uint64(63)


def _last_words(data: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 16 bytes before each end position (zeros before the data) as two little-endian words,
    each from two aligned words shifted together (a gather of 8-byte windows copies byte by byte,
    6x slower). Shifted left in two steps: a shift by 64 (an aligned position) is not defined."""
    padded = np.zeros(-(-(16 + len(data) + 8) // 8) * 8, dtype=np.uint8)
    padded[16 : 16 + len(data)] = data  # room before the first row
    aligned = padded.view("<u8")
    index = (ends >> 3).astype(np.int64)  # in the padded bytes, the 16 before an end start at its position
    right = ((ends & 7) << 3).astype(np.uint64)
    left = _63 - right
    low, middle, high = aligned[index], aligned[index + 1], aligned[index + 2]
    return (low >> right) | ((middle << left) << _ONE), (middle >> right) | ((high << left) << _ONE)


# Per calling code size, bit n set at [code] when a national number of n digits is possible after
# it (code 1 is checked by its own NANP shape); filled in as codes are first seen.
_CODE_LENGTHS = {size: np.zeros(10**size, dtype=np.int64) for size in (1, 2, 3)}
_CODES_SEEN = {size: np.zeros(10**size, dtype=bool) for size in (1, 2, 3)}
_codes_lock = threading.Lock()


def _lengths_after(size: int, codes: np.ndarray) -> np.ndarray:
    """The length bits of each calling code of `size` digits."""
    table, seen = _CODE_LENGTHS[size], _CODES_SEEN[size]
    new = np.unique(codes[~seen[codes]])
    if len(new):
        with _codes_lock:
            for code in new.tolist():
                lengths = possible_lengths(str(code)) if code != 1 and len(str(code)) == size else None
                table[code] = sum(1 << n for n in lengths or ())
                seen[code] = True
    return table[codes]


class _Column:
    """A string column's bytes and where each row starts and ends in them."""

    def __init__(self, values: pa.Array) -> None:
        offsets = np.frombuffer(values.buffers()[1], dtype=np.int32, count=len(values) + 1, offset=4 * values.offset)
        self.starts, self.ends = offsets[:-1].astype(np.int64), offsets[1:].astype(np.int64)
        data = values.buffers()[2]
        self.data = np.frombuffer(data, dtype=np.uint8) if data is not None and data.size else np.zeros(1, np.uint8)
        self.lengths = self.ends - self.starts

    def byte(self, at: np.ndarray) -> np.ndarray:
        """The byte at each position (0 past the data, for rows where it does not matter)."""
        return self.data[np.minimum(at, len(self.data) - 1)]

    def rows_of(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The positions that lie in a row (an array may be a slice of its data), and their rows."""
        if not len(self.starts):
            return positions[:0], positions[:0]
        positions = positions[(positions >= self.starts[0]) & (positions < self.ends[-1])]
        return positions, np.searchsorted(self.starts, positions, side="right") - 1

    def holds_pair(self, byte: int) -> np.ndarray:
        """Rows with this byte twice in a row (one numpy pass over the data; rare hits placed after)."""
        data = self.data
        hits = np.flatnonzero((data[:-1] == byte) & (data[1:] == byte))
        found = np.zeros(len(self.starts), dtype=bool)
        if len(hits):
            hits, rows = self.rows_of(hits)
            found[rows[hits + 1 < self.ends[rows]]] = True  # not a pair across two rows
        return found

    def ends_with_any(self, suffixes: _Suffixes) -> np.ndarray:
        """Rows ending with one of the suffixes: each row's last 16 bytes as two words, masked and compared."""
        first, last = _last_words(self.data, self.ends)
        found = np.zeros(len(self.starts), dtype=bool)
        for size, masks, patterns in suffixes:
            match = (last & masks[1]) == patterns[1]
            if size > 8:
                match &= (first & masks[0]) == patterns[0]
            found |= match & (self.lengths >= size)
        return found

    def count(self, flags: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """How many flagged bytes (flags: one per byte of data) lie in [starts, ends) of each row."""
        totals = np.zeros(len(flags) + 1, dtype=np.int32)  # int32: numpy's int64 cumsum of bools is 8× slower
        np.cumsum(flags, dtype=np.int32, out=totals[1:])
        return totals[np.clip(ends, 0, len(flags))] - totals[np.clip(starts, 0, len(flags))]


def fast_e164(values: pa.Array) -> np.ndarray:
    """Rows already in E.164 form with a real calling code and a possible length for it."""
    column = _Column(values)
    starts, lengths = column.starts, column.lengths
    ok = (lengths >= 8) & (lengths <= 16) & (column.byte(starts) == _PLUS)
    ok &= column.count(_NOT_DIGIT[column.data], starts, column.ends) == 1  # the "+" only
    digits = [column.byte(starts + i).astype(np.int64) - 48 for i in (1, 2, 3)]
    ok &= digits[0] >= 1
    nanp = (digits[0] == 1) & (lengths == 12) & (digits[1] >= 2) & (column.byte(starts + 5) >= ord("2"))
    code = np.zeros(len(lengths), dtype=np.int64)
    possible = np.zeros(len(lengths), dtype=np.int64)
    for size in (1, 2, 3):
        code = code * 10 + np.clip(digits[size - 1], 0, 9)
        national = np.clip(lengths - 1 - size, 0, 62)
        possible |= (_lengths_after(size, code) >> national) & 1
    return ok & np.where(digits[0] == 1, nanp, possible.astype(bool))


def fast_email(values: pa.Array) -> np.ndarray:
    """Rows (lowercased, trimmed) holding an everyday address: dot-atom local part of at most 64
    characters, a domain of at most 63 characters in labels of letters, digits and inner hyphens,
    a top-level domain of letters that is not a special-use one, no "--" anywhere. Arrow's regular
    expression (RE2) checks the shape outside the GIL, about 5× faster than the same checks in numpy;
    the rest are a few numpy passes over the bytes (Arrow's substring kernels cost ~130 ns a row)."""
    ok = _np(pc.match_substring_regex(values, _EVERYDAY_EMAIL))
    column = _Column(values)
    ok &= ~column.holds_pair(_HYPHEN)
    ok &= ~column.ends_with_any(_SPECIAL_USE_ENDINGS)
    # A row of the everyday shape has one "@": its position, and the lengths either side of it.
    signs, rows = column.rows_of(np.flatnonzero(column.data == _AT))
    at = np.zeros(len(column.starts), dtype=np.int64)
    at[rows] = signs - column.starts[rows]
    return ok & (at <= 64) & (column.lengths - at - 1 <= 63)


def _np(values: pa.Array) -> np.ndarray:
    return values.to_numpy(zero_copy_only=False)


_ATOM = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[a-z0-9]+(?:-[a-z0-9]+)*"
_EVERYDAY_EMAIL = rf"^{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*\.[a-z]{{2,63}}$"
_Suffixes = list[tuple[int, np.ndarray, np.ndarray]]


def _suffixes(endings: list[bytes]) -> _Suffixes:
    """Each ending (at most 16 bytes) as its size, and the masks and bytes of the two words that end a row."""
    found = []
    for ending in endings:
        masks, patterns = np.zeros(16, dtype=np.uint8), np.zeros(16, dtype=np.uint8)
        masks[16 - len(ending) :] = 0xFF
        patterns[16 - len(ending) :] = np.frombuffer(ending, dtype=np.uint8)
        found.append((len(ending), masks.view("<u8"), patterns.view("<u8")))
    return found


_SPECIAL_USE_ENDINGS = _suffixes([f".{tld}".encode() for tld in sorted(SPECIAL_USE_TLDS)])
