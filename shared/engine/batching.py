"""Turns profiles into bulk-import request bodies within Klaviyo's count and size limits."""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

import numpy as np
import orjson
import pyarrow as pa

from shared.klaviyo import MAX_JOB_BYTES, MAX_PROFILES_PER_JOB

HEAD = b'{"data":{"type":"profile-bulk-import-job","attributes":{"profiles":{"data":['
# A packed row is (part index << ROW_BITS) | row number: one int64 names a row of any part of the segment.
ROW_BITS = 40


def _tail(list_id: str) -> bytes:
    return b']}},"relationships":{"lists":{"data":[' + orjson.dumps({"type": "list", "id": list_id}) + b"]}}}}"


@dataclass
class Batch:
    """Profiles of one import job, each followed by a comma in one buffer that starts as the request
    body does, with the input rows they came from (for error reports). One buffer, not a bytes
    object per profile: orjson's small outputs each hold a 4 KB allocation, and a million of them
    held until their jobs finish is 4 GB; and the body is that buffer, not a copy of it."""

    data: bytearray = field(default_factory=lambda: bytearray(HEAD))
    ends: array = field(default_factory=lambda: array("q"))  # where each profile ends in data (at its comma)
    keys: array = field(default_factory=lambda: array("q"))  # dedupe keys (see mapping.identifier_key)
    rows: array = field(default_factory=lambda: array("q"))  # packed rows (see ROW_BITS)
    # Filled only with a sync state, and empty otherwise: a job's batch is kept until the job is done.
    ids: array = field(default_factory=lambda: array("q"))  # identifier fingerprints
    fingerprints: array = field(default_factory=lambda: array("q"))  # profile fingerprints

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def size(self) -> int:
        """Bytes of the profiles and their commas."""
        return len(self.data) - len(HEAD)

    def add(self, profile: bytes, key: int, row: int, ident: int | None = None, fingerprint: int | None = None) -> None:
        self.data += profile
        self.ends.append(len(self.data))
        self.data += b","
        self.keys.append(key)
        self.rows.append(row)
        if ident is not None and fingerprint is not None:
            self.ids.append(ident)
            self.fingerprints.append(fingerprint)

    def extend(
        self,
        profiles: memoryview,
        ends: np.ndarray,
        keys: np.ndarray,
        rows: np.ndarray,
        ids: np.ndarray | None = None,
        fingerprints: np.ndarray | None = None,
    ) -> None:
        """Adds profiles already laid out as this batch holds them (`ends` relative to `profiles`)."""
        self.ends.frombytes((ends + len(self.data)).astype(np.int64).tobytes())
        self.data += profiles
        self.keys.frombytes(keys.astype(np.int64).tobytes())
        self.rows.frombytes(rows.astype(np.int64).tobytes())
        if ids is not None and fingerprints is not None:
            self.ids.frombytes(ids.astype(np.int64).tobytes())
            self.fingerprints.frombytes(fingerprints.astype(np.int64).tobytes())

    def profile(self, index: int) -> bytes:
        start = self.ends[index - 1] + 1 if index else len(HEAD)
        return bytes(self.data[start : self.ends[index]])

    def subset(self, indices: list[int]) -> Batch:
        out = Batch()
        tracked = len(self.ids) > 0
        for i in indices:
            ident, fingerprint = (self.ids[i], self.fingerprints[i]) if tracked else (None, None)
            out.add(self.profile(i), self.keys[i], self.rows[i], ident, fingerprint)
        return out

    def fingerprints_except(self, failed: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """The identifier and profile fingerprints of the batch's profiles but those at `failed`."""
        keep = np.ones(len(self), dtype=bool)
        keep[failed] = False
        ids = np.frombuffer(self.ids, dtype=np.int64)[keep]
        return ids, np.frombuffer(self.fingerprints, dtype=np.int64)[keep]

    def body(self, list_id: str) -> memoryview:
        """The request body: the buffer itself, its last comma replaced by the envelope's end (the
        batch takes no more profiles after this)."""
        tail = _tail(list_id)
        if not self.data.endswith(tail):
            self.data[-1:] = tail
        return memoryview(self.data)

    def release(self) -> None:
        """Once Klaviyo took the job, only the keys and rows are still needed (to name failed rows)."""
        self.data, self.ends = bytearray(HEAD), array("q")


class PartNames:
    """The segment's parts in order, by name: which part and row a packed row is."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.index = {name: i for i, name in enumerate(names)}

    def row_of(self, packed: int) -> tuple[str, int]:
        return self.names[packed >> ROW_BITS], packed & ((1 << ROW_BITS) - 1)


class Batcher:
    """Fills a batch until the next profile would pass the count or the request-size limit."""

    def __init__(self, list_id: str, max_profiles: int = MAX_PROFILES_PER_JOB, max_bytes: int = MAX_JOB_BYTES) -> None:
        self.max_profiles = max_profiles
        self._room = max_bytes - len(HEAD) - len(_tail(list_id))
        self.current = Batch()

    def add(self, profile: bytes, key: int, row: int) -> Batch | None:
        """Adds a profile; returns the batch it completed, if this profile did not fit."""
        full = self.add_many(pa.array([profile + b","], pa.binary()), np.array([key]), np.array([row]))
        return full[0] if full else None

    def add_many(
        self,
        profiles: pa.BinaryArray,
        keys: np.ndarray,
        rows: np.ndarray,
        ids: np.ndarray | None = None,
        fingerprints: np.ndarray | None = None,
    ) -> list[Batch]:
        """Adds profiles (each serialized and followed by a comma) a batch at a time; returns the
        batches completed: a batch closes when the next profile would pass the count or size limit."""
        offsets = np.frombuffer(
            profiles.buffers()[1], dtype=np.int32, count=len(profiles) + 1, offset=4 * profiles.offset
        )
        data = memoryview(profiles.buffers()[2] or b"")
        full: list[Batch] = []
        start, count = 0, len(profiles)
        while start < count:
            batch = self.current
            room = self.max_profiles - len(batch)
            # Bytes each next profile would bring the batch to, comma included; the last comma is dropped.
            sizes = offsets[start + 1 : start + 1 + room] - offsets[start] + batch.size
            fit = int(np.searchsorted(sizes, self._room + 1, side="right")) if room > 0 else 0
            if fit == 0 and not len(batch):
                fit = 1  # cannot happen with Klaviyo's limits (a profile is far smaller than a job)
            if fit == 0:
                full.append(batch)
                self.current = Batch()
                continue
            end = start + fit
            batch.extend(
                data[offsets[start] : offsets[end]],
                offsets[start + 1 : end + 1] - offsets[start] - 1,
                keys[start:end],
                rows[start:end],
                None if ids is None else ids[start:end],
                None if fingerprints is None else fingerprints[start:end],
            )
            start = end
        return full

    def flush(self) -> Batch | None:
        full, self.current = self.current, Batch()
        return full if len(full) else None
