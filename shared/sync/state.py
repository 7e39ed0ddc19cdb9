"""What an export put on its list in earlier runs: per profile a fingerprint of its identifier, of
the profile as sent, and its Klaviyo profile id once known; one compact binary blob between runs."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

import numpy as np
import orjson

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

FORMAT_VERSION = 1
STATE_NAME = "sync-state.npz"
_IN_MEMORY = 4 * 1024 * 1024  # a larger state passes through a temporary file on its way to or from a blob
# The most one append to a blob may add (an append blob block).
MAX_APPEND_BYTES = 4 * 1024 * 1024


class Int64Blocks:
    """int64 values appended a chunk at a time into blocks of 4 MB. With the allocator settings of
    shared/engine/memory.py glibc maps each block on its own, so the values are never copied as they
    grow, and a block's memory goes back to the system once it is freed."""

    BLOCK = 1 << 19

    def __init__(self) -> None:
        self._blocks: list[np.ndarray] = []
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def extend(self, values: np.ndarray) -> None:
        start = 0
        while start < len(values):
            used = self._size % self.BLOCK
            if not used:
                self._blocks.append(np.empty(self.BLOCK, dtype=np.int64))
            count = min(self.BLOCK - used, len(values) - start)
            self._blocks[-1][used : used + count] = values[start : start + count]
            start += count
            self._size += count

    def take(self) -> np.ndarray:
        """Every value in one array, leaving this empty (each block is freed once copied)."""
        values = np.empty(self._size, dtype=np.int64)
        blocks, self._blocks, self._size = self._blocks, [], 0
        blocks.reverse()
        for start in range(0, len(values), self.BLOCK):
            block = blocks.pop()
            values[start : start + self.BLOCK] = block[: len(values) - start]
            del block
        return values


@dataclass
class SyncState:
    """Sorted by identifier fingerprint: `ids`, `fingerprints` (int64) and `profile_ids` (bytes,
    b"" while unknown)."""

    list_id: str
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    fingerprints: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    profile_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype="S1"))

    def __len__(self) -> int:
        return len(self.ids)

    def find(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions of `ids` in the state, and where they were found."""
        if not len(self.ids):
            return np.zeros(len(ids), dtype=np.int64), np.zeros(len(ids), dtype=bool)
        at = np.minimum(np.searchsorted(self.ids, ids), len(self.ids) - 1)
        return at, self.ids[at] == ids

    def known(self, ids: np.ndarray) -> np.ndarray:
        return self.find(ids)[1]

    def unchanged(self, ids: np.ndarray, fingerprints: np.ndarray) -> np.ndarray:
        """True where a profile was accepted before exactly as it is now."""
        at, found = self.find(ids)
        return found & (self.fingerprints[at] == fingerprints)

    def merge(self, ids: np.ndarray, fingerprints: np.ndarray, profile_ids: np.ndarray | None = None) -> None:
        """Records profiles Klaviyo accepted (the newest fingerprint wins; a known profile id is kept
        unless a new one is given; of an id given twice, the first). Known profiles are updated in
        place and new ones inserted, so a large state is never held twice."""
        if not len(ids):
            return
        order = _order_by_id(ids)
        ids = ids[order]  # the arguments are rebound one by one: the unsorted ones are freed as soon as possible
        fingerprints = fingerprints[order]
        profile_ids = np.zeros(len(ids), dtype="S1") if profile_ids is None else profile_ids[order]
        del order
        if not len(self.ids):
            self.ids, self.fingerprints, self.profile_ids = ids, fingerprints, profile_ids
            return
        places = np.searchsorted(self.ids, ids)
        found = places < len(self.ids)
        found[found] = self.ids[places[found]] == ids[found]
        if found.any():
            at = places[found]
            self.fingerprints = _writable(self.fingerprints)
            self.fingerprints[at] = fingerprints[found]
            given = profile_ids[found] != b""
            self._put_profile_ids(at[given], profile_ids[found][given])
        if found.all():
            return
        new = ~found
        places = places[new]
        self.ids = np.insert(self.ids, places, ids[new])
        self.fingerprints = np.insert(self.fingerprints, places, fingerprints[new])
        self._widen_profile_ids(profile_ids.dtype.itemsize)
        self.profile_ids = np.insert(self.profile_ids, places, profile_ids[new])

    def set_profile_ids(self, ids: np.ndarray, profile_ids: np.ndarray) -> int:
        """Profile ids of profiles already in the state; returns how many were found."""
        at, found = self.find(ids)
        if found.any():
            self._put_profile_ids(at[found], profile_ids[found])
        return int(found.sum())

    def _put_profile_ids(self, at: np.ndarray, profile_ids: np.ndarray) -> None:
        if len(at):
            self._widen_profile_ids(profile_ids.dtype.itemsize)
            self.profile_ids[at] = profile_ids

    def _widen_profile_ids(self, width: int) -> None:
        """Makes the profile ids writable and at least `width` bytes wide (copies only when needed)."""
        if width > self.profile_ids.dtype.itemsize:
            self.profile_ids = self.profile_ids.astype(f"S{width}")
        else:
            self.profile_ids = _writable(self.profile_ids)

    def drop(self, ids: np.ndarray) -> None:
        at, found = self.find(ids)
        keep = np.ones(len(self.ids), dtype=bool)
        keep[at[found]] = False
        self.ids, self.fingerprints, self.profile_ids = self.ids[keep], self.fingerprints[keep], self.profile_ids[keep]

    def absent_from(self, seen: np.ndarray) -> np.ndarray:
        """Positions of the profiles not among `seen` (sorted, each once: e.g. the segment's)."""
        return np.flatnonzero(~isin_sorted(self.ids, seen))

    def write(self, file: IO[bytes]) -> None:
        """Writes the state as an .npz archive, array by array (np.savez never builds it in memory)."""
        header = orjson.dumps({"format": FORMAT_VERSION, "list_id": self.list_id})
        np.savez(
            file,
            header=np.frombuffer(header, dtype=np.uint8),
            ids=self.ids,
            fingerprints=self.fingerprints,
            profile_ids=self.profile_ids,
        )

    @classmethod
    def read(cls, file: IO[bytes] | Path) -> SyncState:
        with np.load(file, allow_pickle=False) as stored:
            header = orjson.loads(stored["header"].tobytes())
            if header.get("format") != FORMAT_VERSION:
                raise ValueError(f"sync state format {header.get('format')} is not {FORMAT_VERSION}")
            return cls(header["list_id"], stored["ids"], stored["fingerprints"], stored["profile_ids"])


def isin_sorted(values: np.ndarray, sorted_values: np.ndarray) -> np.ndarray:
    """np.isin for a sorted, unique `sorted_values`: a binary search per value, the values taken in
    order (random probes into a large array miss the cache at every step, ordered ones seldom)."""
    if not len(sorted_values) or not len(values):
        return np.zeros(len(values), dtype=bool)
    order = np.argsort(values)
    ordered = values[order]
    at = np.minimum(np.searchsorted(sorted_values, ordered), len(sorted_values) - 1)
    found = np.empty(len(values), dtype=bool)
    found[order] = sorted_values[at] == ordered
    return found


def _order_by_id(ids: np.ndarray) -> np.ndarray:
    """Positions that sort `ids`, keeping only the first given of an id."""
    order = np.argsort(ids)  # not stable, but several times faster than a stable sort
    ordered = ids[order]
    if (ordered[1:] == ordered[:-1]).any():  # only then does the order within an id matter
        order = order[np.lexsort((order, ordered))]
        ordered = ids[order]
        first = np.ones(len(ordered), dtype=bool)
        first[1:] = ordered[1:] != ordered[:-1]
        order = order[first]
    return order


def _writable(values: np.ndarray) -> np.ndarray:
    return values if values.flags.writeable else values.copy()


class SyncStateStore(Protocol):
    """Where an export's sync state lives: the state itself, and the files beside it (the identifiers
    of the profiles put on the list, and the logs of what runs are sending)."""

    location: str

    def load(self, name: str = STATE_NAME) -> SyncState | None: ...
    def save(self, state: SyncState, name: str = STATE_NAME) -> None: ...
    def delete(self, name: str) -> None: ...
    def append(self, name: str, data: bytes) -> None:
        """Adds `data` (at most MAX_APPEND_BYTES) to the end of `name`, durably, creating it if need be."""
        ...

    def names(self, prefix: str) -> list[str]:
        """The names of the files beside the state that start with `prefix`."""
        ...

    def fetch(self, name: str) -> contextlib.AbstractContextManager[Path | None]:
        """A local file holding `name` while the context lasts (None when there is no such file)."""
        ...

    def replace(self, name: str) -> contextlib.AbstractContextManager[Path]:
        """A local path to write; when the context ends without an error, it replaces `name` whole."""
        ...


class FolderSyncState:
    """Sync state in a local folder (the CLI's --state DIR), replaced atomically."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.location = str(self.folder)

    def load(self, name: str = STATE_NAME) -> SyncState | None:
        path = self.folder / name
        return SyncState.read(path) if path.exists() else None

    def save(self, state: SyncState, name: str = STATE_NAME) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / name
        temporary = path.with_suffix(".tmp")
        with open(temporary, "wb") as f:
            state.write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.folder / name).unlink()

    def append(self, name: str, data: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / name, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def names(self, prefix: str) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(path.name for path in self.folder.iterdir() if path.name.startswith(prefix))

    @contextlib.contextmanager
    def fetch(self, name: str) -> Iterator[Path | None]:
        path = self.folder / name
        yield path if path.exists() else None

    @contextlib.contextmanager
    def replace(self, name: str) -> Iterator[Path]:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / name
        temporary = path.with_name(path.name + ".tmp")
        try:
            yield temporary
            with open(temporary, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(temporary, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()


class BlobSyncState:
    """Sync state as blobs under a prefix (`container/path` for the CLI, per export in the app)."""

    def __init__(self, container: ContainerClient, prefix: str) -> None:
        self._container = container
        self._prefix = prefix.rstrip("/") + "/" if prefix else ""
        self.location = f"{container.container_name}/{self._prefix}"

    def load(self, name: str = STATE_NAME) -> SyncState | None:
        from azure.core.exceptions import ResourceNotFoundError

        with tempfile.SpooledTemporaryFile(_IN_MEMORY) as file:
            try:
                self._container.get_blob_client(self._prefix + name).download_blob().readinto(file)
            except ResourceNotFoundError:
                return None
            file.seek(0)
            return SyncState.read(file)

    def save(self, state: SyncState, name: str = STATE_NAME) -> None:
        with tempfile.SpooledTemporaryFile(_IN_MEMORY) as file:
            state.write(file)
            length = file.tell()
            file.seek(0)
            self._container.get_blob_client(self._prefix + name).upload_blob(file, length=length, overwrite=True)

    def delete(self, name: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        with contextlib.suppress(ResourceNotFoundError):
            self._container.get_blob_client(self._prefix + name).delete_blob()

    def append(self, name: str, data: bytes) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        blob = self._container.get_blob_client(self._prefix + name)
        try:
            blob.append_block(data)
        except ResourceNotFoundError:
            blob.create_append_blob()
            blob.append_block(data)

    def names(self, prefix: str) -> list[str]:
        start = self._prefix + prefix
        return sorted(b.name[len(self._prefix) :] for b in self._container.list_blobs(name_starts_with=start))

    @contextlib.contextmanager
    def fetch(self, name: str) -> Iterator[Path | None]:
        from azure.core.exceptions import ResourceNotFoundError

        with tempfile.TemporaryDirectory(prefix="sync-") as folder:
            path = Path(folder) / "file"
            try:
                with open(path, "wb") as f:
                    self._container.get_blob_client(self._prefix + name).download_blob().readinto(f)
            except ResourceNotFoundError:
                yield None
                return
            yield path

    @contextlib.contextmanager
    def replace(self, name: str) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="sync-") as folder:
            path = Path(folder) / "file"
            yield path
            with open(path, "rb") as f:
                blob = self._container.get_blob_client(self._prefix + name)
                blob.upload_blob(f, length=path.stat().st_size, overwrite=True)
