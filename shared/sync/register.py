"""Mirror mode's register of the profiles an export put on its list: per profile the fingerprint and the
text of its identifier (email, else phone, else "x:" + external id), so that a profile that leaves the
segment can be looked up on the list by that identifier and removed, however the run that sent it
ended.

Two kinds of files sit beside the sync state:
- `identifiers.arrow`, the register: an Arrow IPC file (columns `id`, `text`), read a record batch at a
  time, rewritten whole when a run ends;
- `sending-<run>-<n>.log`, one per invocation of a run: before a chunk's profiles can be sent, their
  identifiers are appended to it (each append an 8-byte length and an Arrow IPC stream). A run that
  ends folds every log it finds into the register and deletes them; a run that was killed leaves its
  log for the next run to fold in. So every profile ever sent is in the register or in a log.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from shared.sync.state import MAX_APPEND_BYTES, SyncStateStore

REGISTER_NAME = "identifiers.arrow"
LOG_PREFIX = "sending-"
SCHEMA = pa.schema([("id", pa.int64()), ("text", pa.string())])
_LENGTH = struct.Struct("<Q")
NO_IDS = np.zeros(0, dtype=np.int64)


class SendingLog:
    """This invocation's log of the identifiers it is about to send (one per SyncRun, never reopened:
    an append cut short by a kill only ever ends a log)."""

    def __init__(self, store: SyncStateStore, run_id: str) -> None:
        self.store = store
        self.name = f"{LOG_PREFIX}{run_id}-{uuid.uuid4().hex[:8]}.log"

    def append(self, ids: np.ndarray, texts: pa.Array) -> None:
        """Records profiles before they are sent: returns once the store holds them."""
        if not len(ids):
            return
        table = pa.table({"id": pa.array(ids, pa.int64()), "text": texts.cast(pa.string())}, schema=SCHEMA)
        pieces = max(1, -(-table.nbytes // (MAX_APPEND_BYTES // 2)))
        step = -(-len(table) // pieces)
        for start in range(0, len(table), step):
            self.store.append(self.name, _framed(table.slice(start, step)))


def _framed(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, SCHEMA) as writer:
        writer.write_table(table)
    data = sink.getvalue().to_pybytes()
    return _LENGTH.pack(len(data)) + data


def _log_batches(path: Path) -> Iterator[pa.RecordBatch]:
    """The record batches of a log, a frame at a time; a frame cut short (a kill mid-append) ends it."""
    with open(path, "rb") as f:
        while len(head := f.read(_LENGTH.size)) == _LENGTH.size:
            data = f.read(_LENGTH.unpack(head)[0])
            if len(data) < _LENGTH.unpack(head)[0]:
                return
            yield from pa.ipc.open_stream(data)


def _register_batches(path: Path) -> Iterator[pa.RecordBatch]:
    with pa.OSFile(str(path)) as source:
        reader = pa.ipc.open_file(source)
        for index in range(reader.num_record_batches):
            yield reader.get_batch(index)


class Leavers(NamedTuple):
    """Profiles of the register and the logs that are not in the segment, each once."""

    ids: np.ndarray
    texts: list[str]
    registered: int  # how many distinct profiles the register and the logs hold


class Register:
    """The register and the logs beside one sync state."""

    def __init__(self, store: SyncStateStore) -> None:
        self.store = store

    def logs(self) -> list[str]:
        return self.store.names(LOG_PREFIX)

    def _batches(self, logs: list[str]) -> Iterator[pa.RecordBatch]:
        """Every record batch of the register, then of each log."""
        with self.store.fetch(REGISTER_NAME) as path:
            if path is not None:
                yield from _register_batches(path)
        for name in logs:
            with self.store.fetch(name) as path:
                if path is not None:
                    yield from _log_batches(path)

    def ids(self) -> np.ndarray:
        """Every identifier fingerprint of the register and the logs, sorted, each once."""
        found = [batch.column(0).to_numpy() for batch in self._batches(self.logs())]
        return np.unique(np.concatenate(found)) if found else NO_IDS

    def leavers(self, segment: np.ndarray) -> Leavers:
        """The profiles of the register and the logs not in `segment` (sorted identifier fingerprints)."""
        ids: list[np.ndarray] = []
        texts: list[str] = []
        every: list[np.ndarray] = []
        for batch in self._batches(self.logs()):
            batch_ids = batch.column(0).to_numpy()
            every.append(batch_ids)
            gone = ~isin_sorted(batch_ids, segment)
            if gone.any():
                ids.append(batch_ids[gone])
                texts += batch.column(1).filter(pa.array(gone)).to_pylist()
        if not ids:
            return Leavers(NO_IDS, [], len(np.unique(np.concatenate(every))) if every else 0)
        leaving = np.concatenate(ids)
        _, first = np.unique(leaving, return_index=True)
        first.sort()
        registered = len(np.unique(np.concatenate(every)))
        return Leavers(leaving[first], [texts[i] for i in first.tolist()], registered)

    def fold(self, dropped: np.ndarray) -> list[str]:
        """Rewrites the register as the register and every log, each profile once, without the
        `dropped` ones (sorted fingerprints: taken off the list, or found not on it); returns the
        logs folded in, to be deleted once the state is saved too."""
        logs = self.logs()
        every = [batch.column(0).to_numpy() for batch in self._batches(logs)]
        if not logs and not len(dropped):
            return logs
        ids = np.concatenate(every) if every else NO_IDS
        keep = np.zeros(len(ids), dtype=bool)
        keep[np.unique(ids, return_index=True)[1]] = True
        keep &= ~isin_sorted(ids, dropped)
        del ids
        with (
            self.store.replace(REGISTER_NAME) as target,
            pa.OSFile(str(target), "wb") as sink,
            pa.ipc.new_file(sink, SCHEMA) as writer,
        ):
            start = 0
            for batch in self._batches(logs):
                kept = keep[start : start + len(batch)]
                start += len(batch)
                if kept.any():
                    writer.write_batch(batch.filter(pa.array(kept)))
        return logs

    def delete(self, logs: list[str]) -> None:
        for name in logs:
            self.store.delete(name)


def isin_sorted(values: np.ndarray, sorted_values: np.ndarray) -> np.ndarray:
    """np.isin for a sorted, unique `sorted_values` (a binary search per value)."""
    if not len(sorted_values):
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_values, values), len(sorted_values) - 1)
    return sorted_values[at] == values
