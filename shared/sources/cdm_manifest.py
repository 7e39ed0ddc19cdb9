"""The newer Common Data Model metadata form: a folder governed by `<name>.manifest.cdm.json`
(https://learn.microsoft.com/common-data-model/cdm-manifest). The manifest's `entities` declare each local
entity by `entityPath` (`Customer.cdm.json/Customer`: the entity document, then the definition in it), whose
`hasAttributes` name the columns in order; the declaration's `dataPartitions` list the files in order, each
`location` relative to the manifest (or an adapter path such as `adls:/folder/file.csv`), its CSV written as
the trait `is.partition.format.CSV` says."""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from typing import Any

import orjson

from shared.sources.cdm_model import CdmEntity, CdmPartition, csv_settings_dialect
from shared.sources.errors import SegmentError

MANIFEST_SUFFIX = ".manifest.cdm.json"
CSV_TRAIT = "is.partition.format.CSV"

# Reads a document by its path relative to the manifest's folder, raising SegmentError when it is missing.
DocumentLoader = Callable[[str], bytes]


def is_manifest_name(name: str) -> bool:
    """Whether a file name is a CDM manifest's (`<name>.manifest.cdm.json`)."""
    base = posixpath.basename(name)
    return base.endswith(MANIFEST_SUFFIX) and len(base) > len(MANIFEST_SUFFIX)


def read_manifest_entity(name: str, data: bytes, entity: str | None, load: DocumentLoader) -> CdmEntity:
    """The entity `entity` declared by the manifest `name` (the only one when None), its attributes read
    from its entity document; a manifest that is not JSON, lacks the entity or its document is refused."""
    manifest = _json(name, data, "a manifest.cdm.json")
    declared = manifest.get("entities") if isinstance(manifest, dict) else None
    if not isinstance(declared, list):
        raise SegmentError(f"{name}: no 'entities' list, so not a CDM manifest")
    local = {
        e.get("entityName"): e
        for e in declared
        if isinstance(e, dict) and e.get("type", "LocalEntity") == "LocalEntity"
    }
    names = ", ".join(sorted(str(n) for n in local)) or "none"
    if entity is None:
        if len(local) != 1:
            raise SegmentError(f"{name}: name the entity to export (entities: {names})")
        entity = str(next(iter(local)))
    if entity not in local:
        raise SegmentError(f"{name}: no entity {entity!r} (entities: {names})")
    declaration = local[entity]
    attributes = _attributes(name, entity, declaration, load)
    return CdmEntity(entity, attributes, _partitions(name, entity, declaration, attributes))


def _json(name: str, data: bytes, what: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise SegmentError(f"{name}: not JSON ({exc.msg} at line {exc.lineno}), so not {what}") from None


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
    doc = _json(where, load(relative), "an entity definition document")
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
    if declaration.get("dataPartitionPatterns"):
        raise SegmentError(
            f"{name}: entity {entity!r} declares dataPartitionPatterns, which are not read; list its dataPartitions"
        )
    items = declaration.get("dataPartitions") or []
    if not items:
        raise SegmentError(f"{name}: entity {entity!r} lists no dataPartitions")
    partitions = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("location"), str):
            raise SegmentError(f"{name}: entity {entity!r} has a data partition without a location")
        label = str(item.get("name") or posixpath.basename(item["location"]))
        settings = {"name": label, "fileFormatSettings": _csv_settings(name, label, item)}
        partitions.append(CdmPartition(label, item["location"], csv_settings_dialect(name, settings, attributes)))
    return tuple(partitions)


def _csv_settings(name: str, label: str, partition: dict[str, Any]) -> dict[str, Any]:
    """The partition's `is.partition.format.CSV` arguments as model.json's CsvFormatSettings (a partition
    without format traits is a CSV file with the trait's defaults: no header, comma, UTF-8)."""
    traits = partition.get("exhibitsTraits") or []
    formats = [t for t in traits if _trait_name(t).startswith("is.partition.format.")]
    settings: dict[str, Any] = {"$type": "CsvFormatSettings"}
    if not formats:
        if not partition["location"].lower().endswith(".csv"):
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
