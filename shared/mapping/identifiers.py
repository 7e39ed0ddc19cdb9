"""A profile's primary identifier as text, and the dedupe keys hashed from it."""

from __future__ import annotations

from collections.abc import Mapping

from shared.mapping.fingerprints import text_fingerprints


def identifier_text(attributes: Mapping[str, object]) -> str:
    """The primary identifier of a profile as its dedupe key hashes it: the email, else the
    phone number, else "x:" + the external id."""
    if attributes.get("email"):
        return str(attributes["email"])
    if attributes.get("phone_number"):
        return str(attributes["phone_number"])
    return "x:" + str(attributes.get("external_id") or "")


def attributes_key(attributes: Mapping[str, object]) -> int:
    """The dedupe key of a profile, from its (normalised) attributes."""
    return int(text_fingerprints([identifier_text(attributes)])[0])


def identifier_key(kind: str, value: str) -> int:
    """The dedupe key of a profile identified by `value`, an identifier of `kind` (email,
    phone_number or external_id). One at a time: a chunk's keys are fingerprinted all at once."""
    return int(text_fingerprints([value if kind != "external_id" else "x:" + value])[0])
