"""Email and phone normalisation: the everyday shapes checked quickly, the rest by email-validator
and phonenumbers, with the outcomes of repeated unusual values kept."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

import phonenumbers
from email_validator import EmailNotValidError, validate_email

# plain_email accepts only addresses that email-validator accepts too, so that the everyday address
# skips its slower checks. This expression gives the shape; plain_email adds what the expression
# cannot say: at most 254 characters, and no "--" anywhere (RFC 5891 reserves "--" in the third and
# fourth characters of a label, and "xn--" labels are Punycode, which only email-validator can check).
_EMAIL_SHAPE = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@[a-z0-9.-]{1,252}\.[a-z]{2,63}").fullmatch
SPECIAL_USE_TLDS = {"arpa", "invalid", "local", "localhost", "onion", "test", "example", "internal"}


def plain_email(email: str) -> bool:
    """True for the everyday address (dot-atom local part, plain ASCII domain, real TLD)."""
    if not _EMAIL_SHAPE(email) or ".." in email or "--" in email or len(email) > 254:
        return False
    local, _, domain = email.partition("@")
    if local[0] == "." or local[-1] == "." or domain[0] in ".-" or ".-" in domain or "-." in domain:
        return False
    if len(domain) > 63 and max(len(label) for label in domain.split(".")) > 63:
        return False
    return domain[domain.rfind(".") + 1 :] not in SPECIAL_USE_TLDS


def normalize_email(raw: str) -> str:
    """Trimmed, lowercased and syntax-checked (no DNS); raises ValueError with the reason."""
    email, reason = _email_outcome(raw)
    if reason:
        raise ValueError(reason)
    return email


def _check_email(raw: str) -> tuple[str, str]:
    """(the address, "") or ("", why it is not one)."""
    email = raw.strip().lower()
    if plain_email(email):
        return email, ""
    try:
        checked = validate_email(email, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        return "", _generic_reason(str(exc))
    return (checked.ascii_email or checked.normalized).lower(), ""


def _generic_reason(message: str) -> str:
    """email-validator's reason without the parts that may quote the address (a label, characters
    of it): what follows a colon or sits in brackets. Reports must never hold the address."""
    message = message.removeprefix("After Unicode normalization: ")
    cut = min((i for i in (message.find(": "), message.find(" (")) if i >= 0), default=len(message))
    return message[:cut].rstrip(" .") + "."


_E164_FORM = re.compile(r"\+[1-9][0-9]{6,14}").fullmatch
_NANP = re.compile(r"\+1[2-9][0-9]{2}[2-9][0-9]{6}").fullmatch


def quick_e164(value: str) -> bool:
    """Already E.164 with a real country code and a possible length for it (and the NANP shape
    for +1): the common case for CDP data, checked without parsing."""
    if not _E164_FORM(value):
        return False
    if value[1] == "1":
        return _NANP(value) is not None
    for size in (1, 2, 3):
        lengths = possible_lengths(value[1 : 1 + size])
        if lengths is not None:
            return len(value) - 1 - size in lengths
    return False


@functools.cache
def possible_lengths(code: str) -> frozenset[int] | None:
    """National number lengths after a country calling code, from phonenumbers' own metadata
    (None for no such code). A code's regions are loaded when it is first asked for: loading all
    ~250 of them costs 75 ms at every start."""
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(int(code)) if code.isdigit() else None
    if not regions or str(int(code)) != code:
        return None
    found: set[int] = set()
    for region in regions:
        meta = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(int(code), region)
        if meta is not None and meta.general_desc is not None:
            found.update(meta.general_desc.possible_length or ())
    return frozenset(found) or None


def normalize_phone(raw: str, region: str) -> str:
    """E.164 form, using `region` for numbers without a country code; raises ValueError."""
    phone, reason = _phone_outcome(raw, region)
    if reason:
        raise ValueError(reason)
    return phone


def _check_phone(raw: str, region: str) -> tuple[str, str]:
    """(the E.164 number, "") or ("", why it cannot be one)."""
    value = raw.strip()
    if not value:
        return "", "empty"
    try:
        parsed = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return "", "not a phone number"
    if not phonenumbers.is_valid_number(parsed):
        return "", f"not a valid phone number for its country (default region {region})"
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164), ""


# The full checks cost 20-50 µs a value, and the values that need them (the unusual and the invalid)
# repeat in real segments ("n/a", "none", a shop's placeholder address), so their outcomes are kept:
# at most 4,096 values of up to 320 characters, a few MB at worst.
_REMEMBERED = 4096
_REMEMBERED_LENGTH = 320


def _remembered(check: Callable[..., tuple[str, str]]) -> Callable[..., tuple[str, str]]:
    """`check` with the outcomes of its last _REMEMBERED values of up to _REMEMBERED_LENGTH kept."""
    kept = functools.lru_cache(maxsize=_REMEMBERED)(check)

    def outcome(raw: str, *context: str) -> tuple[str, str]:
        return (kept if len(raw) <= _REMEMBERED_LENGTH else check)(raw, *context)

    return outcome


_email_outcome = _remembered(_check_email)
_phone_outcome = _remembered(_check_phone)
