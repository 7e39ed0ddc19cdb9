"""The mapper's fast identifier checks over whole Arrow string columns, in numpy: each marks a
subset of what mapping._plain_email and mapping._quick_e164 accept (rows it leaves out are checked
row by row). About 10× cheaper than Arrow's regular expressions."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from shared.mapping import _LENGTHS, _SPECIAL_USE_TLDS


def _byte_class(chars: bytes) -> np.ndarray:
    table = np.zeros(256, dtype=bool)
    table[np.frombuffer(chars, dtype=np.uint8)] = True
    return table


_DIGITS = b"0123456789"
_LETTERS = b"abcdefghijklmnopqrstuvwxyz"
_ALNUM = _byte_class(_LETTERS + _DIGITS)
_LOCAL = _byte_class(_LETTERS + _DIGITS + b"!#$%&'*+/=?^_`{|}~.-")
_DOMAIN = _byte_class(_LETTERS + _DIGITS + b".-")
_NOT_LETTER = ~_byte_class(_LETTERS)
_NOT_DIGIT = ~_byte_class(_DIGITS)
_DOT, _HYPHEN, _AT, _PLUS = (ord(c) for c in ".-@+")


def _tld_code(tld: bytes) -> int:
    return sum((byte - 96) * 27**i for i, byte in enumerate(tld))


_SPECIAL_TLD_CODES = np.array(sorted(_tld_code(t.encode()) for t in _SPECIAL_USE_TLDS), dtype=np.int64)
_LONGEST_SPECIAL_TLD = max(map(len, _SPECIAL_USE_TLDS))


def _lengths_table(size: int) -> np.ndarray:
    """Bit n set at [code] when a national number of n digits is possible after that calling code
    of `size` digits (code 1 is checked by its own NANP shape)."""
    table = np.zeros(10**size, dtype=np.int64)
    for code, lengths in _LENGTHS.items():
        if len(code) == size and code != "1":
            table[int(code)] = sum(1 << n for n in lengths)
    return table


_CODE_LENGTHS = {size: _lengths_table(size) for size in (1, 2, 3)}


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

    def count(self, flags: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """How many flagged bytes (flags: one per byte of data) lie in [starts, ends) of each row."""
        totals = np.zeros(len(flags) + 1, dtype=np.int32)  # int32: numpy's int64 cumsum of bools is 8× slower
        np.cumsum(flags, dtype=np.int32, out=totals[1:])
        return totals[np.clip(ends, 0, len(flags))] - totals[np.clip(starts, 0, len(flags))]

    def pairs(self, first: int, second: int) -> np.ndarray:
        """Flags (one per byte) where `first` is followed by `second`."""
        flags = np.zeros(len(self.data), dtype=bool)
        flags[:-1] = (self.data[:-1] == first) & (self.data[1:] == second)
        return flags


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
        possible |= (_CODE_LENGTHS[size][code] >> national) & 1
    return ok & np.where(digits[0] == 1, nanp, possible.astype(bool))


def fast_email(values: pa.Array) -> np.ndarray:
    """Rows (lowercased, trimmed) holding an everyday address: dot-atom local part of at most 64
    characters, a domain of at most 63 characters in labels of letters, digits and inner hyphens,
    a top-level domain of letters that is not a special-use one, no ".." or "--" anywhere."""
    column = _Column(values)
    data, starts, ends, lengths = column.data, column.starts, column.ends, column.lengths
    is_at = data == _AT
    ok = (lengths >= 5) & (lengths <= 254) & (column.count(is_at, starts, ends) == 1)
    at_positions = np.flatnonzero(is_at)
    before = column.count(is_at, np.zeros_like(starts), starts)  # "@" signs before each row
    at = np.where(ok, at_positions[np.clip(before, 0, max(len(at_positions) - 1, 0))] if len(at_positions) else 0, 0)
    ok &= (at - starts >= 1) & (at - starts <= 64) & (ends - at - 1 <= 63)
    ok &= column.count(~_LOCAL[data], starts, at) == 0
    ok &= column.count(~_DOMAIN[data], at + 1, ends) == 0
    ok &= column.count(column.pairs(_DOT, _DOT) | column.pairs(_HYPHEN, _HYPHEN), starts, ends - 1) == 0
    ok &= (column.byte(starts) != _DOT) & (column.byte(at - 1) != _DOT) & _ALNUM[column.byte(at + 1)]
    ok &= column.count(column.pairs(_DOT, _HYPHEN) | column.pairs(_HYPHEN, _DOT), at + 1, ends - 1) == 0
    dots = np.flatnonzero(data == _DOT)
    last = np.searchsorted(dots, ends) - 1
    last_dot = np.where(last >= 0, dots[np.clip(last, 0, max(len(dots) - 1, 0))] if len(dots) else -1, -1)
    tld = ends - last_dot - 1
    ok &= (last_dot > at + 1) & (tld >= 2) & (tld <= 63)
    ok &= column.count(_NOT_LETTER[data], last_dot + 1, ends) == 0
    candidates = np.flatnonzero(ok & (tld <= _LONGEST_SPECIAL_TLD))
    if len(candidates):
        codes = np.zeros(len(candidates), dtype=np.int64)
        for i in range(_LONGEST_SPECIAL_TLD):
            inside = i < tld[candidates]
            letter = column.byte(last_dot[candidates] + 1 + i).astype(np.int64) - 96
            codes += np.where(inside, letter * 27**i, 0)
        ok[candidates] &= ~np.isin(codes, _SPECIAL_TLD_CODES)
    return ok
