"""The typed records of a Common Data Model entity (its attribute names and CSV partitions), and the reader of
the older metadata form, model.json (https://learn.microsoft.com/common-data-model/model-json)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from shared.privacy import short_names
from shared.sources.csv_dialect import CsvDialect
from shared.sources.errors import SegmentError


@dataclass(frozen=True)
class CdmPartition:
    """One data file of an entity: its absolute URL and how its CSV is written."""

    name: str
    location: str
    dialect: CsvDialect


@dataclass(frozen=True)
class CdmEntity:
    """An entity of a model.json: its attribute names in column order and its partitions in order."""

    name: str
    attributes: tuple[str, ...]
    partitions: tuple[CdmPartition, ...]


def is_cdm_model(data: bytes) -> bool:
    """Whether a model.json is a Common Data Model folder's (it lists entities), not some other marker."""
    try:
        model = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return isinstance(model, dict) and isinstance(model.get("entities"), list)


def read_entity(name: str, data: bytes, entity: str | None) -> CdmEntity:
    """The entity `entity` of the model.json `name` (the only one when None); a file that is not a
    model.json, or lacks the entity, is refused naming the file."""
    model = metadata_json(name, data, "a model.json")
    entities = model.get("entities") if isinstance(model, dict) else None
    if not isinstance(entities, list):
        raise SegmentError(f"{name}: no 'entities' list, so not a Common Data Model model.json")
    local = {
        e.get("name"): e for e in entities if isinstance(e, dict) and e.get("$type", "LocalEntity") == "LocalEntity"
    }
    return _entity(name, local[chosen_entity(name, local, entity)])


def metadata_json(name: str, data: bytes, what: str) -> Any:
    """A CDM metadata file's JSON; one that is not JSON is refused, naming the file and `what` it should be."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise SegmentError(f"{name}: not JSON ({exc.msg} at line {exc.lineno}), so not {what}") from None


def chosen_entity(name: str, local: dict[Any, Any], entity: str | None) -> str:
    """The entity to export among the metadata file's local entities: `entity`, or the only one when None."""
    names = short_names(sorted(str(n) for n in local)) or "none"
    if entity is None:
        if len(local) != 1:
            raise SegmentError(f"{name}: name the entity to export (entities: {names})")
        entity = str(next(iter(local)))
    if entity not in local:
        raise SegmentError(f"{name}: no entity {entity!r} (entities: {names})")
    return entity


def _entity(name: str, data: dict[str, Any]) -> CdmEntity:
    entity = str(data["name"])
    attributes = tuple(str(a.get("name", "")) for a in data.get("attributes") or [] if isinstance(a, dict))
    if not attributes or not all(attributes):
        raise SegmentError(f"{name}: entity {entity!r} lists no attributes (or one without a name)")
    partitions = []
    if not data.get("partitions"):
        raise SegmentError(f"{name}: entity {entity!r} lists no partitions")
    for item in data.get("partitions") or []:
        if not isinstance(item, dict) or not isinstance(item.get("location"), str):
            raise SegmentError(f"{name}: entity {entity!r} has a partition without a location")
        partitions.append(
            CdmPartition(str(item.get("name", "")), item["location"], csv_settings_dialect(name, item, attributes))
        )
    return CdmEntity(entity, attributes, tuple(partitions))


def csv_settings_dialect(name: str, partition: dict[str, Any], attributes: tuple[str, ...]) -> CsvDialect:
    """The CSV dialect of a partition's fileFormatSettings (columnHeaders false unless stated)."""
    settings = partition.get("fileFormatSettings") or {}
    kind = settings.get("$type", "CsvFormatSettings")
    if kind != "CsvFormatSettings":
        raise SegmentError(f"{name}: partition {partition.get('name')!r} is {kind}; only CSV partitions are read")
    if settings.get("quoteStyle", "QuoteStyle.Csv") != "QuoteStyle.Csv":
        raise SegmentError(f"{name}: partition {partition.get('name')!r}: only QuoteStyle.Csv is read")
    encoding = str(settings.get("encoding", "UTF-8")).replace("-", "").lower()
    if encoding != "utf8":
        raise SegmentError(f"{name}: partition {partition.get('name')!r} is {settings['encoding']}; only UTF-8 is read")
    header = bool(settings.get("columnHeaders", False))
    return CsvDialect(header, None if header else attributes, None, '"', str(settings.get("delimiter", ",")))


def entity_dialect(name: str, entity: CdmEntity) -> CsvDialect:
    """The one dialect of all the entity's partitions (a segment is read in one dialect)."""
    dialects = {p.dialect for p in entity.partitions}
    if len(dialects) > 1:
        raise SegmentError(f"{name}: the partitions of {entity.name!r} are not all written alike")
    return dialects.pop()
