"""Segment sync: the state of what each list holds, delta runs and mirror removals."""

from shared.sync.lookup import RemovalStopped
from shared.sync.options import DEFAULT_MAX_REMOVAL_SHARE, SyncMode, SyncOptions, SyncOptionsError
from shared.sync.run import AcceptedCounts, SyncRun
from shared.sync.state import BlobSyncState, FolderSyncState, SyncStateStore

__all__ = [
    "RemovalStopped",
    "AcceptedCounts",
    "BlobSyncState",
    "DEFAULT_MAX_REMOVAL_SHARE",
    "FolderSyncState",
    "SyncMode",
    "SyncOptions",
    "SyncOptionsError",
    "SyncRun",
    "SyncStateStore",
]
