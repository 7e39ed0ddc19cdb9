"""The chunk pipeline: reads and maps the segment a chunk at a time in its own threads, records the
rejected rows, drops duplicates, oversized profiles and (in a delta run) unchanged ones, and hands
on the batches the rest fill."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shared.engine.batching import ROW_BITS, Batch, Batcher, PartNames
from shared.engine.dedupe import SeenKeys
from shared.engine.report import RejectLine, RejectsFile
from shared.engine.spec import ExportSpec
from shared.engine.subscriber import ConsentValues, Subscriber
from shared.engine.tally import RunTally
from shared.klaviyo import MAX_PROFILE_BYTES
from shared.mapping import ChunkConsent, ColumnarMapper, ColumnsMapped, MappedRows, ProfileMapper
from shared.sources import RowChunk, SegmentSource, TableChunk
from shared.sync import SyncRun
from shared.telemetry import carry_run_context

# Chunks (about 10,000 rows each) read and mapped ahead while the current one is checked and sent.
_CHUNKS_AHEAD = 1
# Threads mapping chunks. A second one was measured no faster: the GIL leaves it little to do.
_MAPPERS = 1
_DUPLICATE = "same identifier as an earlier row; the first row was kept"

Chunk = RowChunk | TableChunk
# A chunk and its mapping as the mapping thread leaves it: a table's rows that the column kernels
# left out are still to be mapped (ColumnsMapped), on the run's thread.
_ChunkMapping = tuple[Chunk, MappedRows | ColumnsMapped]


class MappedChunk(NamedTuple):
    chunk: Chunk
    mapped: MappedRows


class Profiles(NamedTuple):
    """A chunk's profiles to send: serialized (each with a trailing comma), their dedupe keys and
    packed rows, and with a sync state their identifier and profile fingerprints."""

    bodies: pa.BinaryArray
    keys: np.ndarray
    rows: np.ndarray
    ids: np.ndarray | None = None
    prints: np.ndarray | None = None

    def slice(self, start: int, end: int | None) -> Profiles:
        ids = self.ids[start:end] if self.ids is not None else None
        prints = self.prints[start:end] if self.prints is not None else None
        return Profiles(self.bodies[start:end], self.keys[start:end], self.rows[start:end], ids, prints)


class ChunkPipeline:
    """Turns the segment's chunks into full batches, in order. `mapped_chunks` reads and maps them
    in their own threads; `batches` checks one on the calling thread (the run's) and returns the
    batches it filled."""

    def __init__(
        self,
        source: SegmentSource,
        spec: ExportSpec,
        parts: PartNames,
        tally: RunTally,
        rejects: RejectsFile,
        sync: SyncRun | None,
        flush_points: Iterable[int],
        subscriber: Subscriber | None = None,
    ) -> None:
        self.source, self.spec, self.parts = source, spec, parts
        self.subscriber = subscriber  # given the consent of each chunk's profiles to import
        self.tally, self.rejects, self.sync = tally, rejects, sync
        self.mapper = ProfileMapper(spec.mapping, contacts=subscriber is not None)
        self.columnar = ColumnarMapper(self.mapper)
        self.batcher = Batcher(spec.list_id)
        self.seen = SeenKeys()
        self.reserved = False  # whether `seen` has been given room for the whole segment yet
        # Packed rows after which the run this one resumes flushed its batcher early.
        self.flush_points = set(flush_points)

    def mapped_chunks(self) -> Iterator[MappedChunk]:
        """Each chunk with its mapping, in order. Chunks are read in one thread and mapped in another
        while this one dedupes and sends: Arrow and numpy release the GIL, so they share the cores.
        The rows a table's fast checks leave out are mapped here, on this thread, which would
        otherwise wait: the mapping thread goes on with the column kernels of the next chunk."""
        mapper, columnar = self.mapper, self.columnar
        initializer = carry_run_context(self.spec.thread_initializer)
        ready: queue.Queue[Future[_ChunkMapping] | None] = queue.Queue(_CHUNKS_AHEAD)
        stopping = threading.Event()

        def map_chunk(chunk: Chunk) -> _ChunkMapping:
            if isinstance(chunk, TableChunk):
                return chunk, columnar.map_columns(chunk.table, chunk.numbers)
            return chunk, mapper.map_records(chunk.columns, chunk.numbers, chunk.records)

        def read(mappers: ThreadPoolExecutor) -> None:
            try:
                for chunk in self.source.chunks(columns=self._columns()):
                    if stopping.is_set():
                        return
                    if isinstance(chunk, TableChunk):
                        ready.put(mappers.submit(map_chunk, chunk))
                    else:  # mapped row by row, all under the GIL: one more thread would only wait for it
                        mapped: Future[_ChunkMapping] = Future()
                        mapped.set_result(map_chunk(chunk))
                        ready.put(mapped)
            except BaseException as exc:
                failed: Future[_ChunkMapping] = Future()
                failed.set_exception(exc)
                ready.put(failed)
                return
            ready.put(None)

        with (
            ThreadPoolExecutor(_MAPPERS, thread_name_prefix="map", initializer=initializer) as mappers,
            ThreadPoolExecutor(1, thread_name_prefix="read", initializer=initializer) as reader,
        ):
            reading = reader.submit(read, mappers)
            try:
                while (future := ready.get()) is not None:
                    chunk, mapped = future.result()
                    yield MappedChunk(chunk, columnar.complete(mapped) if isinstance(mapped, ColumnsMapped) else mapped)
            finally:
                stopping.set()
                while not reading.done():  # a reader waiting on a full queue must see the stop
                    with contextlib.suppress(queue.Empty):
                        ready.get(timeout=0.05)

    def batches(self, mapped_chunk: MappedChunk) -> Iterator[Batch]:
        """Checks a mapped chunk and adds what is left to send to the batcher; yields each batch that
        fills, as it fills."""
        chunk, mapped = mapped_chunk
        if not self.reserved and isinstance(chunk, TableChunk):
            self.reserved = self._make_room(chunk)
        profiles = self._valid_new_profiles(chunk, mapped, self.parts.index[chunk.source])
        # A resumed run flushes early where the run it resumes did, so its batches are the same.
        flush_points = self.flush_points
        cuts = (np.flatnonzero(np.isin(profiles.rows, list(flush_points))) + 1).tolist() if flush_points else []
        start = 0
        for end in cuts:
            yield from self.batcher.add_many(*profiles.slice(start, end))
            if (early := self.batcher.flush()) is not None:
                yield early
            start = end
        yield from self.batcher.add_many(*profiles.slice(start, None))

    def flush(self) -> Batch | None:
        """The batch being filled, as it is (None if empty): the last one, or one cut short."""
        return self.batcher.flush()

    def _columns(self) -> list[str]:
        """The columns read: the mapped ones, and the consent columns when subscribing."""
        extra = self.subscriber.columns if self.subscriber is not None else []
        return list(dict.fromkeys(self.mapper.columns + extra))

    def _make_room(self, chunk: TableChunk) -> bool:
        """Makes room in the identifier set at once for about as many identifiers as the segment has
        rows in the parts of this first table's format, so the set need not grow by doubling (which
        re-inserts every key each time). The segment's rows are estimated from the rows per byte of
        this table. A compressed part's bytes make the estimate err low, never high. Returns True
        once done; an empty table gives no estimate, and the next table is asked instead."""
        if not chunk.table.num_rows:
            return False
        source = self.source
        fmt = source.format_of(next(part for part in source.parts if part.name == chunk.source))
        size = sum(part.size for part in source.parts if source.format_of(part) == fmt)
        self.seen.reserve(int(size * chunk.table.num_rows / chunk.size))
        return True

    def _valid_new_profiles(self, chunk: Chunk, mapped: MappedRows, part: int) -> Profiles:
        """Records a mapped chunk's rejected rows, drops duplicates (the first row wins) and, in a
        delta run, the profiles Klaviyo accepted before exactly as they are; returns what to send."""
        source = chunk.source
        self.tally.read(len(chunk.numbers) + len(chunk.errors))
        lines = [RejectLine(source, number, "", "rejected", "", reason) for number, reason in chunk.errors]
        lines += [
            RejectLine(source, number, rejection.masked, "rejected", rejection.field, rejection.reason)
            for number, rejection in mapped.rejections
        ]
        first = self.seen.add_chunk(mapped.keys)
        sizes = pc.binary_length(mapped.bodies).to_numpy() - 1  # without the comma
        keep = first & (sizes <= MAX_PROFILE_BYTES)
        dropped = np.flatnonzero(~keep)
        duplicates = 0
        for index, number, masked in zip(
            dropped.tolist(), mapped.numbers[dropped].tolist(), mapped.masked(dropped), strict=True
        ):
            if not first[index]:
                duplicates += 1
                lines.append(RejectLine(source, number, masked, "duplicate", "", _DUPLICATE))
            else:
                reason = f"profile is {sizes[index]:,} bytes; Klaviyo allows {MAX_PROFILE_BYTES:,}"
                lines.append(RejectLine(source, number, masked, "rejected", "", reason))
        if lines:
            self.tally.dropped(len(lines) - duplicates, duplicates)
            self.rejects.add_many(lines)
        rows = mapped.numbers[keep] | (part << ROW_BITS)
        kept = pa.array(keep)
        bodies, keys = mapped.bodies.filter(kept), mapped.keys[keep]
        subscriber = self.subscriber
        consent = self._read_consent(chunk, mapped, keep) if subscriber is not None else None
        if self.sync is None:
            if subscriber is not None and consent is not None:
                subscriber.queue(consent, rows, None)
            return Profiles(bodies, keys, rows)
        identifiers = mapped.identifiers.filter(kept) if mapped.identifiers is not None else None
        printed = subscriber.marked(bodies, consent) if subscriber is not None and consent is not None else bodies
        send, ids, prints = self.sync.changed(identifiers, printed)
        if subscriber is not None and consent is not None:  # only new and changed profiles are subscribed
            subscriber.queue(consent, rows, send)
        if send is None:
            return Profiles(bodies, keys, rows, ids, prints)
        return Profiles(bodies.filter(pa.array(send)), keys[send], rows[send], ids[send], prints[send])

    def _read_consent(self, chunk: Chunk, mapped: MappedRows, keep: np.ndarray) -> ChunkConsent:
        """The subscriber's reading of the consent of the chunk's profiles to import."""
        assert self.subscriber is not None
        numbers = mapped.numbers[keep]
        values = [consent_values(chunk, column, numbers) for column in self.subscriber.columns]
        kept_at, kept = np.flatnonzero(keep), pa.array(keep)
        emails, phones = (None if v is None else v.filter(kept) for v in (mapped.emails, mapped.phones))
        return self.subscriber.read(
            ConsentValues(chunk.source, values[0], values[1] if len(values) > 1 else None, emails, phones),
            numbers,
            lambda at: mapped.masked(kept_at[at]),
        )


def consent_values(chunk: Chunk, column: str, numbers: np.ndarray) -> pa.Array:
    """A column's values in the rows `numbers` of the chunk: taken from a table, else read from
    each record (row by row, as that path maps them)."""
    if isinstance(chunk, TableChunk):
        at = np.searchsorted(chunk.numbers, numbers)
        return chunk.table.column(column).take(pa.array(at)).combine_chunks()
    at = np.searchsorted(np.asarray(chunk.numbers, dtype=np.int64), numbers).tolist()
    if chunk.columns is not None:
        index = chunk.columns.index(column)
        return pa.array([chunk.records[i][index] for i in at], pa.string())
    return pa.array([_as_text(chunk.records[i].get(column)) for i in at], pa.string())


def _as_text(value: object) -> str:
    """A JSON Lines value as text: true/false, numbers written out, null empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
