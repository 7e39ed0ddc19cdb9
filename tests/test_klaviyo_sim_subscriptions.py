"""Contract tests for the simulator's bulk subscription endpoints, over real HTTP as a client would:
POST /api/profile-subscription-bulk-create-jobs and /api/profile-subscription-bulk-delete-jobs, as
Klaviyo's OpenAPI description (revision 2026-07-15) and ../shared/klaviyo-api.md give them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
import requests

from tools.klaviyo_sim import KlaviyoSimulator, SimulatorConfig
from tools.klaviyo_sim.state import RateLimiter

KEY = "pk_sim_subscription_tests"
JSONAPI = "application/vnd.api+json"
HEADERS = {
    "Authorization": f"Klaviyo-API-Key {KEY}",
    "revision": "2026-07-15",
    "accept": JSONAPI,
    "content-type": JSONAPI,
}
SUBSCRIBE = "/api/profile-subscription-bulk-create-jobs"
UNSUBSCRIBE = "/api/profile-subscription-bulk-delete-jobs"
PAST = "2024-03-01T10:00:00+00:00"
PAST_EPOCH = 1709287200.0
PROFILE_0 = "/data/attributes/profiles/data/0"


@pytest.fixture
def sim() -> Iterator[KlaviyoSimulator]:
    with KlaviyoSimulator(SimulatorConfig(processing_seconds=0.02, seed=3)) as simulator:
        simulator.add_api_key(KEY)
        yield simulator


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:
        http.headers.update(HEADERS)
        yield http


@pytest.fixture
def list_id(sim: KlaviyoSimulator) -> str:
    return sim.create_list("Subscribers")


def subscriber(
    email: str | None = None,
    phone: str | None = None,
    channels: tuple[str, ...] = ("email",),
    consented_at: str | None = PAST,
    **attributes: Any,
) -> dict[str, Any]:
    """A profile asking for marketing consent on the channels (consented_at: None leaves it out)."""
    parameters = {"consent": "SUBSCRIBED"} | ({"consented_at": consented_at} if consented_at else {})
    subscriptions = {channel: {"marketing": dict(parameters)} for channel in channels}
    identifiers = {"email": email, "phone_number": phone}
    body = {name: value for name, value in identifiers.items() if value is not None}
    return {"type": "profile", "attributes": {**body, "subscriptions": subscriptions, **attributes}}


def leaver(email: str | None = None, phone: str | None = None, channels: tuple[str, ...] = ("email",)) -> dict:
    subscriptions = {channel: {"marketing": {"consent": "UNSUBSCRIBED"}} for channel in channels}
    identifiers = {"email": email, "phone_number": phone}
    body = {name: value for name, value in identifiers.items() if value is not None}
    return {"type": "profile", "attributes": {**body, "subscriptions": subscriptions}}


def subscribe_body(
    profiles: list[dict[str, Any]], list_id: str | None = None, historical: bool | None = True
) -> dict[str, Any]:
    attributes: dict[str, Any] = {"profiles": {"data": profiles}}
    if historical is not None:
        attributes["historical_import"] = historical
    data: dict[str, Any] = {"type": "profile-subscription-bulk-create-job", "attributes": attributes}
    if list_id is not None:
        data["relationships"] = {"list": {"data": {"type": "list", "id": list_id}}}
    return {"data": data}


def unsubscribe_body(profiles: list[dict[str, Any]], list_id: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "type": "profile-subscription-bulk-delete-job",
        "attributes": {"profiles": {"data": profiles}},
    }
    if list_id is not None:
        data["relationships"] = {"list": {"data": {"type": "list", "id": list_id}}}
    return {"data": data}


def post(session: requests.Session, sim: KlaviyoSimulator, path: str, body: Any) -> requests.Response:
    return session.post(sim.url + path, data=orjson.dumps(body))


def accepted(response: requests.Response) -> None:
    assert response.status_code == 202, response.text
    assert response.content == b""


def errors_of(response: requests.Response, status: int = 400) -> list[dict[str, Any]]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == JSONAPI
    errors = response.json()["errors"]
    for error in errors:
        assert set(error) >= {"id", "status", "code", "title", "detail", "source"}
        assert error["status"] == status
    return errors


def only_pointer(response: requests.Response) -> str:
    errors = errors_of(response)
    assert len(errors) == 1, errors
    assert errors[0]["code"] == "invalid"
    return errors[0]["source"]["pointer"]


# --------------------------------------------------------------------------- subscribing


def test_historical_import_subscribes_email_and_sms_into_the_list_at_once(
    sim: KlaviyoSimulator, session: requests.Session, list_id: str
) -> None:
    sim.create_list("Double", list_id="DOUBLE", opt_in_process="double_opt_in")
    ann = subscriber("Ann@Example.com", "+15005550006", channels=("email", "sms"))
    response = post(session, sim, SUBSCRIBE, subscribe_body([ann], "DOUBLE"))
    accepted(response)
    assert response.headers["RateLimit-Limit"] == "750"
    consent = sim.consent_of("ann@example.com")
    assert consent is not None
    assert (consent.status("email.marketing"), consent.status("sms.marketing")) == ("SUBSCRIBED", "SUBSCRIBED")
    assert consent.channels["email.marketing"].timestamp == PAST_EPOCH
    assert consent.channels["sms.marketing"].historical_import is True
    assert consent.status("sms.transactional") == "NEVER_SUBSCRIBED"
    # A historical import skips the list's double opt-in: no confirmation, a member straight away.
    assert (consent.pending, consent.confirmations_sent, consent.lists) == ({}, 0, frozenset({"DOUBLE"}))
    assert sim.subscribed("DOUBLE", "email") == {"ann@example.com"}
    assert sim.subscribed("DOUBLE", "sms") == {"+15005550006"}
    assert sim.subscribed(list_id, "email") == set()


def test_single_opt_in_list_subscribes_at_once_with_the_request_time(
    sim: KlaviyoSimulator, session: requests.Session, list_id: str
) -> None:
    before = time.time()
    accepted(
        post(session, sim, SUBSCRIBE, subscribe_body([subscriber("bo@example.com", consented_at=None)], list_id, None))
    )
    consent = sim.consent_of("bo@example.com")
    assert consent is not None and consent.status("email.marketing") == "SUBSCRIBED"
    assert before <= consent.channels["email.marketing"].timestamp <= time.time()
    assert consent.channels["email.marketing"].historical_import is False
    assert [m["email"] for m in sim.list_members(list_id)] == ["bo@example.com"]


def test_double_opt_in_sends_a_confirmation_and_subscribes_only_once_confirmed(
    sim: KlaviyoSimulator, session: requests.Session
) -> None:
    list_id = sim.create_list("Newsletter", opt_in_process="double_opt_in")
    cy = subscriber("cy@example.com", "+447700900123", channels=("email", "sms"), consented_at=None)
    accepted(post(session, sim, SUBSCRIBE, subscribe_body([cy], list_id, historical=False)))
    consent = sim.consent_of("cy@example.com")
    assert consent is not None
    assert consent.status("email.marketing") == consent.status("sms.marketing") == "NEVER_SUBSCRIBED"
    assert consent.pending == {list_id: ("email.marketing", "sms.marketing")}
    assert consent.confirmations_sent == 1
    assert sim.list_member_count(list_id) == 0

    # Confirming by email opts in to email alone; the profile joins the list then.
    assert sim.confirm("cy@example.com", list_id)
    consent = sim.consent_of("cy@example.com")
    assert consent is not None
    assert (consent.status("email.marketing"), consent.status("sms.marketing")) == ("SUBSCRIBED", "NEVER_SUBSCRIBED")
    assert consent.channels["email.marketing"].method == "DOUBLE_OPT_IN"
    assert consent.pending == {list_id: ("sms.marketing",)}
    assert sim.subscribed(list_id, "email") == {"cy@example.com"} and sim.subscribed(list_id, "sms") == set()
    assert sim.confirm("+447700900123", list_id)
    assert sim.subscribed(list_id, "sms") == {"+447700900123"}
    assert not sim.confirm("cy@example.com", list_id)  # nothing left to confirm


def test_confirming_by_text_opts_in_to_sms_and_email(sim: KlaviyoSimulator, session: requests.Session) -> None:
    list_id = sim.create_list("Newsletter", opt_in_process="double_opt_in")
    dee = subscriber("dee@example.com", "+15005550007", channels=("email", "sms"), consented_at=None)
    accepted(post(session, sim, SUBSCRIBE, subscribe_body([dee], list_id, historical=False)))
    assert sim.confirm("+15005550007", list_id)
    consent = sim.consent_of("+15005550007")
    assert consent is not None and consent.pending == {}
    assert (consent.status("email.marketing"), consent.status("sms.marketing")) == ("SUBSCRIBED", "SUBSCRIBED")


def test_without_a_list_the_profile_is_subscribed_and_joins_no_list(
    sim: KlaviyoSimulator, session: requests.Session, list_id: str
) -> None:
    accepted(post(session, sim, SUBSCRIBE, subscribe_body([subscriber("eve@example.com")])))
    consent = sim.consent_of("eve@example.com")
    assert consent is not None and consent.status("email.marketing") == "SUBSCRIBED"
    assert consent.lists == frozenset() and sim.list_member_count(list_id) == 0
    # Without a list the account's default opt-in process decides.
    sim.set_default_opt_in("double_opt_in")
    accepted(
        post(session, sim, SUBSCRIBE, subscribe_body([subscriber("fay@example.com", consented_at=None)], None, None))
    )
    pending = sim.consent_of("fay@example.com")
    assert pending is not None and pending.pending == {None: ("email.marketing",)}
    assert sim.confirm("fay@example.com", None)
    confirmed = sim.consent_of("fay@example.com")
    assert confirmed is not None and confirmed.status("email.marketing") == "SUBSCRIBED"


def test_transactional_sms_alone_records_consent_without_list_membership(
    sim: KlaviyoSimulator, session: requests.Session, list_id: str
) -> None:
    profile = {
        "type": "profile",
        "attributes": {
            "phone_number": "+15005550008",
            "subscriptions": {"sms": {"transactional": {"consent": "SUBSCRIBED", "consented_at": PAST}}},
        },
    }
    accepted(post(session, sim, SUBSCRIBE, subscribe_body([profile], list_id)))
    consent = sim.consent_of("+15005550008")
    assert consent is not None
    assert (consent.status("sms.transactional"), consent.status("sms.marketing")) == ("SUBSCRIBED", "NEVER_SUBSCRIBED")
    assert sim.list_member_count(list_id) == 0


def test_subscribing_updates_the_imported_profile_rather_than_adding_one(
    sim: KlaviyoSimulator, session: requests.Session, list_id: str
) -> None:
    job = {
        "data": {
            "type": "profile-bulk-import-job",
            "attributes": {"profiles": {"data": [{"type": "profile", "attributes": {"email": "gus@example.com"}}]}},
            "relationships": {"lists": {"data": [{"type": "list", "id": list_id}]}},
        }
    }
    assert post(session, sim, "/api/profile-bulk-import-jobs", job).status_code == 202
    assert sim.wait_for_jobs(10)
    imported = sim.consent_of("gus@example.com")
    assert imported is not None and imported.status("email.marketing") == "NEVER_SUBSCRIBED"  # import is not consent
    accepted(post(session, sim, SUBSCRIBE, subscribe_body([subscriber("GUS@example.com", "+15005550009")], list_id)))
    members = sim.list_members(list_id)
    assert [(m["id"], m["email"], m["phone_number"]) for m in members] == [
        (imported.profile_id, "gus@example.com", "+15005550009")
    ]
    assert sim.subscribed(list_id, "email") == {"gus@example.com"}


def test_a_profile_whose_email_and_phone_belong_to_two_profiles_is_skipped(
    sim: KlaviyoSimulator, session: requests.Session, list_id: str
) -> None:
    accepted(post(session, sim, SUBSCRIBE, subscribe_body([subscriber("hal@example.com")])))
    accepted(post(session, sim, SUBSCRIBE, subscribe_body([subscriber(phone="+15005550010", channels=("sms",))])))
    both = subscriber("hal@example.com", "+15005550010", channels=("email", "sms"))
    accepted(post(session, sim, SUBSCRIBE, subscribe_body([both, subscriber("ivy@example.com")], list_id)))
    assert sim.stats["subscriptions"]["profiles_skipped"] == 1
    assert sim.subscribed(list_id, "email") == {"ivy@example.com"}
    hal = sim.consent_of("hal@example.com")
    assert hal is not None and hal.phone_number is None and hal.lists == frozenset()


def test_profiles_are_found_by_id(sim: KlaviyoSimulator, session: requests.Session, list_id: str) -> None:
    accepted(post(session, sim, SUBSCRIBE, subscribe_body([subscriber("jo@example.com")])))
    known = sim.consent_of("jo@example.com")
    assert known is not None
    by_id = subscriber(phone="+15005550011", channels=("sms",)) | {"id": known.profile_id}
    unknown = subscriber(phone="+15005550012", channels=("sms",)) | {"id": "01" + "0" * 24}
    accepted(post(session, sim, SUBSCRIBE, subscribe_body([by_id, unknown], list_id)))
    jo = sim.consent_of("+15005550011")
    assert jo is not None and jo.profile_id == known.profile_id and jo.status("sms.marketing") == "SUBSCRIBED"
    assert sim.consent_of("+15005550012") is None
    assert sim.stats["subscriptions"]["profiles_skipped"] == 1


def test_a_full_call_of_1000_profiles_is_accepted(
    sim: KlaviyoSimulator, session: requests.Session, list_id: str
) -> None:
    profiles = [subscriber(f"p{i}@example.com") for i in range(1000)]
    accepted(post(session, sim, SUBSCRIBE, subscribe_body(profiles, list_id)))
    assert len(sim.subscribed(list_id, "email")) == 1000


def test_the_old_path_with_a_trailing_slash_is_accepted(
    sim: KlaviyoSimulator, session: requests.Session, list_id: str
) -> None:
    accepted(post(session, sim, SUBSCRIBE + "/", subscribe_body([subscriber("kim@example.com")], list_id)))
    assert sim.subscribed(list_id, "email") == {"kim@example.com"}


# --------------------------------------------------------------------------- suppressions


def test_subscribing_lifts_unsubscribe_and_spam_complaint_suppressions_but_not_a_bounce(
    sim: KlaviyoSimulator, session: requests.Session, list_id: str
) -> None:
    accepted(post(session, sim, SUBSCRIBE, subscribe_body([subscriber("lee@example.com")])))
    sim.suppress("lee@example.com", "SPAM_COMPLAINT")
    sim.suppress("lee@example.com", "HARD_BOUNCE")
    suppressed = sim.consent_of("lee@example.com")
    assert suppressed is not None and suppressed.status("email.marketing") == "UNSUBSCRIBED"
    accepted(post(session, sim, SUBSCRIBE, subscribe_body([subscriber("lee@example.com")], list_id)))
    lifted = sim.consent_of("lee@example.com")
    assert lifted is not None and lifted.suppressions == {"HARD_BOUNCE"}
    assert lifted.status("email.marketing") == "SUBSCRIBED"


def test_an_sms_subscription_leaves_email_suppressions(sim: KlaviyoSimulator, session: requests.Session) -> None:
    accepted(post(session, sim, SUBSCRIBE, subscribe_body([subscriber("max@example.com", "+15005550013")])))
    sim.suppress("max@example.com", "SPAM_COMPLAINT")
    sms_only = subscriber("max@example.com", "+15005550013", channels=("sms",))
    accepted(post(session, sim, SUBSCRIBE, subscribe_body([sms_only])))
    consent = sim.consent_of("max@example.com")
    assert consent is not None and consent.suppressions == {"SPAM_COMPLAINT"}


# --------------------------------------------------------------------------- unsubscribing


def test_unsubscribing_withdraws_the_named_channels_and_takes_the_profile_off_the_list(
    sim: KlaviyoSimulator, session: requests.Session, list_id: str
) -> None:
    both = [subscriber("ned@example.com", "+15005550014", channels=("email", "sms")), subscriber("ola@example.com")]
    accepted(post(session, sim, SUBSCRIBE, subscribe_body(both, list_id)))
    accepted(post(session, sim, UNSUBSCRIBE, unsubscribe_body([leaver("ned@example.com")], list_id)))
    ned = sim.consent_of("ned@example.com")
    assert ned is not None
    assert (ned.status("email.marketing"), ned.status("sms.marketing")) == ("UNSUBSCRIBED", "SUBSCRIBED")
    assert ned.suppressions == {"UNSUBSCRIBE"} and ned.lists == frozenset()
    assert sim.subscribed(list_id, "email") == {"ola@example.com"}
    # Subscribing again lifts the unsubscribe suppression.
    accepted(post(session, sim, SUBSCRIBE, subscribe_body([subscriber("ned@example.com")], list_id)))
    again = sim.consent_of("ned@example.com")
    assert again is not None and again.suppressions == frozenset() and again.status("email.marketing") == "SUBSCRIBED"


def test_a_profile_not_on_the_given_list_is_unsubscribed_globally(
    sim: KlaviyoSimulator, session: requests.Session, list_id: str
) -> None:
    other = sim.create_list("Other")
    accepted(post(session, sim, SUBSCRIBE, subscribe_body([subscriber("pat@example.com")], other)))
    accepted(post(session, sim, UNSUBSCRIBE, unsubscribe_body([leaver("pat@example.com")], list_id)))
    pat = sim.consent_of("pat@example.com")
    assert pat is not None and pat.status("email.marketing") == "UNSUBSCRIBED"
    assert sim.subscribed(other, "email") == set() and pat.lists == frozenset({other})


def test_unsubscribing_an_unknown_profile_creates_it_unsubscribed(
    sim: KlaviyoSimulator, session: requests.Session
) -> None:
    accepted(post(session, sim, UNSUBSCRIBE, unsubscribe_body([leaver(phone="+15005550015", channels=("sms",))])))
    consent = sim.consent_of("+15005550015")
    assert consent is not None and consent.status("sms.marketing") == "UNSUBSCRIBED"


def test_an_unsubscribe_cancels_a_pending_confirmation(sim: KlaviyoSimulator, session: requests.Session) -> None:
    list_id = sim.create_list("Newsletter", opt_in_process="double_opt_in")
    accepted(
        post(
            session, sim, SUBSCRIBE, subscribe_body([subscriber("quin@example.com", consented_at=None)], list_id, False)
        )
    )
    accepted(post(session, sim, UNSUBSCRIBE, unsubscribe_body([leaver("quin@example.com")])))
    assert not sim.confirm("quin@example.com", list_id)
    consent = sim.consent_of("quin@example.com")
    assert consent is not None and consent.status("email.marketing") == "UNSUBSCRIBED"
    assert sim.list_member_count(list_id) == 0


def test_unsubscribe_takes_at_most_100_profiles(sim: KlaviyoSimulator, session: requests.Session) -> None:
    profiles = [leaver(f"u{i}@example.com") for i in range(101)]
    assert only_pointer(post(session, sim, UNSUBSCRIBE, unsubscribe_body(profiles))) == "/data/attributes/profiles/data"
    assert sim.consent_of("u0@example.com") is None
    accepted(post(session, sim, UNSUBSCRIBE, unsubscribe_body(profiles[:100])))
    assert sim.stats["subscriptions"]["profiles_unsubscribed"] == 100


# --------------------------------------------------------------------------- validation

Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    """Sets (or, with value ..., removes) the member at a slash-separated path of the body."""

    def mutate(body: dict[str, Any]) -> None:
        *parents, last = path.strip("/").split("/")
        node: Any = body
        for name in parents:
            node = node[int(name)] if isinstance(node, list) else node[name]
        if value is ...:
            del node[last]
        else:
            node[last] = value

    return mutate


_ATTRS = "data/attributes/profiles/data/0/attributes"
_EMAIL_MARKETING = f"{_ATTRS}/subscriptions/email/marketing"


@pytest.mark.parametrize(
    ("mutate", "pointer"),
    [
        pytest.param(_set("data/type", "profile-bulk-import-job"), "/data/type", id="wrong-job-type"),
        pytest.param(
            _set("data/attributes/profiles/data/0/type", "person"), f"{PROFILE_0}/type", id="wrong-profile-type"
        ),
        pytest.param(
            _set("data/relationships/list/data/type", "segment"), "/data/relationships/list/data/type", id="list-type"
        ),
        pytest.param(
            _set("data/relationships/list/data/id", ...), "/data/relationships/list/data/id", id="list-without-id"
        ),
        pytest.param(_set("data/relationships/list", {"data": None}), "/data/relationships/list/data", id="list-null"),
        pytest.param(
            _set("data/relationships", {"lists": {"data": [{"type": "list", "id": "x"}]}}),
            "/data/relationships/lists",
            id="import-style-lists",
        ),
        pytest.param(
            _set("data/relationships/list/data/id", "NoSuch"), "/data/relationships/list/data/id", id="unknown-list"
        ),
        pytest.param(_set("data/attributes/profiles/data", []), "/data/attributes/profiles/data", id="no-profiles"),
        pytest.param(_set(f"{_ATTRS}/email", ...), f"{PROFILE_0}/attributes", id="neither-email-nor-phone"),
        pytest.param(_set(f"{_ATTRS}/email", "ann@@example"), f"{PROFILE_0}/attributes/email", id="bad-email"),
        pytest.param(
            _set(f"{_ATTRS}/subscriptions", {"sms": {"marketing": {"consent": "SUBSCRIBED", "consented_at": PAST}}}),
            f"{PROFILE_0}/attributes/phone_number",
            id="sms-without-phone",
        ),
        pytest.param(
            _set(f"{_ATTRS}/phone_number", "5005550006"), f"{PROFILE_0}/attributes/phone_number", id="phone-no-plus"
        ),
        pytest.param(
            _set(f"{_ATTRS}/phone_number", "+1 500 555 0006"), f"{PROFILE_0}/attributes/phone_number", id="phone-spaces"
        ),
        pytest.param(
            _set(f"{_ATTRS}/phone_number", "+05005550006"), f"{PROFILE_0}/attributes/phone_number", id="phone-zero-cc"
        ),
        pytest.param(
            _set(f"{_EMAIL_MARKETING}/consented_at", "2999-01-01T00:00:00Z"),
            f"/{_EMAIL_MARKETING}/consented_at",
            id="consent-in-future",
        ),
        pytest.param(
            _set(f"{_EMAIL_MARKETING}/consented_at", ...),
            f"/{_EMAIL_MARKETING}/consented_at",
            id="consent-time-missing",
        ),
        pytest.param(
            _set(f"{_EMAIL_MARKETING}/consented_at", "last spring"),
            f"/{_EMAIL_MARKETING}/consented_at",
            id="consent-time-not-a-date",
        ),
        pytest.param(
            _set(f"{_EMAIL_MARKETING}/consent", "UNSUBSCRIBED"), f"/{_EMAIL_MARKETING}/consent", id="consent-value"
        ),
        pytest.param(_set(f"{_EMAIL_MARKETING}/consent", ...), f"/{_EMAIL_MARKETING}/consent", id="consent-missing"),
        pytest.param(
            _set(f"{_EMAIL_MARKETING}/double_opt_in", False),
            f"/{_EMAIL_MARKETING}/double_opt_in",
            id="unknown-consent-field",
        ),
        pytest.param(
            _set(f"{_ATTRS}/subscriptions", ...), f"{PROFILE_0}/attributes/subscriptions", id="no-subscriptions"
        ),
        pytest.param(_set(f"{_ATTRS}/subscriptions", {}), f"{PROFILE_0}/attributes/subscriptions", id="no-channel"),
        pytest.param(
            _set(f"{_ATTRS}/subscriptions/mail", {}), f"{PROFILE_0}/attributes/subscriptions/mail", id="unknown-channel"
        ),
        pytest.param(
            _set(f"{_ATTRS}/subscriptions/email/promotions", {}),
            f"/{_ATTRS}/subscriptions/email/promotions",
            id="unknown-message-type",
        ),
        pytest.param(
            _set(f"{_ATTRS}/first_name", "Ann"), f"{PROFILE_0}/attributes/first_name", id="unknown-profile-attribute"
        ),
        pytest.param(
            _set("data/attributes/profiles/data/0/meta", {}), f"{PROFILE_0}/meta", id="unknown-profile-member"
        ),
        pytest.param(_set("data/attributes/list_id", "x"), "/data/attributes/list_id", id="unknown-job-attribute"),
        pytest.param(_set("data/id", "x"), "/data/id", id="unknown-data-member"),
        pytest.param(
            _set("data/attributes/historical_import", "yes"),
            "/data/attributes/historical_import",
            id="historical-not-bool",
        ),
        pytest.param(
            _set(f"{_ATTRS}/age_gated_date_of_birth", "1/2/1990"),
            f"{PROFILE_0}/attributes/age_gated_date_of_birth",
            id="birth-date",
        ),
        pytest.param(
            _set(f"{_ATTRS}/subscriptions/push", {"marketing": {"consent": "SUBSCRIBED"}, "tokens": []}),
            f"{PROFILE_0}/attributes/subscriptions/push",
            id="push-not-simulated",
        ),
    ],
)
def test_invalid_subscribe_bodies_are_400_with_a_pointer_to_the_field(
    sim: KlaviyoSimulator, session: requests.Session, list_id: str, mutate: Mutation, pointer: str
) -> None:
    body = subscribe_body([subscriber("ann@example.com")], list_id)
    mutate(body)
    assert only_pointer(post(session, sim, SUBSCRIBE, body)) == pointer
    assert sim.consent_of("ann@example.com") is None
    assert sim.list_member_count(list_id) == 0


def test_consented_at_without_historical_import_is_refused(
    sim: KlaviyoSimulator, session: requests.Session, list_id: str
) -> None:
    for historical in (False, None):
        response = post(session, sim, SUBSCRIBE, subscribe_body([subscriber("ann@example.com")], list_id, historical))
        assert only_pointer(response) == f"/{_EMAIL_MARKETING}/consented_at"
    assert sim.consent_of("ann@example.com") is None


def test_more_than_1000_profiles_are_refused(sim: KlaviyoSimulator, session: requests.Session, list_id: str) -> None:
    profiles = [subscriber(f"p{i}@example.com") for i in range(1001)]
    response = post(session, sim, SUBSCRIBE, subscribe_body(profiles, list_id))
    assert only_pointer(response) == "/data/attributes/profiles/data"
    assert "1000" in errors_of(response)[0]["detail"]
    assert sim.list_member_count(list_id) == 0


def test_one_bad_profile_fails_the_whole_request_with_an_error_for_each(
    sim: KlaviyoSimulator, session: requests.Session, list_id: str
) -> None:
    profiles = [
        subscriber("good@example.com"),
        subscriber("not-an-email"),
        subscriber("fine@example.com"),
        subscriber("late@example.com", consented_at="2999-01-01T00:00:00Z"),
    ]
    errors = errors_of(post(session, sim, SUBSCRIBE, subscribe_body(profiles, list_id)))
    assert [e["source"]["pointer"] for e in errors] == [
        "/data/attributes/profiles/data/1/attributes/email",
        "/data/attributes/profiles/data/3/attributes/subscriptions/email/marketing/consented_at",
    ]
    assert all("@" not in e["detail"] for e in errors)  # the submitted value is not echoed
    assert sim.consent_of("good@example.com") is None and sim.list_member_count(list_id) == 0


@pytest.mark.parametrize(
    ("mutate", "pointer"),
    [
        pytest.param(_set("data/type", "profile-subscription-bulk-create-job"), "/data/type", id="wrong-job-type"),
        pytest.param(
            _set(f"{_ATTRS}/subscriptions/email/marketing/consent", "SUBSCRIBED"),
            f"/{_EMAIL_MARKETING}/consent",
            id="consent-value",
        ),
        pytest.param(
            _set(f"{_EMAIL_MARKETING}/consented_at", PAST), f"/{_EMAIL_MARKETING}/consented_at", id="no-consent-time"
        ),
        pytest.param(
            _set("data/attributes/historical_import", True), "/data/attributes/historical_import", id="historical"
        ),
        pytest.param(
            _set("data/attributes/profiles/data/0/id", "01" + "0" * 24), f"{PROFILE_0}/id", id="no-profile-id"
        ),
        pytest.param(_set(f"{_ATTRS}/email", "nope"), f"{PROFILE_0}/attributes/email", id="bad-email"),
        pytest.param(_set(f"{_ATTRS}/email", ...), f"{PROFILE_0}/attributes", id="no-identifier"),
    ],
)
def test_invalid_unsubscribe_bodies_are_400_with_a_pointer_to_the_field(
    sim: KlaviyoSimulator, session: requests.Session, list_id: str, mutate: Mutation, pointer: str
) -> None:
    body = unsubscribe_body([leaver("ann@example.com")], list_id)
    mutate(body)
    assert only_pointer(post(session, sim, UNSUBSCRIBE, body)) == pointer
    assert sim.consent_of("ann@example.com") is None


def test_a_body_that_is_not_json_api_is_refused(sim: KlaviyoSimulator, session: requests.Session) -> None:
    assert only_pointer(session.post(sim.url + SUBSCRIBE, data=b"{not json")) == "/data"
    assert only_pointer(post(session, sim, SUBSCRIBE, [subscriber("ann@example.com")])) == "/data"
    response = session.post(sim.url + SUBSCRIBE, data=b"email=ann", headers={"content-type": "text/plain"})
    assert errors_of(response, 415)[0]["code"] == "unsupported_media_type"
    response = session.get(sim.url + SUBSCRIBE)
    assert errors_of(response, 405) and response.headers["Allow"] == "POST"


# --------------------------------------------------------------------------- scope and rate limits


@pytest.mark.parametrize("path", [SUBSCRIBE, UNSUBSCRIBE])
def test_a_key_without_subscriptions_write_gets_403(sim: KlaviyoSimulator, list_id: str, path: str) -> None:
    sim.add_api_key("pk_import_only", ["lists:write", "lists:read", "profiles:write", "profiles:read"])
    headers = {**HEADERS, "Authorization": "Klaviyo-API-Key pk_import_only"}
    body = subscribe_body([subscriber("ann@example.com")], list_id)
    if path == UNSUBSCRIBE:
        body = unsubscribe_body([leaver("ann@example.com")], list_id)
    response = requests.post(sim.url + path, data=orjson.dumps(body), headers=headers)
    errors = errors_of(response, 403)
    assert (errors[0]["code"], errors[0]["title"]) == (
        "permission_denied",
        "You do not have permission to perform this action.",
    )
    assert "subscriptions:write" in errors[0]["detail"]
    assert sim.consent_of("ann@example.com") is None


def test_rate_limits_are_75_a_second_and_750_a_minute_per_endpoint(
    sim: KlaviyoSimulator, session: requests.Session
) -> None:
    # A hand-driven clock for the limiter keeps its windows exact however slow the machine is.
    now = [1000.0]
    sim.state.rate_limiter = RateLimiter(clock=lambda: now[0])
    body = subscribe_body([subscriber("ann@example.com")])

    def burst(count: int) -> list[int]:
        return [post(session, sim, SUBSCRIBE, body).status_code for _ in range(count)]

    assert burst(76) == [202] * 75 + [429]
    throttled = post(session, sim, SUBSCRIBE, body)
    error = errors_of(throttled, 429)[0]
    assert error["code"] == "throttled" and throttled.headers["Retry-After"] == "1"
    assert "RateLimit-Remaining" not in throttled.headers
    # The delete endpoint has windows of its own.
    assert post(session, sim, UNSUBSCRIBE, unsubscribe_body([leaver("bo@example.com")])).status_code == 202
    for second in range(1, 10):
        now[0] = 1000.0 + second
        assert burst(75) == [202] * 75
    now[0] = 1010.0
    assert burst(1) == [429]
    assert post(session, sim, SUBSCRIBE, body).headers["Retry-After"] == "50"
    now[0] = 1060.0
    assert burst(1) == [202]


# --------------------------------------------------------------------------- reading consent back


def test_list_profiles_carry_subscriptions_only_when_asked(
    sim: KlaviyoSimulator, session: requests.Session, list_id: str
) -> None:
    ray = subscriber("ray@example.com", "+15005550016", channels=("email", "sms"))
    body = subscribe_body([ray], list_id)
    body["data"]["attributes"]["custom_source"] = "Spring import"
    accepted(post(session, sim, SUBSCRIBE, body))
    sim.suppress("ray@example.com", "HARD_BOUNCE")
    url = f"{sim.url}/api/lists/{list_id}/profiles"
    plain = session.get(url).json()["data"][0]["attributes"]
    assert "subscriptions" not in plain
    asked = session.get(url, params={"additional-fields[profile]": "subscriptions"}).json()["data"][0]
    subscriptions = asked["attributes"]["subscriptions"]
    email = subscriptions["email"]["marketing"]
    assert (email["consent"], email["consent_timestamp"], email["custom_method_detail"]) == (
        "SUBSCRIBED",
        PAST,
        "Spring import",
    )
    assert email["can_receive_email_marketing"] is False  # the bounce is a global suppression
    assert [s["reason"] for s in email["suppression"]] == ["HARD_BOUNCE"] and email["double_optin"] is False
    sms = subscriptions["sms"]
    assert (sms["marketing"]["consent"], sms["marketing"]["can_receive_sms_marketing"]) == ("SUBSCRIBED", True)
    assert (sms["transactional"]["consent"], sms["transactional"]["can_receive_sms_transactional"]) == (
        "NEVER_SUBSCRIBED",
        False,
    )


def test_consent_is_readable_through_the_admin_route(sim: KlaviyoSimulator, session: requests.Session) -> None:
    accepted(post(session, sim, SUBSCRIBE, subscribe_body([subscriber("sam@example.com")])))
    found = requests.get(f"{sim.url}/_sim/consent", params={"identifier": "sam@example.com"})
    assert found.status_code == 200
    assert found.json()["channels"]["email.marketing"]["consent"] == "SUBSCRIBED"
    assert found.json()["channels"]["email.marketing"]["timestamp"] == PAST
    assert requests.get(f"{sim.url}/_sim/consent", params={"identifier": "nobody@example.com"}).status_code == 404
