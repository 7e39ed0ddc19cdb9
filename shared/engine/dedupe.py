"""Which identifiers a run has seen: about 12 bytes per distinct profile, checked a chunk at a time."""

from __future__ import annotations

import numpy as np

_EMPTY = 0
_MAX_LOAD = 0.7
_GROW_SLICE = 1 << 18


class SeenKeys:
    """An open-addressing hash set of 64-bit keys in one numpy array, probed for a whole chunk of
    keys at once (a Python set would cost ~70 bytes a key; this costs 8 / load factor)."""

    def __init__(self, expected: int = 0) -> None:
        capacity = 1 << 16
        while capacity * _MAX_LOAD < expected:
            capacity <<= 1
        self._table = np.zeros(capacity, dtype=np.int64)
        self.count = 0

    def add_chunk(self, keys: np.ndarray) -> np.ndarray:
        """Adds a chunk of keys; returns a mask that is True where a key is seen for the first time
        (its first occurrence in the chunk, and not in an earlier chunk)."""
        first = np.zeros(len(keys), dtype=bool)
        if not len(keys):
            return first
        keys = np.where(keys == _EMPTY, 1, keys)  # 0 marks an empty slot
        unique, positions = np.unique(keys, return_index=True)
        if (self.count + len(unique)) > _MAX_LOAD * len(self._table):
            self._grow(self.count + len(unique))
        fresh = self._insert(unique)
        first[positions[fresh]] = True
        self.count += int(fresh.sum())
        return first

    def reserve(self, expected: int) -> None:
        """Makes room for `expected` keys at once: growing by doubling re-inserts every key each
        time, and holds the old table and the new one together."""
        if expected > _MAX_LOAD * len(self._table):
            self._grow(expected)

    def _insert(self, keys: np.ndarray) -> np.ndarray:
        """Inserts distinct keys; True where a key was not there before."""
        table, mask = self._table, len(self._table) - 1
        fresh = np.zeros(len(keys), dtype=bool)
        slots = keys & mask
        pending = np.arange(len(keys))
        while len(pending):
            at = slots[pending]
            wanted = keys[pending]
            current = table[at]
            empty = current == _EMPTY
            # Several keys may aim at one empty slot: the last write wins, the others look again.
            table[at[empty]] = wanted[empty]
            won = empty & (table[at] == wanted)
            fresh[pending[won]] = True
            settled = won | (current == wanted)
            moving = ~settled & ~empty
            slots[pending[moving]] = (at[moving] + 1) & mask
            pending = pending[~settled]
        return fresh

    def _grow(self, needed: int) -> None:
        capacity = len(self._table) << 1
        while capacity * _MAX_LOAD < needed:
            capacity <<= 1
        old = self._table[self._table != _EMPTY]
        self._table = np.zeros(0, dtype=np.int64)  # let the old table go before the new one exists
        self._table = np.zeros(capacity, dtype=np.int64)
        # In slices, so the probing temporaries stay small next to the table itself.
        for start in range(0, len(old), _GROW_SLICE):
            self._insert(old[start : start + _GROW_SLICE])

    @property
    def nbytes(self) -> int:
        return self._table.nbytes
