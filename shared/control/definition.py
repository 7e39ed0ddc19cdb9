"""What an export is, as far as a run is concerned: the fields that decide what is sent where. Two
records with the same fingerprint send the same segment the same way to the same list; a run compares
it to decide that the export it serves is still the one it started for, and the timer to decide that
nothing changed since the last successful run."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

# Every stored export field that changes what a run reads, how it maps rows, or where and how it sends.
# Not here: enabled and run_always (when to run, not what), and run bookkeeping (last_success_*).
DEFINITION_FIELDS = (
    "connection",
    "list_id",
    "segment",
    "format",
    "delimiter",
    "csv",
    "entity",
    "version",
    "mapping",
    "sync_mode",
    "full",
    "max_removal_share",
    "confirm_removals",
    "reconcile",
    "subscribe",
)
# Fields added after exports were first saved: absent or null, they leave the fingerprint as it was,
# so that adding them did not make every saved export look edited.
_ADDED_LATER = frozenset({"subscribe"})


# A segment version longer than this (the etags of a folder of many parts) is kept as its digest.
_LONGEST_KEPT_VERSION = 256


def version_kept(version: str | None) -> str | None:
    """A segment version as an export keeps it to compare with later runs': itself, or its digest when
    too long for one table property (the etags of a folder of thousands of parts)."""
    if version is None or len(version) <= _LONGEST_KEPT_VERSION:
        return version
    return "sha256:" + hashlib.sha256(version.encode()).hexdigest()


def definition_fingerprint(export: Mapping[str, Any]) -> str:
    """A short digest of the export's definition fields (a field left out counts as absent)."""
    definition = {
        name: export.get(name) for name in DEFINITION_FIELDS if name not in _ADDED_LATER or export.get(name) is not None
    }
    return hashlib.sha256(orjson.dumps(definition, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


# What a sync state is valid for: the profiles it holds were put on this list, through this connection,
# identified and fingerprinted with this mapping. A state built for other values must not be used.
SYNC_STATE_FIELDS = ("connection", "list_id", "mapping")


def sync_state_fingerprint(export: Mapping[str, Any]) -> str:
    """A short digest of the fields a sync state is valid for (SYNC_STATE_FIELDS)."""
    valid_for = {name: export.get(name) for name in SYNC_STATE_FIELDS}
    return hashlib.sha256(orjson.dumps(valid_for, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def sync_state_prefix(export_name: str, generation: str | None, export: Mapping[str, Any]) -> str:
    """Where an export's sync state lives under the reports container: per generation (a re-created
    export starts afresh) and per list, connection and mapping (a changed one starts afresh). Runs of
    an export saved before generations existed keep the state where it always was."""
    if not generation:
        return f"{export_name}/sync/"
    return f"{export_name}/sync/{generation}/{sync_state_fingerprint(export)}/"
