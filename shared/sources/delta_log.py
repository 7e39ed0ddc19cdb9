"""Reads a Delta table's log with `deltalake` (delta-rs) in a process of its own and prints, as JSON, the
version read and its data files, or why the table cannot be read from its data files alone. delta-rs
takes some 50 MB (its library and its runtime) that the exporting process would keep to its end; here
it is given back as soon as the file list is known.

    python shared/sources/delta_log.py <folder> [<version>]
"""

from __future__ import annotations

import json
import sys
from typing import Any

# Reader features whose tables read right from the data files the log lists; column mapping and
# deletion vectors are checked for use (a table may allow them and use neither); any other is refused.
# variantType: a variant column maps to nothing (the type check before sending refuses it).
_READABLE_FEATURES = {"timestampNtz", "v2Checkpoint", "vacuumProtocolCheck", "typeWidening", "variantType"}


def table_files(uri: str, version: int | None) -> dict[str, Any]:
    """{"version", "files" (relative to the folder, in name order), "partition_columns"} or {"error"}."""
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError

    try:
        table = DeltaTable(uri, version=version)
    except (DeltaError, OSError, ValueError) as exc:
        at = f"version {version}" if version is not None else "its latest version"
        return {"error": f"the Delta table cannot be read at {at}: {exc}"}
    features = set(table.protocol().reader_features or ())
    unknown = sorted(features - _READABLE_FEATURES - {"columnMapping", "deletionVectors"})
    if unknown:
        return {"error": f"the Delta table uses reader feature(s) {', '.join(unknown)}, not supported"}
    metadata = table.metadata()
    mode = metadata.configuration.get("delta.columnMapping.mode", "none")
    if mode != "none":
        return {
            "error": f"the Delta table uses column mapping (mode {mode}): its files' column names are not "
            "the table's; not supported"
        }
    actions = table.get_add_actions(flatten=True)
    for name in actions.column_names:
        if name.startswith("deletionVector") and actions.column(name).null_count < actions.num_rows:
            return {
                "error": f"version {table.version()} has deletion vectors (rows deleted without rewriting their "
                "files); not supported: purge them (REORG TABLE ... APPLY (PURGE)) or turn them off"
            }
    files = sorted(actions.column("path").to_pylist()) if actions.num_rows else []
    return {"version": table.version(), "files": files, "partition_columns": list(metadata.partition_columns)}


def main(argv: list[str]) -> int:
    version = int(argv[1]) if len(argv) > 1 and argv[1] else None
    sys.stdout.write(json.dumps(table_files(argv[0], version)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
