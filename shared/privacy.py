"""Masking and shortening: what reports, logs and errors show in place of an email, a phone number,
an id, or a name too long to quote whole."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

_EMAIL_LIKE = re.compile(r"[^\s'\"<>()\[\],;:]+@[^\s'\"<>()\[\],;:]+")
_PHONE_LIKE = re.compile(r"\+\d[\d ().-]{5,}\d")
# A name (a column, an entity) quoted in a reason is cut to this many characters, so a header of
# one 40,000-character column cannot make a reason too long to store.
MAX_QUOTED_CHARS = 64
# A list of names quoted in a reason names at most this many.
MAX_QUOTED_NAMES = 30


def mask_email(email: str) -> str:
    local, _, domain = email.partition("@")
    if not domain:
        return f"{local[:1]}***"
    return f"{local[:1]}***@{domain[:1]}***"


def mask_text(value: str) -> str:
    value = str(value)
    if len(value) <= 4:
        return "***"
    return f"{value[:2]}***{value[-2:]}"


def mask_phone(phone: str) -> str:
    digits = re.sub(r"\D", "", phone)
    return f"+***{digits[-2:]}" if len(digits) >= 4 else "***"


def mask_attributes(attributes: Mapping[str, object]) -> str:
    """The masked primary identifier of a profile's attributes (for reports and logs)."""
    if attributes.get("email"):
        return mask_email(str(attributes["email"]))
    if attributes.get("phone_number"):
        return mask_phone(str(attributes["phone_number"]))
    return mask_text(str(attributes.get("external_id") or ""))


def mask_identifier_text(text: str) -> str:
    """The masked form of an `identifier_text` (an email holds "@", a phone number never does)."""
    if text.startswith("x:"):
        return mask_text(text[2:])
    return mask_email(text) if "@" in text else mask_phone(text)


def redact(text: str) -> str:
    """Text with anything shaped like an email or an (E.164) phone number masked: an error may quote
    the profile it is about, and reasons go into reports and logs."""
    text = _EMAIL_LIKE.sub(lambda m: mask_email(m.group()), text)
    return _PHONE_LIKE.sub(lambda m: mask_phone(m.group()), text)


def short_name(name: object, limit: int = MAX_QUOTED_CHARS) -> str:
    """`name` whole when it has at most `limit` characters; else its start and how long it is:
    "ccc…(40,000 characters)"."""
    text = str(name)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…({len(text):,} characters)"


def short_names(names: Iterable[object], most: int = MAX_QUOTED_NAMES) -> str:
    """At most `most` names, each cut by short_name, joined by commas; the rest counted ("… and 12 more")."""
    listed = list(names)
    shown = ", ".join(short_name(n) for n in listed[:most])
    return shown + (f", … and {len(listed) - most:,} more" if len(listed) > most else "")
