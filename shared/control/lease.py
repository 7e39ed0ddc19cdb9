"""At most one executing run per export, across every instance: a lease per export in Table Storage,
taken and renewed with optimistic concurrency (a write succeeds only if nobody wrote since it was
read), and taken over only once its holder's heartbeat is stale. Beside it, the export's waiting run:
requests made while a run waits in the queue join that run instead of queueing another."""

from __future__ import annotations

import contextlib
import time
from typing import Any, NamedTuple

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

# A lease whose holder has not renewed it for this long is taken to have lost its worker.
STALE_AFTER_SECONDS = 90.0
_LEASE, _WAITING = "lease", "waiting"


class Held(NamedTuple):
    """A lease this run holds: the etag its next renewal must match."""

    export_name: str
    run_id: str
    etag: str


class ExportLeases:
    """The `leases` table: per export, the lease of the run executing it and the run waiting for it."""

    def __init__(self, table: TableClient) -> None:
        self._table = table

    def take(self, export_name: str, run_id: str, now: float | None = None) -> Held | None:
        """The export's lease for this run, unless a run holds it and renewed it recently (this same
        run too: a second delivery of its message must not run it twice)."""
        now = time.time() if now is None else now
        entity = {"PartitionKey": export_name, "RowKey": _LEASE, "run_id": run_id, "renewed": now}
        current = self._get(export_name, _LEASE)
        try:
            if current is None:
                return Held(export_name, run_id, self._table.create_entity(entity)["etag"])
            _, renewed, etag = current
            if now - renewed < STALE_AFTER_SECONDS:
                return None
            return Held(export_name, run_id, self._replace(entity, etag))
        except (ResourceExistsError, ResourceModifiedError):
            return None  # another worker took it between the read and the write

    def renew(self, held: Held) -> Held | None:
        """The lease renewed, or None when another run has taken it over since."""
        entity = {"PartitionKey": held.export_name, "RowKey": _LEASE, "run_id": held.run_id, "renewed": time.time()}
        try:
            return held._replace(etag=self._replace(entity, held.etag))
        except (ResourceModifiedError, ResourceNotFoundError):
            return None

    def release(self, export_name: str, run_id: str) -> None:
        """Gives the lease up if this run still holds it (a lease taken over is the new holder's)."""
        current = self._get(export_name, _LEASE)
        if current is None or current[0] != run_id:
            return
        with contextlib.suppress(ResourceModifiedError, ResourceNotFoundError):
            self._table.delete_entity(
                export_name, _LEASE, etag=current[2], match_condition=MatchConditions.IfNotModified
            )

    def holder(self, export_name: str) -> str | None:
        """The run holding the export's lease, fresh or not."""
        current = self._get(export_name, _LEASE)
        return current[0] if current is not None else None

    # -- the waiting run ---------------------------------------------------------------------------
    def waiting(self, export_name: str) -> tuple[str, str] | None:
        """The run recorded as waiting for this export, with the record's etag."""
        current = self._get(export_name, _WAITING)
        return (current[0], current[2]) if current is not None else None

    def wait(self, export_name: str, run_id: str, replacing: str | None = None) -> bool:
        """Records this run as the one waiting (replacing the record with etag `replacing`, whose run
        is no longer waiting); False when another request recorded its run first."""
        entity = {"PartitionKey": export_name, "RowKey": _WAITING, "run_id": run_id, "renewed": time.time()}
        try:
            if replacing is None:
                self._table.create_entity(entity)
            else:
                self._replace(entity, replacing)
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
            return False
        return True

    def started(self, export_name: str, run_id: str) -> None:
        """The waiting run has started: requests from now on queue a new run behind it."""
        current = self._get(export_name, _WAITING)
        if current is not None and current[0] == run_id:
            with contextlib.suppress(ResourceModifiedError, ResourceNotFoundError):
                self._table.delete_entity(
                    export_name, _WAITING, etag=current[2], match_condition=MatchConditions.IfNotModified
                )

    def _get(self, export_name: str, key: str) -> tuple[str, float, str] | None:
        try:
            entity: Any = self._table.get_entity(export_name, key)
        except ResourceNotFoundError:
            return None
        return str(entity["run_id"]), float(entity["renewed"]), entity.metadata["etag"]

    def _replace(self, entity: dict[str, Any], etag: str) -> str:
        written = self._table.update_entity(
            entity, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified
        )
        return str(written["etag"])
