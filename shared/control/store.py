"""Connections, exports and runs in Azure Table Storage."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableServiceClient, UpdateMode

from shared.control.bounded import bounded_fields
from shared.control.lease import ExportLeases
from shared.engine import RunStatus

CONNECTIONS, EXPORTS, RUNS, TRIGGERS, LEASES = "connections", "exports", "runs", "triggerseen", "leases"
_JSON_FIELDS = ("mapping", "segment", "csv", "counts", "consent", "subscribe")
_INTERNAL = ("PartitionKey", "RowKey")
_CONCURRENT_CHANGE_RETRIES = 5


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def new_run_id() -> str:
    """Sorts newest first as a table RowKey: inverted milliseconds, then randomness."""
    inverted = 10**13 - int(time.time() * 1000)
    return f"{inverted:013d}-{uuid.uuid4().hex[:12]}"


def new_generation() -> str:
    """A new export generation: a name deleted and saved again is another export."""
    return uuid.uuid4().hex


def _to_entity(partition: str, key: str, data: dict[str, Any]) -> dict[str, Any]:
    entity: dict[str, Any] = {"PartitionKey": partition, "RowKey": key}
    for name, value in data.items():
        entity[name] = orjson.dumps(value).decode() if name in _JSON_FIELDS else value
    return entity


def _from_entity(entity: Any) -> dict[str, Any]:
    data = {k: v for k, v in entity.items() if k not in _INTERNAL}
    for name in _JSON_FIELDS:
        if isinstance(data.get(name), str):
            data[name] = orjson.loads(data[name])
    return data


class Store:
    """One object over the app's tables; entities are plain dicts (the API's shapes)."""

    def __init__(self, service: TableServiceClient, prefix: str = "") -> None:
        self._service = service
        self._prefix = prefix  # lets tests (or two deployments) share one storage account
        self._tables: dict[str, Any] = {}

    def _table(self, name: str) -> Any:
        name = self._prefix + name
        if name not in self._tables:
            with contextlib.suppress(ResourceExistsError):
                self._service.create_table(name)
            self._tables[name] = self._service.get_table_client(name)
        return self._tables[name]

    def _get(self, table: str, partition: str, key: str) -> dict[str, Any] | None:
        try:
            return _from_entity(self._table(table).get_entity(partition, key))
        except ResourceNotFoundError:
            return None

    @property
    def leases(self) -> ExportLeases:
        """Each export's lease (one executing run) and waiting run."""
        return ExportLeases(self._table(LEASES))

    # -- connections and exports ---------------------------------------------------------------
    def get_connection(self, name: str) -> dict[str, Any] | None:
        return self._get(CONNECTIONS, "connection", name)

    def put_connection(self, name: str, data: dict[str, Any]) -> None:
        self._table(CONNECTIONS).upsert_entity(_to_entity("connection", name, data), mode=UpdateMode.REPLACE)

    def delete_connection(self, name: str) -> bool:
        return self._delete(CONNECTIONS, "connection", name)

    def list_connections(self) -> list[dict[str, Any]]:
        return [_from_entity(e) for e in self._table(CONNECTIONS).query_entities("PartitionKey eq 'connection'")]

    def get_export(self, name: str) -> dict[str, Any] | None:
        return self._get(EXPORTS, "export", name)

    def put_export(self, name: str, data: dict[str, Any]) -> None:
        self._table(EXPORTS).upsert_entity(_to_entity("export", name, data), mode=UpdateMode.REPLACE)

    def update_export(self, name: str, changes: dict[str, Any]) -> None:
        """Merges run bookkeeping into an export; a deleted export stays deleted."""
        with contextlib.suppress(ResourceNotFoundError):
            self._table(EXPORTS).update_entity(_to_entity("export", name, changes), mode=UpdateMode.MERGE)

    def update_export_of_generation(self, name: str, generation: str | None, changes: dict[str, Any]) -> bool:
        """Merges run bookkeeping into an export only while it is still the generation the run was
        started for (read with its etag, merged only if unchanged since; re-read when it changed). False
        when the export was deleted, or deleted and saved again, since."""
        for _ in range(_CONCURRENT_CHANGE_RETRIES):
            try:
                entity = self._table(EXPORTS).get_entity("export", name)
            except ResourceNotFoundError:
                return False
            if entity.get("generation") != generation:
                return False
            try:
                self._table(EXPORTS).update_entity(
                    _to_entity("export", name, changes),
                    mode=UpdateMode.MERGE,
                    etag=entity.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
            except ResourceModifiedError:
                continue  # saved (or deleted and saved again) meanwhile: compare the generation again
            except ResourceNotFoundError:
                return False
            return True
        return False  # it kept changing: the outcome is not recorded, and the timer runs the export again

    def delete_export(self, name: str) -> bool:
        return self._delete(EXPORTS, "export", name)

    def list_exports(self) -> list[dict[str, Any]]:
        return [_from_entity(e) for e in self._table(EXPORTS).query_entities("PartitionKey eq 'export'")]

    def _delete(self, table: str, partition: str, key: str) -> bool:
        if self._get(table, partition, key) is None:
            return False
        self._table(table).delete_entity(partition, key)
        return True

    # -- runs -----------------------------------------------------------------------------------
    # A run's strings are cut to what an entity holds (bounded_fields): a reason quoting a huge header
    # must not make recording the outcome fail and leave the run `running`.
    def create_run(self, run: dict[str, Any]) -> None:
        self._table(RUNS).create_entity(_to_entity("run", run["run_id"], bounded_fields(run)))

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        return self._get(RUNS, "run", run_id)

    def get_run_with_etag(self, run_id: str) -> tuple[dict[str, Any], str] | None:
        try:
            entity = self._table(RUNS).get_entity("run", run_id)
        except ResourceNotFoundError:
            return None
        return _from_entity(entity), entity.metadata["etag"]

    def update_run(self, run_id: str, changes: dict[str, Any], etag: str | None = None) -> bool:
        """Merges changes; with an etag, only if nobody changed the run since (False if they did)."""
        entity = _to_entity("run", run_id, bounded_fields(changes))
        try:
            if etag:
                self._table(RUNS).update_entity(
                    entity, mode=UpdateMode.MERGE, etag=etag, match_condition=MatchConditions.IfNotModified
                )
            else:
                self._table(RUNS).update_entity(entity, mode=UpdateMode.MERGE)
        except ResourceModifiedError:
            return False
        return True

    def runs_of(self, export_name: str, limit: int = 50) -> list[dict[str, Any]]:
        """Newest first (run ids sort that way)."""
        query = self._table(RUNS).query_entities(
            "PartitionKey eq 'run' and export_name eq @name", parameters={"name": export_name}, results_per_page=limit
        )
        runs: list[dict[str, Any]] = []
        for entity in query:
            runs.append(_from_entity(entity))
            if len(runs) >= limit:
                break
        return runs

    def active_runs(self) -> Iterator[dict[str, Any]]:
        query = f"PartitionKey eq 'run' and (status eq '{RunStatus.QUEUED}' or status eq '{RunStatus.RUNNING}')"
        for entity in self._table(RUNS).query_entities(query):
            yield _from_entity(entity)

    # -- trigger de-duplication -------------------------------------------------------------------
    def first_sighting(self, export_name: str, version: str, generation: str | None = None) -> bool:
        """True the first time this export (this generation of it) sees this segment version from a blob
        trigger. An export saved before generations existed keeps the keys it had."""
        import hashlib

        seen = f"{generation}/{version}" if generation else version
        key = hashlib.sha256(seen.encode()).hexdigest()[:40]
        try:
            self._table(TRIGGERS).create_entity({"PartitionKey": export_name, "RowKey": key, "seen_at": utc_now()})
        except ResourceExistsError:
            return False
        return True
