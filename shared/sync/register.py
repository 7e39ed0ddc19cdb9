"""Mirror mode's register of the profiles an export put on its list: per profile the fingerprint and the
text of its identifier (email, else phone, else "x:" + external id), so that a profile that leaves the
segment can be looked up on the list by that identifier and removed, however the run that sent it
ended.

Two kinds of files sit beside the sync state:
- `identifiers.arrow`, the register: an Arrow IPC file (columns `id`, `text`), read a record batch at a
  time, rewritten whole when a run ends;
- `sending-<run>.<n>.log`, one per invocation of a run: before a chunk's profiles can be sent, their
  identifiers are appended to it (each append an 8-byte length and an Arrow IPC stream). A run that
  ends folds every log it finds into the register and deletes them; a run that was killed leaves its
  log for the next run to fold in. So every profile ever sent is in the register or in a log.
"""

from __future__ import annotations

import contextlib
import struct
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from shared.sync.state import MAX_APPEND_BYTES, Int64Blocks, SyncStateStore, isin_sorted

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
        self.name = f"{LOG_PREFIX}{run_id}.{uuid.uuid4().hex[:8]}.log"

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

    @contextlib.contextmanager
    def _fetched(self, logs: list[str]) -> Iterator[Callable[[], Iterator[pa.RecordBatch]]]:
        """The register and the logs, each fetched from the store once while the context lasts: a
        function giving every record batch of the register, then of each log, as often as called."""
        with contextlib.ExitStack() as stack:
            register = stack.enter_context(self.store.fetch(REGISTER_NAME))
            paths = [path for name in logs if (path := stack.enter_context(self.store.fetch(name))) is not None]

            def batches() -> Iterator[pa.RecordBatch]:
                if register is not None:
                    yield from _register_batches(register)
                for path in paths:
                    yield from _log_batches(path)

            yield batches

    def _batches(self, logs: list[str]) -> Iterator[pa.RecordBatch]:
        """Every record batch of the register, then of each log."""
        with self._fetched(logs) as batches:
            yield from batches()

    def ids(self, run_id: str) -> np.ndarray:
        """Every identifier fingerprint of the register and the logs, sorted, each once; not those of
        run `run_id`'s own logs, so that every invocation of a run filters its profiles alike."""
        own = f"{LOG_PREFIX}{run_id}."
        return sorted_unique(_every_id(self._batches([name for name in self.logs() if not name.startswith(own)])))

    def leavers(self, segment: np.ndarray) -> Leavers:
        """The profiles of the register and the logs not in `segment` (sorted identifier fingerprints)."""
        ids: list[np.ndarray] = []
        texts: list[str] = []
        every = Int64Blocks()
        for batch in self._batches(self.logs()):
            batch_ids = batch.column(0).to_numpy()
            every.extend(batch_ids)
            gone = ~isin_sorted(batch_ids, segment)
            if gone.any():
                ids.append(batch_ids[gone])
                texts += batch.column(1).filter(pa.array(gone)).to_pylist()
        registered = count_distinct(every.take())
        if not ids:
            return Leavers(NO_IDS, [], registered)
        leaving = np.concatenate(ids)
        first = first_of_each(leaving)
        return Leavers(leaving[first], [texts[i] for i in np.flatnonzero(first).tolist()], registered)

    def fold(self, dropped: np.ndarray) -> list[str]:
        """Rewrites the register as the register and every log, each profile once, without the
        `dropped` ones (sorted fingerprints: taken off the list, or found not on it); returns the
        logs folded in, to be deleted once the state is saved too."""
        logs = self.logs()
        if not logs and not len(dropped):
            return logs
        with self._fetched(logs) as batches:  # read twice, fetched once
            ids = _every_id(batches())
            keep = first_of_each(ids) & ~isin_sorted(ids, dropped)
            del ids
            with (
                self.store.replace(REGISTER_NAME) as target,
                pa.OSFile(str(target), "wb") as sink,
                pa.ipc.new_file(sink, SCHEMA) as writer,
            ):
                start = 0
                for batch in batches():
                    kept = keep[start : start + len(batch)]
                    start += len(batch)
                    if kept.any():
                        writer.write_batch(batch.filter(pa.array(kept)))
        return logs

    def delete(self, logs: list[str]) -> None:
        for name in logs:
            self.store.delete(name)


def _every_id(batches: Iterable[pa.RecordBatch]) -> np.ndarray:
    """The identifier fingerprints of `batches`, in their order (copied, so that no record batch,
    texts and all, stays in memory for them)."""
    found = Int64Blocks()
    for batch in batches:
        found.extend(batch.column(0).to_numpy())
    return found.take()


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """The values sorted, each once; sorts `values` itself (np.unique's hash table is several times
    slower on int64, and a copy is 8 bytes a profile more at the run's peak)."""
    values.sort()
    if len(values) < 2:
        return values
    repeated = values[1:] == values[:-1]
    if not repeated.any():  # a run's segment is deduplicated already: no copy
        return values
    first = np.ones(len(values), dtype=bool)
    first[1:] = ~repeated
    return values[first]


def count_distinct(values: np.ndarray) -> int:
    """How many distinct values there are; sorts `values` itself."""
    values.sort()
    return int(np.count_nonzero(values[1:] != values[:-1])) + 1 if len(values) else 0


def first_of_each(values: np.ndarray) -> np.ndarray:
    """A mask of the first occurrence of each value. Values seldom repeat (a profile sent again by a
    resumed run, or changed since the register got it), so only the repeated ones are ordered."""
    ordered = np.sort(values)
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    del ordered
    mask = np.ones(len(values), dtype=bool)
    if not len(repeated):
        return mask
    at = np.flatnonzero(isin_sorted(values, np.unique(repeated)))
    order = np.argsort(values[at], kind="stable")
    ordered = values[at][order]
    later = np.zeros(len(at), dtype=bool)
    later[1:] = ordered[1:] == ordered[:-1]
    mask[at[order[later]]] = False
    return mask
