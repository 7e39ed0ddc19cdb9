"""Unit tests for shared.mapping: field mapping, email / phone validation, masking and dedupe keys."""

from __future__ import annotations

import re

import orjson
import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.mapping import FieldMapping, MappingError, ProfileMapper
from shared.mapping.identifiers import identifier_key
from shared.mapping.normalize import normalize_email, normalize_phone
from shared.mapping.rows import Profile, Rejection
from shared.privacy import mask_email, mask_phone, mask_text

EMAIL_ONLY = ProfileMapper(FieldMapping({"email": "Email"}))
EMAIL_AND_PHONE = ProfileMapper(FieldMapping({"email": "Email", "phone_number": "Phone"}))


def reference_email(address: str) -> str | None:
    """What email-validator alone says: the ASCII form, or None when it rejects the address."""
    try:
        checked = validate_email(address.strip().lower(), check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError:
        return None
    return (checked.ascii_email or checked.normalized).lower()


def ours(address: str) -> str | None:
    try:
        return normalize_email(address)
    except ValueError:
        return None


def assert_email_mask_is_safe(masked: str, value: str) -> None:
    """A mask shows at most the first character of the local part and of the domain."""
    local, at, domain = value.partition("@")
    shape = re.fullmatch(r"(.?)\*\*\*(?:@(.?)\*\*\*)?", masked, re.S)
    assert shape, masked
    first, second = shape.groups()
    assert first in ("", local[:1]), (masked, value)
    assert second in (None, "", domain[:1] if at else ""), (masked, value)


# --------------------------------------------------------------------------------------------- emails


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("ann@example.com", "ann@example.com", id="plain"),
        pytest.param("  Ann.Lee@Example.COM \t", "ann.lee@example.com", id="trimmed-lowercased"),
        pytest.param("o'brien+promo@mail.example.co.uk", "o'brien+promo@mail.example.co.uk", id="apostrophe-plus"),
        pytest.param("x@a.c", "x@a.c", id="one-letter-tld"),
        pytest.param("x@foo.example", "x@foo.example", id="example-tld-allowed"),
        pytest.param("x@shop.xn--p1ai", "x@shop.xn--p1ai", id="punycode-tld"),
    ],
)
def test_emails_are_trimmed_and_lowercased(raw: str, expected: str) -> None:
    assert normalize_email(raw) == expected
    profile = EMAIL_ONLY.map({"Email": raw})
    assert isinstance(profile, Profile)
    assert profile.attributes == {"email": expected}


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("john.smith.example.com", id="no-at"),
        pytest.param("john.smith@", id="no-domain"),
        pytest.param("@example.com", id="no-local"),
        pytest.param("john.smith@@example.com", id="double-at"),
        pytest.param("john smith@example.com", id="space-local"),
        pytest.param("john.smith@exam ple.com", id="space-domain"),
        pytest.param("john..smith@example.com", id="double-dot"),
        pytest.param("john.smith@example", id="no-dot-in-domain"),
        pytest.param("john.smith@-example.com", id="leading-hyphen"),
        pytest.param("john.smith@exa_mple.com", id="underscore-domain"),
        pytest.param("john.smith@example.c0m1", id="numeric-tld"),
        pytest.param("john.smith@192.168.1.1", id="ip-address"),
        pytest.param('"john smith"@example.com', id="quoted-local"),
        pytest.param("john.smith@[192.168.1.1]", id="domain-literal"),
        pytest.param("john.smith@exam\u200bple.com", id="zero-width-space"),
        pytest.param("john.smith@xn--zz.com", id="bad-punycode"),
        pytest.param("john.smith@\u0660\u0661\u0662\u0663", id="idna-error-that-quotes-the-domain"),
        pytest.param("john.smith@" + "b" * 70 + ".com", id="label-too-long"),
        pytest.param("j" * 250 + "@example.com", id="too-long"),
    ],
)
def test_invalid_emails_are_rejected_without_the_address_in_the_reason(raw: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        normalize_email(raw)
    message = str(excinfo.value)
    local, _, domain = raw.partition("@")
    assert raw.lower() not in message and raw not in message
    assert len(local) < 4 or local.lower() not in message.lower()
    assert len(domain) < 4 or domain.lower() not in message.lower()

    rejection = EMAIL_ONLY.map({"Email": raw})
    assert isinstance(rejection, Rejection)
    assert rejection.field == "email"
    assert rejection.reason.startswith("email is not valid")
    assert raw not in rejection.reason and raw.lower() not in rejection.reason
    assert raw not in rejection.masked
    assert_email_mask_is_safe(rejection.masked, raw.strip())


@pytest.mark.parametrize(
    ("raw", "ascii_form"),
    [
        pytest.param("user@bücher.de", "user@xn--bcher-kva.de", id="umlaut"),
        pytest.param("User@BÜCHER.de", "user@xn--bcher-kva.de", id="upper-case"),
        pytest.param("user@例え.jp", "user@xn--r8jz45g.jp", id="japanese"),
        pytest.param("user@mail.яндекс.рф", "user@mail.xn--d1acpjx3f.xn--p1ai", id="cyrillic-tld"),
        pytest.param("user@xn--bcher-kva.de", "user@xn--bcher-kva.de", id="already-punycode"),
    ],
)
def test_unicode_domains_are_accepted_and_sent_in_ascii_form(raw: str, ascii_form: str) -> None:
    assert normalize_email(raw) == ascii_form
    profile = EMAIL_ONLY.map({"Email": raw})
    assert isinstance(profile, Profile)
    assert profile.attributes["email"] == ascii_form
    assert profile.key == identifier_key("email", ascii_form)


@pytest.mark.parametrize(
    "raw", ["jöhn@example.com", "用户@example.com", "ñoño@bücher.de"], ids=["umlaut", "chinese", "idn-domain-too"]
)
def test_internationalized_local_parts_are_rejected_clearly(raw: str) -> None:
    rejection = EMAIL_ONLY.map({"Email": raw})
    assert isinstance(rejection, Rejection)
    assert "before the @-sign" in rejection.reason
    assert "not supported" in rejection.reason
    assert raw not in rejection.reason


@pytest.mark.parametrize(
    "raw",
    [
        "ann@shop.test",
        "ann@test",
        "ann@mail.invalid",
        "ann@localhost",
        "ann@printer.localhost",
        "ann@mybox.local",
        "ann@facebookcorewwwi.onion",
        "ann@1.168.192.in-addr.arpa",
        "ANN@SHOP.TEST",
    ],
)
def test_special_use_domains_are_rejected(raw: str) -> None:
    with pytest.raises(ValueError):
        normalize_email(raw)
    assert reference_email(raw) is None
    assert isinstance(EMAIL_ONLY.map({"Email": raw}), Rejection)


AGREEMENT_TABLE = [
    # plain addresses (the fast path)
    "ann@example.com",
    "Ann@Example.com",
    "a.b-c_d+e@sub.domain.co.uk",
    "!#$%&'*+/=?^_`{|}~-@example.org",
    "x@a-b.io",
    "x@a1.b2.cd",
    "x@xn--bcher-kva.de",
    # length limits: 254 characters in all, 253 after the @, 63 per label; the local part is not limited
    "a" * 64 + "@example.com",
    "a" * 65 + "@example.com",
    "a" * 242 + "@example.com",
    "a" * 243 + "@example.com",
    "x@" + ".".join(["a" * 63] * 3) + ".com",
    "x@" + ".".join(["a" * 63] * 4) + ".com",
    "x@" + "a" * 63 + ".com",
    "x@" + "a" * 64 + ".com",
    # RFC 5891 R-LDH labels and Punycode that does not decode
    "x@ab--cd.com",
    "x@mail.ab--cd.com",
    "x@a--b.com",
    "x@abc--d.com",
    "x@xn--zz.com",
    "x@xn--a.com",
    "x@xn--ls8h.la",
    "x@xn----7sb.com",
    # special-use and reserved names
    "x@foo.test",
    "x@foo.invalid",
    "x@foo.local",
    "x@foo.localhost",
    "x@foo.onion",
    "x@foo.arpa",
    "x@foo.example",
    "x@foo.internal",
    # syntax the fast path must leave to email-validator
    "x@a.c",
    "x@a.b1",
    "x@1.2.3.4",
    "x@-a.com",
    "x@a-.com",
    "a..b@x.com",
    ".a@x.com",
    "a.@x.com",
    "x@ＥＸＡＭＰＬＥ.com",
    "x@bücher.de",
    "ü@example.com",
    " x@example.com\n",
]


@pytest.mark.parametrize("address", AGREEMENT_TABLE, ids=lambda a: a if len(a) < 30 else f"{a[:12]}…len{len(a)}")
def test_fast_path_and_email_validator_agree(address: str) -> None:
    assert ours(address) == reference_email(address)


ASCII_ADDRESSES = st.builds(
    lambda local, labels, tld: f"{local}@{'.'.join(labels)}.{tld}",
    st.from_regex(r"\A[a-z0-9._+-]{1,80}\Z"),
    st.lists(
        st.one_of(
            st.from_regex(r"\A[a-z0-9-]{1,66}\Z"),
            st.sampled_from(["ab--cd", "xn--zz", "xn--bcher-kva", "a" * 63, "b" * 64]),
        ),
        min_size=1,
        max_size=5,
    ),
    st.sampled_from(["com", "de", "io", "c", "test", "example", "local", "xn--p1ai", "c0m"]),
)


@settings(max_examples=200, deadline=None)
@given(ASCII_ADDRESSES)
def test_fast_path_and_email_validator_agree_on_generated_ascii_addresses(address: str) -> None:
    assert ours(address) == reference_email(address)


# --------------------------------------------------------------------------------------------- phones


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        pytest.param("(415) 555-0123", "US", "+14155550123", id="us-parentheses"),
        pytest.param("415.555.0123", "US", "+14155550123", id="us-dots"),
        pytest.param("415-555-0123", "US", "+14155550123", id="us-dashes"),
        pytest.param("1-415-555-0123", "US", "+14155550123", id="us-trunk-1"),
        pytest.param("  +1 415 555 0123  ", "US", "+14155550123", id="us-international-spaces"),
        pytest.param("4155550123", "US", "+14155550123", id="us-digits"),
        pytest.param("011 44 20 7946 0958", "US", "+442079460958", id="us-idd-011"),
        pytest.param("+44 (0)20 7946 0958", "US", "+442079460958", id="plus-with-national-zero"),
        pytest.param("020 7946 0958", "GB", "+442079460958", id="gb-national"),
        pytest.param("07911 123456", "GB", "+447911123456", id="gb-mobile"),
        pytest.param("0044 20 7946 0958", "GB", "+442079460958", id="gb-00-prefix"),
        pytest.param("030 123456", "DE", "+4930123456", id="de-national"),
        pytest.param("0049 30 123456", "DE", "+4930123456", id="de-00-prefix"),
        pytest.param("06 12 34 56 78", "FR", "+33612345678", id="fr-national"),
        pytest.param("0033-6-12-34-56-78", "FR", "+33612345678", id="fr-00-prefix-dashes"),
    ],
)
def test_phone_numbers_are_normalized_to_e164_with_the_default_region(raw: str, region: str, expected: str) -> None:
    assert normalize_phone(raw, region) == expected
    mapper = ProfileMapper(FieldMapping({"phone_number": "Phone"}, default_region=region.lower()))
    profile = mapper.map({"Phone": raw})
    assert isinstance(profile, Profile)
    assert profile.attributes == {"phone_number": expected}


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("12345", id="too-short"),
        pytest.param("555-0123", id="no-area-code"),
        pytest.param("+44 20 7946", id="truncated"),
        pytest.param("000 000 0000", id="zeros"),
        pytest.param("+999 123 456", id="no-such-country"),
        pytest.param("call me", id="words"),
        pytest.param("1" * 30, id="too-long"),
        pytest.param("   ", id="blank"),
    ],
)
def test_invalid_phone_numbers_are_rejected(raw: str) -> None:
    with pytest.raises(ValueError):
        normalize_phone(raw, "US")


def test_invalid_phone_rejects_the_row_and_shows_only_its_last_two_digits() -> None:
    rejection = EMAIL_AND_PHONE.map({"Email": "ann@example.com", "Phone": "415 555 01"})
    assert isinstance(rejection, Rejection)
    assert rejection.field == "phone_number"
    assert "E.164" in rejection.reason
    assert "4155" not in rejection.reason + rejection.masked
    assert rejection.masked == "+***01"


# --------------------------------------------------------------------------------------------- rows


def test_row_with_only_a_phone_is_a_profile_when_phone_is_mapped() -> None:
    profile = EMAIL_AND_PHONE.map({"Email": "", "Phone": "(415) 555-0123"})
    assert isinstance(profile, Profile)
    assert profile.attributes == {"phone_number": "+14155550123"}
    assert profile.key == identifier_key("phone", "+14155550123")
    assert profile.masked == "+***23"


@pytest.mark.parametrize(
    "row",
    [
        pytest.param({"Email": "", "Phone": ""}, id="empty"),
        pytest.param({"Email": "   ", "Phone": "\t"}, id="whitespace"),
        pytest.param({"Email": None, "Phone": None}, id="null"),
        pytest.param({"Name": "Ann"}, id="columns-absent"),
    ],
)
def test_row_without_any_identifier_is_rejected(row: dict[str, object]) -> None:
    rejection = EMAIL_AND_PHONE.map(row)
    assert isinstance(rejection, Rejection)
    assert rejection.reason.startswith("no identifier")
    assert "email" in rejection.reason and "phone_number" in rejection.reason


def test_external_id_is_an_identifier_up_to_255_characters() -> None:
    mapper = ProfileMapper(FieldMapping({"external_id": "Id"}))
    profile = mapper.map({"Id": " " + "k" * 255 + " "})
    assert isinstance(profile, Profile)
    assert profile.attributes == {"external_id": "k" * 255}
    assert profile.key == identifier_key("external_id", "k" * 255)

    rejection = mapper.map({"Id": "k" * 256})
    assert isinstance(rejection, Rejection)
    assert rejection.field == "external_id"
    assert "255" in rejection.reason
    assert "k" * 10 not in rejection.masked

    empty = mapper.map({"Id": ""})
    assert isinstance(empty, Rejection) and empty.reason == "no identifier: external_id empty"


def test_json_numbers_in_identifier_columns_are_read_as_text() -> None:
    mapper = ProfileMapper(FieldMapping({"phone_number": "Phone", "external_id": "Id"}))
    profile = mapper.map({"Phone": 4155550123, "Id": 12345})
    assert isinstance(profile, Profile)
    assert profile.attributes == {"phone_number": "+14155550123", "external_id": "12345"}


@pytest.mark.parametrize("column", ["Email", "Phone", "Id"])
@pytest.mark.parametrize(
    ("value", "kind"),
    [
        pytest.param(["ann@example.com"], "list", id="list"),
        pytest.param({"address": "ann@example.com"}, "dict", id="object"),
        pytest.param(True, "bool", id="bool"),
    ],
)
def test_json_lists_and_objects_in_identifier_columns_are_rejected(column: str, value: object, kind: str) -> None:
    mapper = ProfileMapper(FieldMapping({"email": "Email", "phone_number": "Phone", "external_id": "Id"}))
    row: dict[str, object] = {"Email": "ann@example.com", "Phone": "+14155550123", "Id": "abc", column: value}
    rejection = mapper.map(row)
    assert isinstance(rejection, Rejection)
    assert kind in rejection.reason and "not text" in rejection.reason
    assert column in rejection.reason
    assert "ann@example.com" not in rejection.reason + rejection.masked


def test_fields_are_placed_and_empty_values_left_out() -> None:
    mapping = FieldMapping(
        fields={
            "email": "Email",
            "phone_number": "Phone",
            "first_name": "First",
            "last_name": "Last",
            "organization": "Company",
            "city": "City",
            "country": "Country",
            "zip": "Zip",
            "region": "State",
        },
        properties={"Tier": "Loyalty Tier", "Points": "points", "Tags": "tags", "Notes": "notes", "Score": "score"},
    )
    row = {
        "Email": "Ann@Example.com",
        "Phone": "",
        "First": " Ann ",
        "Last": "",
        "Company": None,
        "City": " Springfield ",
        "Country": "US",
        "Zip": "",
        "State": None,
        "Tier": "Gold",
        "Points": 0,
        "Tags": ["a", "b"],
        "Notes": "",
        "Score": None,
        "Unmapped": "x",
    }
    profile = ProfileMapper(mapping).map(row)
    assert isinstance(profile, Profile)
    assert profile.attributes == {
        "email": "ann@example.com",
        "first_name": "Ann",
        "location": {"city": "Springfield", "country": "US"},
        "properties": {"Loyalty Tier": "Gold", "points": 0, "tags": ["a", "b"]},
    }


def test_empty_location_and_properties_are_left_out_entirely() -> None:
    mapping = FieldMapping({"email": "Email", "city": "City"}, {"Tier": "tier"})
    profile = ProfileMapper(mapping).map({"Email": "ann@example.com", "City": "", "Tier": ""})
    assert isinstance(profile, Profile)
    assert profile.attributes == {"email": "ann@example.com"}


def test_email_is_the_primary_identifier_when_both_are_given() -> None:
    profile = EMAIL_AND_PHONE.map({"Email": "Ann@Example.com", "Phone": "415 555 0123"})
    assert isinstance(profile, Profile)
    assert profile.attributes == {"email": "ann@example.com", "phone_number": "+14155550123"}
    assert profile.key == identifier_key("email", "ann@example.com")
    assert profile.masked == "a***@e***"


# --------------------------------------------------------------------------------------------- FieldMapping


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"fields": {}}, "identifier", id="nothing-mapped"),
        pytest.param({"fields": {"first_name": "First"}}, "identifier", id="no-identifier"),
        pytest.param({"fields": {"email": "Email", "emial": "x"}}, "unknown profile field(s) emial", id="unknown"),
        pytest.param({"fields": {"email": "Email"}, "default_region": "XX"}, "not a known ISO 3166", id="bad-region"),
        pytest.param({"fields": {"email": "Email"}, "default_region": ""}, "default_region", id="empty-region"),
        pytest.param({"fields": {"email": ""}}, "'email': the column name is empty", id="empty-identifier-column"),
        pytest.param({"fields": {"email": "  "}}, "'email': the column name is empty", id="blank-identifier-column"),
        pytest.param({"fields": {"email": "Email", "city": ""}}, "'city': the column name is empty", id="empty-column"),
        pytest.param({"properties": {"": "tier"}}, "properties: a column name is empty", id="empty-property-column"),
        pytest.param({"properties": {"Tier": ""}}, "properties.Tier: invalid property name", id="empty-property-name"),
        pytest.param({"properties": {"Tier": "a\x01b"}}, "invalid property name", id="control-char"),
        pytest.param({"properties": {"Tier": "tier\n"}}, "invalid property name", id="trailing-newline"),
        pytest.param({"properties": {"Tier": "t" * 256}}, "invalid property name", id="name-too-long"),
    ],
)
def test_bad_mappings_are_mapping_errors_with_a_clear_message(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(MappingError) as excinfo:
        FieldMapping(**kwargs)  # type: ignore[arg-type]
    assert message in str(excinfo.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param({"email": 5}, "must name a column", id="column-not-a-string"),
        pytest.param({"email": "Email", "properties": ["Tier"]}, "properties must be an object", id="properties-list"),
        pytest.param({"email": "Email", "properties": {"Tier": 1}}, "invalid property name", id="property-not-text"),
        pytest.param({"email": "Email", "default_region": 44}, "region: must be an ISO 3166", id="region-number"),
        pytest.param({"Email": "Email"}, "unknown profile field(s) Email", id="field-case"),
    ],
)
def test_bad_mapping_json_is_a_mapping_error(data: dict[str, object], message: str) -> None:
    with pytest.raises(MappingError) as excinfo:
        FieldMapping.from_dict(data)
    assert message in str(excinfo.value)


def test_long_property_name_at_the_limit_is_accepted() -> None:
    assert FieldMapping(properties={"Tier": "t" * 255}).properties == {"Tier": "t" * 255}


@pytest.mark.parametrize(
    "mapping",
    [
        pytest.param(FieldMapping(), id="default"),
        pytest.param(FieldMapping({"phone_number": "Mobile"}, default_region="gb"), id="phone-gb"),
        pytest.param(
            FieldMapping(
                {"email": "E-mail", "external_id": "Customer ID", "first_name": "First", "city": "Town"},
                {"Tier": "Loyalty Tier", "Pts": "points"},
                "DE",
            ),
            id="full",
        ),
    ],
)
def test_field_mapping_round_trips_through_its_json_form(mapping: FieldMapping) -> None:
    assert FieldMapping.from_dict(mapping.to_dict()) == mapping
    assert FieldMapping.from_dict(orjson.loads(orjson.dumps(mapping.to_dict()))) == mapping


def test_from_dict_fills_in_defaults() -> None:
    mapping = FieldMapping.from_dict({"email": "Email", "properties": None, "default_region": None})
    assert mapping == FieldMapping({"email": "Email"}, {}, "US")
    assert mapping.to_dict() == {"email": "Email", "properties": {}, "default_region": "US"}


def test_missing_columns_lists_every_mapped_column_absent_from_the_header() -> None:
    mapping = FieldMapping({"email": "Email", "phone_number": "Phone", "city": "City"}, {"Tier": "tier"})
    assert mapping.missing_columns(["Email", "City", "Other"]) == ["Phone", "Tier"]
    assert mapping.missing_columns(["Tier", "Phone", "City", "Email"]) == []
    assert mapping.missing_columns([]) == ["City", "Email", "Phone", "Tier"]
    assert mapping.missing_columns(["email", "phone", "city", "tier"]) == ["City", "Email", "Phone", "Tier"]


# --------------------------------------------------------------------------------------------- masks and keys


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("ann.lee@example.com", "a***@e***", id="address"),
        pytest.param("a@b.co", "a***@b***", id="short"),
        pytest.param("@example.com", "***@e***", id="no-local"),
        pytest.param("johnsmith", "j***", id="no-at"),
        pytest.param("johnsmith@", "j***", id="no-domain"),
        pytest.param("jo", "j***", id="tiny"),
        pytest.param("", "***", id="empty"),
    ],
)
def test_email_mask_shows_only_the_first_character_of_local_part_and_domain(value: str, expected: str) -> None:
    assert mask_email(value) == expected
    assert_email_mask_is_safe(mask_email(value), value)


@given(st.text())
def test_email_mask_never_reveals_more_than_two_first_characters(value: str) -> None:
    assert_email_mask_is_safe(mask_email(value), value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("+14155550123", "+***23", id="e164"),
        pytest.param("(415) 555-0199", "+***99", id="formatted"),
        pytest.param("1234", "+***34", id="four-digits"),
        pytest.param("123", "***", id="three-digits"),
        pytest.param("call me", "***", id="no-digits"),
    ],
)
def test_phone_mask_shows_only_the_last_two_digits(value: str, expected: str) -> None:
    assert mask_phone(value) == expected


@given(st.text())
def test_phone_mask_never_reveals_more_than_the_last_two_digits(value: str) -> None:
    masked = mask_phone(value)
    shown = re.sub(r"\D", "", masked)
    digits = re.sub(r"\D", "", value)
    assert len(shown) <= 2
    assert digits.endswith(shown)


def test_text_mask_hides_short_values_and_the_middle_of_long_ones() -> None:
    assert mask_text("abcd") == "***"
    assert mask_text("customer-0042") == "cu***42"
    assert mask_text(12345678) == "12***78"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "variant",
    ["ann@example.com", "ANN@EXAMPLE.COM", "  Ann@Example.com  ", "\tann@example.COM\n"],
    ids=["lower", "upper", "spaces", "tab-newline"],
)
def test_dedupe_key_is_the_same_for_the_same_email_whatever_its_case_or_spaces(variant: str) -> None:
    profile = EMAIL_ONLY.map({"Email": variant})
    assert isinstance(profile, Profile)
    assert profile.key == identifier_key("email", "ann@example.com")


def test_dedupe_key_differs_between_identifier_kinds_and_values() -> None:
    keys = {
        # Normalized identifiers of different kinds never look alike (emails hold '@', phones
        # start with '+'); an external id that copies either one must still be its own key.
        identifier_key("phone", "+14155550123"),
        identifier_key("external_id", "+14155550123"),
        identifier_key("external_id", "ann@example.com"),
        identifier_key("email", "ann@example.com"),
        identifier_key("email", "bob@example.com"),
    }
    assert len(keys) == 5
    by_email = EMAIL_AND_PHONE.map({"Email": "ann@example.com", "Phone": "+14155550123"})
    by_phone = EMAIL_AND_PHONE.map({"Email": "", "Phone": "+14155550123"})
    assert isinstance(by_email, Profile) and isinstance(by_phone, Profile)
    assert by_email.key != by_phone.key


# --------------------------------------------------------------------------------------------- properties

FUZZ_MAPPER = ProfileMapper(
    FieldMapping(
        {"email": "e", "phone_number": "p", "external_id": "x", "first_name": "f", "city": "c", "latitude": "lat"},
        {"t": "Tier", "n": "notes"},
        "GB",
    )
)
EMAILISH = st.from_regex(r"\A\s?[a-zA-Z0-9.+_'-]{0,12}@[a-zA-Z0-9à-ÿ.-]{0,14}\s?\Z")
PHONEISH = st.from_regex(r"\A[+0-9 ()./-]{0,18}\Z")
TEXT_VALUES = st.one_of(st.text(max_size=40), EMAILISH, PHONEISH)
JSON_VALUES = st.one_of(
    TEXT_VALUES,
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
)
COLUMNS = st.one_of(st.sampled_from(["e", "p", "x", "f", "c", "lat", "t", "n"]), st.text(max_size=5))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(COLUMNS, TEXT_VALUES, max_size=10))
def test_mapping_any_row_of_text_returns_a_profile_or_a_rejection(row: dict[str, str]) -> None:
    result = FUZZ_MAPPER.map(row)
    assert isinstance(result, Profile | Rejection)
    if isinstance(result, Profile):
        assert isinstance(result.key, int)
        assert set(result.attributes) & {"email", "phone_number", "external_id"}
    else:
        assert result.reason


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(COLUMNS, JSON_VALUES, max_size=10))
def test_mapping_any_json_row_returns_a_profile_or_a_rejection(row: dict[str, object]) -> None:
    assert isinstance(FUZZ_MAPPER.map(row), Profile | Rejection)
