"""Turns profiles into bulk-import request bodies within Klaviyo's count and size limits."""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

import orjson

from shared.klaviyo import MAX_JOB_BYTES, MAX_PROFILE_BYTES, MAX_PROFILES_PER_JOB


def _envelope(list_id: str) -> tuple[bytes, bytes]:
    head = b'{"data":{"type":"profile-bulk-import-job","attributes":{"profiles":{"data":['
    tail = b']}},"relationships":{"lists":{"data":[' + orjson.dumps({"type": "list", "id": list_id}) + b"]}}}}"
    return head, tail


def serialize_profile(attributes: dict[str, object]) -> bytes:
    return orjson.dumps({"type": "profile", "attributes": attributes})


@dataclass
class Batch:
    """Profiles of one import job, with the input rows they came from (for error reports)."""

    profiles: list[bytes] = field(default_factory=list)
    keys: list[int] = field(default_factory=list)
    rows: array = field(default_factory=lambda: array("q"))  # (part index << 40) | row number
    size: int = 0

    def __len__(self) -> int:
        return len(self.profiles)

    def add(self, profile: bytes, key: int, row: int) -> None:
        self.profiles.append(profile)
        self.keys.append(key)
        self.rows.append(row)
        self.size += len(profile) + 1

    def subset(self, indices: list[int]) -> Batch:
        out = Batch()
        for i in indices:
            out.add(self.profiles[i], self.keys[i], self.rows[i])
        return out

    def body(self, list_id: str) -> bytes:
        head, tail = _envelope(list_id)
        return head + b",".join(self.profiles) + tail


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
        if len(self.current) >= self.max_profiles or self.current.size + len(profile) + 1 > self._room:
            full, self.current = self.current, Batch()
        self.current.add(profile, key, row)
        return full

    def flush(self) -> Batch | None:
        full, self.current = self.current, Batch()
        return full if len(full) else None


def too_large(profile: bytes) -> bool:
    return len(profile) > MAX_PROFILE_BYTES
