"""What a run has done on Klaviyo's side, saved as it goes, so a later invocation (after a time
budget ran out, or a crash) goes on from there without sending an accepted batch again."""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from shared.engine.batching import Batch
from shared.engine.report import RejectLine

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient


@dataclass
class BatchRecord:
    """What the upload of one batch did: the import jobs its profiles went into, how many profiles
    those jobs took, and the lines of the profiles Klaviyo refused. The one upload thread that
    sends the batch fills it in; the checkpoint holds it once the whole batch is through."""

    jobs: list[str] = field(default_factory=list)
    sent: int = 0
    rejects: list[RejectLine] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"jobs": self.jobs, "sent": self.sent, "rejects": [list(line) for line in self.rejects]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchRecord:
        return cls(list(data["jobs"]), data["sent"], [RejectLine(*line) for line in data["rejects"]])


@dataclass(frozen=True)
class FinishedJob:
    """How an import job ended: the profiles it imported, those it failed, and the failed ones' lines;
    with a sync state, how many of those it imported it added to the list and how many it updated."""

    accepted: int
    failed: int
    rejects: list[RejectLine]
    added: int = 0
    updated: int = 0

    def to_dict(self) -> dict[str, Any]:
        fields = {"accepted": self.accepted, "failed": self.failed, "rejects": [list(line) for line in self.rejects]}
        # Only with a sync state: a run without one saves its checkpoint as it always did.
        if self.added or self.updated:
            fields |= {"added": self.added, "updated": self.updated}
        return fields

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FinishedJob:
        rejects = [RejectLine(*line) for line in data["rejects"]]
        # A checkpoint saved before these were recorded has neither: the run counts none of them.
        return cls(data["accepted"], data["failed"], rejects, data.get("added", 0), data.get("updated", 0))


def batch_key(batch: Batch) -> str:
    """A batch's name in the checkpoint: its first and last packed rows, as it was first formed."""
    return f"{batch.rows[0]}:{batch.rows[-1]}"


@dataclass
class Checkpoint:
    """The saved checkpoint. On disk it is one JSON object with these fields; the records in it are
    plain JSON objects and each reject line a JSON array of its six values."""

    run_id: str
    source_version: str
    batches: dict[str, BatchRecord] = field(default_factory=dict)  # by batch_key
    finished_jobs: dict[str, FinishedJob] = field(default_factory=dict)  # by import job id
    # Packed rows after which the batcher was flushed early because the time budget ran out there.
    flush_points: list[int] = field(default_factory=list)
    invocations: int = 0
    # With subscribe: how far earlier invocations subscribed (see Subscriber.pause).
    subscriptions: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        saved = {
            "run_id": self.run_id,
            "source_version": self.source_version,
            "batches": {key: record.to_dict() for key, record in self.batches.items()},
            "finished_jobs": {job_id: job.to_dict() for job_id, job in self.finished_jobs.items()},
            "flush_points": self.flush_points,
            "invocations": self.invocations,
        }
        if self.subscriptions:  # only a run that subscribes has them
            saved["subscriptions"] = self.subscriptions
        return orjson.dumps(saved)

    @classmethod
    def from_json(cls, data: bytes) -> Checkpoint:
        fields = orjson.loads(data)
        fields["batches"] = {key: BatchRecord.from_dict(r) for key, r in fields.get("batches", {}).items()}
        fields["finished_jobs"] = {job: FinishedJob.from_dict(f) for job, f in fields.get("finished_jobs", {}).items()}
        return cls(**fields)

    @property
    def pending_jobs(self) -> list[str]:
        return [j for record in self.batches.values() for j in record.jobs if j not in self.finished_jobs]


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


class RunCheckpoint:
    """This run's checkpoint while it runs. The upload threads record the batches they sent and the
    run's thread the jobs that finished; each change is made under this object's lock and saved at
    once. Without a store (a dry run, or no checkpoint asked for) nothing is saved."""

    def __init__(self, store: CheckpointStore | None, run_id: str, source_version: str) -> None:
        self.store = store
        self._checkpoint = Checkpoint(run_id, source_version)
        self._lock = threading.Lock()

    def resume(self, saved: Checkpoint) -> None:
        """Goes on from a checkpoint an earlier invocation of this run saved."""
        with self._lock:
            self._checkpoint = saved

    def begin_invocation(self) -> None:
        with self._lock:
            self._checkpoint.invocations += 1
        self.save()

    @property
    def invocations(self) -> int:
        return self._checkpoint.invocations

    @property
    def batches_sent(self) -> int:
        return len(self._checkpoint.batches)

    def flush_points(self) -> list[int]:
        with self._lock:
            return list(self._checkpoint.flush_points)

    def add_flush_point(self, row: int) -> None:
        with self._lock:
            self._checkpoint.flush_points.append(row)

    def subscriptions(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._checkpoint.subscriptions)

    def record_subscriptions(self, progress: dict[str, Any]) -> None:
        with self._lock:
            self._checkpoint.subscriptions = progress

    def sent_before(self, batch: Batch) -> BatchRecord | None:
        """What an earlier invocation did with this batch, if it sent it."""
        with self._lock:
            return self._checkpoint.batches.get(batch_key(batch))

    def finished_before(self, job_id: str) -> FinishedJob | None:
        with self._lock:
            return self._checkpoint.finished_jobs.get(job_id)

    def record_batch(self, batch: Batch, record: BatchRecord) -> None:
        with self._lock:
            self._checkpoint.batches[batch_key(batch)] = record
        self.save()

    def record_finished(self, job_id: str, finished: FinishedJob) -> None:
        with self._lock:
            self._checkpoint.finished_jobs[job_id] = finished
        self.save()

    def save(self) -> None:
        if self.store is None:
            return
        # A copy taken under the lock: the upload threads go on changing the checkpoint while it is saved.
        with self._lock:
            snapshot = Checkpoint.from_json(self._checkpoint.to_json())
        self.store.save(snapshot)
