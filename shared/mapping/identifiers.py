"""A profile's identifiers as text, and the dedupe keys hashed from them."""

from __future__ import annotations

from collections.abc import Mapping

from orjson import dumps

from shared.mapping.fingerprints import text_fingerprints


def identifier_key(kind: str, value: str) -> int:
    """The dedupe key of one identifier (chunks get theirs from `fingerprints` all at once)."""
    return int(text_fingerprints([value if kind != "external_id" else "x:" + value])[0])


def serialize_profile(attributes: Mapping[str, object]) -> bytes:
    return dumps({"type": "profile", "attributes": attributes})


def identifier_text(attributes: Mapping[str, object]) -> str:
    """The primary identifier of a profile as its dedupe key hashes it: the email, else the
    phone number, else "x:" + the external id."""
    if attributes.get("email"):
        return str(attributes["email"])
    if attributes.get("phone_number"):
        return str(attributes["phone_number"])
    return "x:" + str(attributes.get("external_id") or "")


def attributes_key(attributes: Mapping[str, object]) -> int:
    """The dedupe key of a profile, from its (normalized) attributes."""
    return int(text_fingerprints([identifier_text(attributes)])[0])
