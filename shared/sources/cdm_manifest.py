"""The newer Common Data Model metadata form: a folder governed by `<name>.manifest.cdm.json`
(https://learn.microsoft.com/common-data-model/cdm-manifest). The manifest's `entities` declare each local
entity by `entityPath` (`Customer.cdm.json/Customer`: the entity document, then the definition in it), whose
`hasAttributes` name the columns in order; the declaration's `dataPartitions` list the files in order, each
`location` relative to the manifest (or an adapter path such as `adls:/folder/file.csv`), its CSV written as
the trait `is.partition.format.CSV` says; its `dataPartitionPatterns` add the data files below a
`rootLocation` that a `globPattern` or `regularExpression` matches, in name order."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from typing import Any

from shared.sources.cdm_model import CdmEntity, CdmPartition, chosen_entity, csv_settings_dialect, metadata_json
from shared.sources.errors import SegmentError
from shared.sources.parts import is_data_name

MANIFEST_SUFFIX = ".manifest.cdm.json"
CSV_TRAIT = "is.partition.format.CSV"

# Reads a document by its path relative to the manifest's folder, raising SegmentError when it is missing.
DocumentLoader = Callable[[str], bytes]
# The files below a folder (a path relative to the manifest's folder), as paths relative to the manifest's folder.
FileLister = Callable[[str], list[str]]


def is_manifest_name(name: str) -> bool:
    """Whether a file name is a CDM manifest's (`<name>.manifest.cdm.json`)."""
    base = posixpath.basename(name)
    return base.endswith(MANIFEST_SUFFIX) and len(base) > len(MANIFEST_SUFFIX)


def read_manifest_entity(
    name: str, data: bytes, entity: str | None, load: DocumentLoader, list_files: FileLister
) -> CdmEntity:
    """The entity `entity` declared by the manifest `name` (the only one when None), its attributes read
    from its entity document; a manifest that is not JSON, lacks the entity or its document is refused."""
    manifest = metadata_json(name, data, "a manifest.cdm.json")
    declared = manifest.get("entities") if isinstance(manifest, dict) else None
    if not isinstance(declared, list):
        raise SegmentError(f"{name}: no 'entities' list, so not a CDM manifest")
    local = {
        e.get("entityName"): e
        for e in declared
        if isinstance(e, dict) and e.get("type", "LocalEntity") == "LocalEntity"
    }
    entity = chosen_entity(name, local, entity)
    declaration = local[entity]
    attributes = _attributes(name, entity, declaration, load)
    partitions = _partitions(name, entity, declaration, attributes)
    matched = _pattern_partitions(name, entity, declaration, attributes, list_files)
    listed = {p.location for p in partitions}
    every = partitions + tuple(p for p in matched if p.location not in listed)
    if not every:
        raise SegmentError(f"{name}: entity {entity!r} lists no dataPartitions and its patterns match no file")
    return CdmEntity(entity, attributes, every)


def relative_path(location: str) -> str | None:
    """A location relative to the manifest's folder, normalised; None when it is absolute (a URL, an adapter
    path or a corpus path from the root) or climbs out of the folder."""
    if ":" in location.split("/", 1)[0] or location.startswith("/"):
        return None
    path = posixpath.normpath(location)
    return None if path == ".." or path.startswith("../") or path == "." else path


def _attributes(name: str, entity: str, declaration: dict[str, Any], load: DocumentLoader) -> tuple[str, ...]:
    """The entity's attribute names in order, from the definition its `entityPath` names."""
    path = str(declaration.get("entityPath", ""))
    document, _, definition = path.rpartition("/")
    relative = relative_path(document) if document else None
    if relative is None or not definition:
        raise SegmentError(f"{name}: entity {entity!r}: entityPath {path!r} is not <document>/<entity> in the folder")
    where = posixpath.join(posixpath.dirname(name), relative)
    doc = metadata_json(where, load(relative), "an entity definition document")
    found = [
        d
        for d in (doc.get("definitions") or [] if isinstance(doc, dict) else [])
        if isinstance(d, dict) and d.get("entityName") == definition
    ]
    if not found:
        raise SegmentError(f"{where}: no definition of entity {definition!r}")
    extends = found[0].get("extendsEntity")
    if extends not in (None, "CdmEntity"):  # inherited attributes would come first: read a resolved entity
        raise SegmentError(f"{where}: entity {definition!r} extends {extends!r}; export the resolved entity")
    names = []
    for attribute in found[0].get("hasAttributes") or []:
        if not isinstance(attribute, dict) or not isinstance(attribute.get("name"), str) or "entity" in attribute:
            raise SegmentError(
                f"{where}: entity {definition!r} has an attribute group or entity attribute; export the resolved entity"
            )
        names.append(attribute["name"])
    if not names:
        raise SegmentError(f"{where}: entity {definition!r} has no attributes")
    return tuple(names)


def _partitions(
    name: str, entity: str, declaration: dict[str, Any], attributes: tuple[str, ...]
) -> tuple[CdmPartition, ...]:
    items = declaration.get("dataPartitions") or []
    partitions = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("location"), str):
            raise SegmentError(f"{name}: entity {entity!r} has a data partition without a location")
        label = str(item.get("name") or posixpath.basename(item["location"]))
        partitions.append(_partition(name, label, item["location"], item, attributes))
    return tuple(partitions)


def _partition(
    name: str, label: str, location: str, described: dict[str, Any], attributes: tuple[str, ...]
) -> CdmPartition:
    settings = {"name": label, "fileFormatSettings": _csv_settings(name, label, location, described)}
    return CdmPartition(label, location, csv_settings_dialect(name, settings, attributes))


def _pattern_partitions(
    name: str, entity: str, declaration: dict[str, Any], attributes: tuple[str, ...], list_files: FileLister
) -> tuple[CdmPartition, ...]:
    """The data files each of the entity's dataPartitionPatterns matches below its rootLocation, in name order."""
    found = []
    for pattern in declaration.get("dataPartitionPatterns") or []:
        label = str(pattern.get("name", "")) if isinstance(pattern, dict) else ""
        raw = str(pattern.get("rootLocation", "")) if isinstance(pattern, dict) else "/"
        root = "" if raw in ("", ".") else relative_path(raw)  # "" : the manifest's own folder
        if root is None:
            raise SegmentError(f"{name}: entity {entity!r}: pattern {label!r} has no rootLocation inside the folder")
        matches = _matcher(name, entity, label, pattern)
        for path in sorted(list_files(root)):
            if is_data_name(path) and matches("/" + path[len(root) :].lstrip("/")):
                found.append(_partition(name, posixpath.basename(path), path, pattern, attributes))
    return tuple(found)


def _matcher(name: str, entity: str, label: str, pattern: dict[str, Any]) -> Callable[[str], bool]:
    """Whether a path below the pattern's root ("/" + path) matches its regularExpression (searched, as the
    CDM object model does) or its globPattern (`*` within a folder, `**` across folders; without a leading
    "/" it matches in any subfolder)."""
    try:
        if isinstance(pattern.get("regularExpression"), str):
            regex = re.compile(pattern["regularExpression"])
            return lambda path: regex.search(path) is not None
        glob = pattern.get("globPattern")
        if isinstance(glob, str) and glob:
            body = "".join(_GLOB.get(part, re.escape(part)) for part in re.split(r"(\*\*|\*|\?)", glob))
            full = re.compile(body if glob.startswith("/") else "(?:/.*)?/" + body)
            return lambda path: full.fullmatch(path) is not None
    except re.error as exc:
        raise SegmentError(f"{name}: entity {entity!r}: pattern {label!r} is not a valid pattern ({exc})") from None
    raise SegmentError(f"{name}: entity {entity!r}: pattern {label!r} has no globPattern or regularExpression")


_GLOB = {"**": ".*", "*": "[^/]*", "?": "[^/]"}


def _csv_settings(name: str, label: str, location: str, partition: dict[str, Any]) -> dict[str, Any]:
    """The partition's `is.partition.format.CSV` arguments as model.json's CsvFormatSettings (a partition
    without format traits is a CSV file with the trait's defaults: no header, comma, UTF-8)."""
    traits = partition.get("exhibitsTraits") or []
    formats = [t for t in traits if _trait_name(t).startswith("is.partition.format.")]
    settings: dict[str, Any] = {"$type": "CsvFormatSettings"}
    if not formats:
        if not location.lower().endswith(".csv"):
            raise SegmentError(f"{name}: partition {label!r} has no is.partition.format trait; only CSV is read")
        return settings
    if _trait_name(formats[0]) != CSV_TRAIT:
        raise SegmentError(f"{name}: partition {label!r} is {_trait_name(formats[0])}; only CSV partitions are read")
    for argument in formats[0].get("arguments") or [] if isinstance(formats[0], dict) else []:
        if isinstance(argument, dict) and isinstance(argument.get("name"), str):
            settings[argument["name"]] = argument.get("value")
    header = settings.get("columnHeaders", False)
    settings["columnHeaders"] = header is True or str(header).lower() == "true"
    return settings


def _trait_name(trait: object) -> str:
    """A trait reference is a name, or an object whose traitReference is one."""
    return str(trait.get("traitReference", "")) if isinstance(trait, dict) else str(trait)
