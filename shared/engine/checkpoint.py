"""What a run has done on Klaviyo's side, saved as it goes, so a later invocation (after a time
budget ran out, or a crash) goes on from there without sending an accepted batch again."""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient


@dataclass
class Checkpoint:
    run_id: str
    source_version: str
    # "first:last" packed rows of a batch as first formed -> {"jobs": [...], "sent": n, "rejects": [lines]}
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    # job id -> {"accepted": n, "failed": n, "rejects": [lines]}
    finished_jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    # packed rows after which the batcher was flushed early (a time budget ran out there)
    flush_points: list[int] = field(default_factory=list)
    invocations: int = 0

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, data: bytes) -> Checkpoint:
        return cls(**orjson.loads(data))

    @property
    def pending_jobs(self) -> list[str]:
        return [j for b in self.batches.values() for j in b["jobs"] if j not in self.finished_jobs]


class CheckpointStore(Protocol):
    def load(self) -> Checkpoint | None: ...
    def save(self, checkpoint: Checkpoint) -> None: ...
    def delete(self) -> None: ...


class FileCheckpoints:
    """A checkpoint in a local file, replaced atomically."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def load(self) -> Checkpoint | None:
        return Checkpoint.from_json(self.path.read_bytes()) if self.path.exists() else None

    def save(self, checkpoint: Checkpoint) -> None:
        with self._lock:
            temporary = self.path.with_suffix(self.path.suffix + ".tmp")
            with open(temporary, "wb") as f:
                f.write(checkpoint.to_json())
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, self.path)

    def delete(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class BlobCheckpoints:
    """A checkpoint blob (each upload replaces it whole)."""

    def __init__(self, container: ContainerClient, name: str) -> None:
        self._blob = container.get_blob_client(name)
        self._lock = threading.Lock()

    def load(self) -> Checkpoint | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return Checkpoint.from_json(self._blob.download_blob().readall())
        except ResourceNotFoundError:
            return None

    def save(self, checkpoint: Checkpoint) -> None:
        with self._lock:
            self._blob.upload_blob(checkpoint.to_json(), overwrite=True)

    def delete(self) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        with contextlib.suppress(ResourceNotFoundError):
            self._blob.delete_blob()
