"""Turns profiles into bulk-import request bodies within Klaviyo's count and size limits."""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

import numpy as np
import orjson
import pyarrow as pa

from shared.klaviyo import MAX_JOB_BYTES, MAX_PROFILES_PER_JOB


def _envelope(list_id: str) -> tuple[bytes, bytes]:
    head = b'{"data":{"type":"profile-bulk-import-job","attributes":{"profiles":{"data":['
    tail = b']}},"relationships":{"lists":{"data":[' + orjson.dumps({"type": "list", "id": list_id}) + b"]}}}}"
    return head, tail


@dataclass
class Batch:
    """Profiles of one import job, each followed by a comma in one buffer, with the input rows they
    came from (for error reports). One buffer, not a bytes object per profile: orjson's small outputs
    each hold a 4 KB allocation, and a million of them held until their jobs finish is 4 GB."""

    data: bytearray = field(default_factory=bytearray)
    ends: array = field(default_factory=lambda: array("q"))  # where each profile ends in data (at its comma)
    keys: array = field(default_factory=lambda: array("q"))  # dedupe keys (see mapping.identifier_key)
    rows: array = field(default_factory=lambda: array("q"))  # (part index << 40) | row number

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def size(self) -> int:
        return len(self.data)

    def add(self, profile: bytes, key: int, row: int) -> None:
        self.data += profile
        self.ends.append(len(self.data))
        self.data += b","
        self.keys.append(key)
        self.rows.append(row)

    def extend(self, profiles: memoryview, ends: np.ndarray, keys: np.ndarray, rows: np.ndarray) -> None:
        """Adds profiles already laid out as this batch holds them (`ends` relative to `profiles`)."""
        self.ends.frombytes((ends + len(self.data)).astype(np.int64).tobytes())
        self.data += profiles
        self.keys.frombytes(keys.astype(np.int64).tobytes())
        self.rows.frombytes(rows.astype(np.int64).tobytes())

    def profile(self, index: int) -> bytes:
        start = self.ends[index - 1] + 1 if index else 0
        return bytes(self.data[start : self.ends[index]])

    def subset(self, indices: list[int]) -> Batch:
        out = Batch()
        for i in indices:
            out.add(self.profile(i), self.keys[i], self.rows[i])
        return out

    def body(self, list_id: str) -> bytes:
        head, tail = _envelope(list_id)
        return b"".join((head, memoryview(self.data)[:-1], tail))

    def release(self) -> None:
        """Once Klaviyo took the job, only the keys and rows are still needed (to name failed rows)."""
        self.data, self.ends = bytearray(), array("q")


class Batcher:
    """Fills a batch until the next profile would pass the count or the request-size limit."""

    def __init__(self, list_id: str, max_profiles: int = MAX_PROFILES_PER_JOB, max_bytes: int = MAX_JOB_BYTES) -> None:
        head, tail = _envelope(list_id)
        self.max_profiles = max_profiles
        self._room = max_bytes - len(head) - len(tail)
        self.current = Batch()

    def add(self, profile: bytes, key: int, row: int) -> Batch | None:
        """Adds a profile; returns the batch it completed, if this profile did not fit."""
        full: Batch | None = None
        if len(self.current) >= self.max_profiles or len(self.current.data) + len(profile) > self._room:
            full, self.current = self.current, Batch()
        self.current.add(profile, key, row)
        return full

    def add_many(self, profiles: pa.BinaryArray, keys: np.ndarray, rows: np.ndarray) -> list[Batch]:
        """Adds profiles (each serialized and followed by a comma) a batch at a time; returns the
        batches completed, in the same cuts as one `add` a profile would make."""
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
            sizes = offsets[start + 1 : start + 1 + room] - offsets[start] + len(batch.data)
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
            )
            start = end
        return full

    def flush(self) -> Batch | None:
        full, self.current = self.current, Batch()
        return full if len(full) else None
