"""The queue between the run's thread and the threads sending subscription calls: calls wait in
memory up to a bound, then in a spool file (Arrow IPC), so the run never waits for the calls (paced
at 750 a minute, they fall far behind a fast import) and memory stays bounded however far behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections import deque
from typing import IO, NamedTuple

import numpy as np
import pyarrow as pa

from shared.mapping import Subscribers

_SCHEMA = pa.schema(
    [("email", pa.string()), ("phone", pa.string()), ("consented_at", pa.string()), ("row", pa.int64())]
)


class Call(NamedTuple):
    """One subscription call's profiles, and the packed rows they came from (see batching.ROW_BITS)."""

    profiles: Subscribers
    rows: np.ndarray
    number: int = -1  # the group's number in the run (see subscriber._Progress)


class CallQueue:
    """First in, first out (memory before spool) for any number of threads; `close` ends `get`."""

    def __init__(self, held: int) -> None:
        self.held = held
        self._ready = threading.Condition()
        self._memory: deque[Call] = deque()
        self._spooled: deque[int] = deque()  # the numbers of the calls in the spool not read yet
        self._closed = False
        self._path: str | None = None
        self._out: IO[bytes] | None = None
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        self._reader: pa.ipc.RecordBatchStreamReader | None = None
        self._in: IO[bytes] | None = None

    def put(self, call: Call) -> None:
        with self._ready:
            if self._spooled or len(self._memory) >= self.held:
                self._spool(call)
            else:
                self._memory.append(call)
            self._ready.notify()

    def get(self) -> Call | None:
        """The next call, waiting for one; None once closed and empty."""
        with self._ready:
            while not self._memory and not self._spooled and not self._closed:
                self._ready.wait()
            if self._memory:
                return self._memory.popleft()
            if self._spooled:
                return self._unspool()._replace(number=self._spooled.popleft())
            return None

    def close(self) -> None:
        """No more calls come: `get` returns what is left, then None."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def discard(self) -> None:
        """Removes the spool file (once no thread reads it)."""
        for handle in (self._writer, self._out, self._reader, self._in):
            if handle is not None:
                with contextlib.suppress(Exception):
                    handle.close()
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)
        self._path = None

    def _spool(self, call: Call) -> None:
        if self._writer is None:
            fd, self._path = tempfile.mkstemp(prefix="klaviyo-subscribe-", suffix=".arrows")
            self._out = os.fdopen(fd, "wb")
            self._writer = pa.ipc.new_stream(self._out, _SCHEMA)
        profiles = call.profiles
        when = profiles.consented_at if profiles.consented_at is not None else pa.nulls(len(call.rows), pa.string())
        columns = [profiles.email, profiles.phone, when, pa.array(call.rows, pa.int64())]
        self._writer.write_batch(pa.record_batch(columns, schema=_SCHEMA))
        assert self._out is not None
        self._out.flush()  # whole before a reader may look for it
        self._spooled.append(call.number)

    def _unspool(self) -> Call:
        if self._reader is None:
            assert self._path is not None
            self._in = open(self._path, "rb")  # noqa: SIM115  # open until discard()
            self._reader = pa.ipc.open_stream(self._in)
        batch = self._reader.read_next_batch()
        when = batch.column("consented_at")
        rows = batch.column("row").to_numpy()
        profiles = Subscribers(
            np.zeros(len(rows), dtype=np.int64),
            batch.column("email"),
            batch.column("phone"),
            when if when.null_count < len(when) else None,
        )
        return Call(profiles, rows)
