"""The field mapping and turning rows into Klaviyo profiles: normalisation, row-wise and column-wise."""

from shared.mapping.columnar import ColumnarMapper, ColumnsMapped, column_type_problem
from shared.mapping.config import DEFAULT_REGION, STANDARD_FIELDS, FieldMapping, MappingError
from shared.mapping.consent import (
    CHANNELS,
    DEFAULT_CONSENT_VALUES,
    ChunkConsent,
    ConsentReader,
    NotSubscribed,
    SubscribeOptions,
    Subscribers,
)
from shared.mapping.fingerprints import fingerprints, text_fingerprints
from shared.mapping.identifiers import identifier_text
from shared.mapping.rows import MappedRows, ProfileMapper

__all__ = [
    "CHANNELS",
    "ChunkConsent",
    "ConsentReader",
    "DEFAULT_CONSENT_VALUES",
    "NotSubscribed",
    "SubscribeOptions",
    "Subscribers",
    "ColumnarMapper",
    "ColumnsMapped",
    "DEFAULT_REGION",
    "FieldMapping",
    "MappedRows",
    "MappingError",
    "ProfileMapper",
    "STANDARD_FIELDS",
    "column_type_problem",
    "fingerprints",
    "identifier_text",
    "text_fingerprints",
]
