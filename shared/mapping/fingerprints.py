"""Stable 64-bit fingerprints of strings, computed for a whole Arrow array at once (no Python per
value): the dedupe keys of identifiers, and the sync state's identifier and profile fingerprints.
The same text gets the same fingerprint in every process (Python's hash() is salted per process)."""

from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_P = np.uint64(0x100000001B3)  # odd, so it has an inverse modulo 2**64
_P_INVERSE = np.uint64(pow(int(_P), -1, 1 << 64))
_ZERO = pa.scalar(b"\0", pa.binary())
_EMPTY = pa.scalar(b"", pa.binary())
_powers_lock = threading.Lock()
_powers = np.ones(1, dtype=np.uint64)
_inverse_powers = np.ones(1, dtype=np.uint64)


def _power_tables(size: int) -> tuple[np.ndarray, np.ndarray]:
    """P**i and P**-i modulo 2**64 for i < size (grown as needed, shared by threads)."""
    global _powers, _inverse_powers
    with _powers_lock:
        if len(_powers) < size:
            grown = max(size, 2 * len(_powers))
            one = np.ones(1, dtype=np.uint64)
            _powers = np.concatenate([one, np.cumprod(np.full(grown - 1, _P, dtype=np.uint64))])
            _inverse_powers = np.concatenate([one, np.cumprod(np.full(grown - 1, _P_INVERSE, dtype=np.uint64))])
        return _powers, _inverse_powers


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: spreads every input bit over the whole word."""
    values = values ^ (values >> np.uint64(30))
    values *= np.uint64(0xBF58476D1CE4E5B9)
    values ^= values >> np.uint64(27)
    values *= np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))


def fingerprints(values: pa.Array) -> np.ndarray:
    """A stable 64-bit hash (as int64) of each value of a binary or string array, all at once (no
    Python per value). Arrow pads every value with zero bytes to a multiple of 8, so the values are
    whole 64-bit words; each is a polynomial in those words modulo 2**64 (prefix sums, one division
    by a power), mixed with its length. Not for adversarial input; enough to tell changed profiles."""
    if not len(values):
        return np.zeros(0, dtype=np.int64)
    values = values.cast(pa.binary())
    lengths = pc.binary_length(values)
    padding = pc.binary_repeat(_ZERO, pc.bit_wise_and(pc.negate(lengths), pa.scalar(7, pa.int32())))
    padded = pc.binary_join_element_wise(values, padding, _EMPTY)
    offsets = np.frombuffer(padded.buffers()[1], dtype=np.int32, count=len(padded) + 1, offset=4 * padded.offset)
    base = int(offsets[0])
    count = (int(offsets[-1]) - base) // 8
    words = (
        np.frombuffer(padded.buffers()[2], dtype=np.uint64, count=count, offset=base)
        if count
        else np.zeros(0, dtype=np.uint64)
    )
    powers, inverse = _power_tables(count + 1)
    sums = np.zeros(count + 1, dtype=np.uint64)
    np.cumsum(words * powers[:count], out=sums[1:])
    begins, ends = (offsets[:-1] - base) // 8, (offsets[1:] - base) // 8
    sizes = lengths.to_numpy(zero_copy_only=False).astype(np.uint64)
    return _mix((sums[ends] - sums[begins]) * inverse[begins] + sizes * np.uint64(0x9E3779B97F4A7C15)).view(np.int64)


def text_fingerprints(texts: list[str]) -> np.ndarray:
    """fingerprints() of Python strings (for identifiers read back from Klaviyo)."""
    return fingerprints(pa.array(texts, pa.string()))
