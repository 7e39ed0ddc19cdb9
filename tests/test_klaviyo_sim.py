"""Contract tests for the Klaviyo simulator, driven over real HTTP as a client would."""

from __future__ import annotations

import http.client
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
import requests

from tools.klaviyo_sim import KlaviyoSimulator, SimulatorConfig
from tools.klaviyo_sim.state import RateLimit, RateLimiter

KEY = "pk_sim_contract_tests"
JSONAPI = "application/vnd.api+json"
HEADERS = {
    "Authorization": f"Klaviyo-API-Key {KEY}",
    "revision": "2026-07-15",
    "accept": JSONAPI,
    "content-type": JSONAPI,
}
JOBS = "/api/profile-bulk-import-jobs"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def sim() -> Iterator[KlaviyoSimulator]:
    with KlaviyoSimulator(SimulatorConfig(processing_seconds=0.05, seed=7)) as simulator:
        simulator.add_api_key(KEY)
        yield simulator


@pytest.fixture
def http_session() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.headers.update(HEADERS)
        yield session


@pytest.fixture
def list_id(sim: KlaviyoSimulator) -> str:
    return sim.create_list("Contract tests")


def profile(**attributes: Any) -> dict[str, Any]:
    return {"type": "profile", "attributes": attributes}


def job_body(profiles: list[dict[str, Any]], list_id: str | None = None) -> bytes:
    data: dict[str, Any] = {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": profiles}}}
    if list_id is not None:
        data["relationships"] = {"lists": {"data": [{"type": "list", "id": list_id}]}}
    return orjson.dumps({"data": data})


def create_job(
    session: requests.Session, sim: KlaviyoSimulator, profiles: list[dict[str, Any]], list_id: str | None
) -> str:
    response = session.post(sim.url + JOBS, data=job_body(profiles, list_id))
    assert response.status_code == 202, response.text
    return response.json()["data"]["id"]


def wait_until_complete(session: requests.Session, sim: KlaviyoSimulator, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        attributes = session.get(f"{sim.url}{JOBS}/{job_id}").json()["data"]["attributes"]
        if attributes["status"] == "complete":
            return attributes
        assert time.monotonic() < deadline, attributes
        time.sleep(0.12)  # stays under the 10/s burst limit of job reads


def only_error(response: requests.Response) -> dict[str, Any]:
    assert response.headers["Content-Type"] == JSONAPI
    errors = response.json()["errors"]
    assert len(errors) == 1, errors
    assert set(errors[0]) >= {"id", "status", "code", "title", "detail", "source"}
    assert errors[0]["status"] == response.status_code
    return errors[0]


# --------------------------------------------------------------------------- headers


@pytest.mark.parametrize(
    ("authorization", "title"),
    [
        pytest.param(None, "Authentication credentials were not provided.", id="missing"),
        pytest.param(f"Bearer {KEY}", "Authentication credentials were not provided.", id="wrong-scheme"),
        pytest.param("Klaviyo-API-Key ", "Authentication credentials were not provided.", id="empty-key"),
        pytest.param("Klaviyo-API-Key pk_unknown", "Incorrect authentication credentials.", id="unknown-key"),
    ],
)
def test_requests_without_a_known_key_are_401(sim: KlaviyoSimulator, authorization: str | None, title: str) -> None:
    headers = {k: v for k, v in HEADERS.items() if k != "Authorization"}
    if authorization is not None:
        headers["Authorization"] = authorization
    response = requests.get(sim.url + "/api/lists", headers=headers)
    assert response.status_code == 401
    error = only_error(response)
    assert (error["code"], error["title"]) == ("not_authenticated", title)
    assert "RateLimit-Limit" not in response.headers


@pytest.mark.parametrize(
    ("revision", "status"),
    [
        pytest.param(None, 400, id="missing"),
        pytest.param("2026-7-15", 400, id="unpadded"),
        pytest.param("2026-13-01", 400, id="no-such-month"),
        pytest.param("latest", 400, id="word"),
        pytest.param("2026-07-15", 200, id="plain"),
        pytest.param("2026-07-15.pre", 200, id="with-suffix"),
    ],
)
def test_revision_header_is_required_and_dated(sim: KlaviyoSimulator, revision: str | None, status: int) -> None:
    headers = {k: v for k, v in HEADERS.items() if k != "revision"}
    if revision is not None:
        headers["revision"] = revision
    response = requests.get(sim.url + "/api/lists", headers=headers)
    assert response.status_code == status
    if status == 400:
        error = only_error(response)
        assert (error["code"], error["source"]) == ("invalid", {"parameter": "revision"})


@pytest.mark.parametrize(
    ("accept", "status"),
    [
        pytest.param("text/html", 406, id="html"),
        pytest.param("application/vnd.api+json;q=0", 406, id="refused-by-q0"),
        pytest.param("*/*", 200, id="anything"),
        pytest.param("application/json", 200, id="json"),
        pytest.param("text/html, application/vnd.api+json; q=0.5", 200, id="json-api-among-others"),
    ],
)
def test_accept_header_must_allow_json_api(sim: KlaviyoSimulator, accept: str, status: int) -> None:
    response = requests.get(sim.url + "/api/lists", headers={**HEADERS, "accept": accept})
    assert response.status_code == status
    if status == 406:
        assert only_error(response)["code"] == "not_acceptable"


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        pytest.param("text/plain", 415, id="text"),
        pytest.param("application/x-www-form-urlencoded", 415, id="form"),
        pytest.param(JSONAPI, 202, id="json-api"),
        pytest.param("application/json; charset=utf-8", 202, id="json"),
    ],
)
def test_body_content_type_must_be_json(sim: KlaviyoSimulator, list_id: str, content_type: str, status: int) -> None:
    body = job_body([profile(email="ann@example.com")], list_id)
    response = requests.post(sim.url + JOBS, data=body, headers={**HEADERS, "content-type": content_type})
    assert response.status_code == status
    if status == 415:
        assert only_error(response)["code"] == "unsupported_media_type"


@pytest.mark.parametrize("suffix", ["", "/"], ids=["no-slash", "trailing-slash"])
def test_paths_are_served_with_and_without_a_trailing_slash(
    sim: KlaviyoSimulator, http_session: requests.Session, list_id: str, suffix: str
) -> None:
    response = http_session.get(f"{sim.url}/api/lists/{list_id}{suffix}")
    assert response.status_code == 200
    assert response.json()["data"]["id"] == list_id
    job = http_session.post(f"{sim.url}{JOBS}{suffix}", data=job_body([profile(email="a@example.com")], list_id))
    assert job.status_code == 202


def test_unknown_path_is_404_and_wrong_method_is_405(sim: KlaviyoSimulator, http_session: requests.Session) -> None:
    missing = http_session.get(sim.url + "/api/segments-of-nothing")
    assert missing.status_code == 404
    assert only_error(missing)["code"] == "not_found"
    wrong = http_session.put(sim.url + JOBS, data=b"{}")
    assert wrong.status_code == 405
    assert wrong.headers["Allow"] == "GET, POST"
    assert only_error(wrong)["code"] == "method_not_allowed"


def test_unknown_query_parameters_are_refused(sim: KlaviyoSimulator, http_session: requests.Session) -> None:
    response = http_session.get(sim.url + JOBS, params={"page[limit]": "5"})
    assert response.status_code == 400
    assert only_error(response)["source"] == {"parameter": "page[limit]"}


def test_keep_alive_serves_many_requests_on_one_connection(sim: KlaviyoSimulator, list_id: str) -> None:
    host = urlsplit(sim.url)
    connection = http.client.HTTPConnection(host.hostname, host.port, timeout=5)
    connection.connect()
    socket_before = connection.sock
    for _ in range(3):
        connection.request("GET", f"/api/lists/{list_id}", headers=HEADERS)
        response = connection.getresponse()
        assert response.status == 200
        assert orjson.loads(response.read())["data"]["id"] == list_id
    assert connection.sock is socket_before
    connection.close()


# --------------------------------------------------------------------------- bulk import validation


def test_more_than_10000_profiles_is_400(sim: KlaviyoSimulator, http_session: requests.Session, list_id: str) -> None:
    profiles = [profile(external_id=f"C{i}") for i in range(10_001)]
    response = http_session.post(sim.url + JOBS, data=job_body(profiles, list_id))
    assert response.status_code == 400
    error = only_error(response)
    assert error["source"] == {"pointer": "/data/attributes/profiles/data"}
    assert sim.stats["jobs_created"] == 0


def test_empty_profile_array_is_400(sim: KlaviyoSimulator, http_session: requests.Session, list_id: str) -> None:
    response = http_session.post(sim.url + JOBS, data=job_body([], list_id))
    assert response.status_code == 400
    assert only_error(response)["source"] == {"pointer": "/data/attributes/profiles/data"}


def test_body_over_5_mb_is_413(sim: KlaviyoSimulator, http_session: requests.Session, list_id: str) -> None:
    filler = "x" * 90_000
    profiles = [profile(email=f"p{i}@example.com", properties={"notes": filler}) for i in range(56)]
    body = job_body(profiles, list_id)
    assert len(body) > 5_000_000
    response = http_session.post(sim.url + JOBS, data=body)
    assert response.status_code == 413
    assert only_error(response)["code"] == "payload_too_large"
    assert sim.stats["jobs_created"] == 0


def test_one_bad_email_refuses_the_whole_job_and_names_it(
    sim: KlaviyoSimulator, http_session: requests.Session, list_id: str
) -> None:
    profiles = [profile(email=f"user{i}@example.com") for i in range(500)]
    profiles[317] = profile(email="user317 at example.com")
    response = http_session.post(sim.url + JOBS, data=job_body(profiles, list_id))
    assert response.status_code == 400
    error = only_error(response)
    assert error["code"] == "invalid"
    assert error["source"] == {"pointer": "/data/attributes/profiles/data/317/attributes/email"}
    assert sim.stats["jobs_created"] == 0
    assert sim.wait_for_jobs(1)
    assert sim.list_members(list_id) == []


def test_every_invalid_profile_gets_its_own_error(
    sim: KlaviyoSimulator, http_session: requests.Session, list_id: str
) -> None:
    profiles = [profile(email=f"u{i}@example.com") for i in range(10)]
    profiles[2] = profile(phone_number="5551234")
    profiles[7] = profile(email="bad@")
    response = http_session.post(sim.url + JOBS, data=job_body(profiles, list_id))
    assert response.status_code == 400
    pointers = [error["source"]["pointer"] for error in response.json()["errors"]]
    assert pointers == [
        "/data/attributes/profiles/data/2/attributes/phone_number",
        "/data/attributes/profiles/data/7/attributes/email",
    ]


@pytest.mark.parametrize(
    ("bad_profile", "pointer_suffix"),
    [
        pytest.param(profile(email="a@b"), "/attributes/email", id="email-without-tld"),
        pytest.param(profile(email="two@@example.com"), "/attributes/email", id="email-two-ats"),
        pytest.param(profile(email=" ann@example.com"), "/attributes/email", id="email-with-space"),
        pytest.param(profile(email=42), "/attributes/email", id="email-not-a-string"),
        pytest.param(profile(phone_number="+1 500 555 0006"), "/attributes/phone_number", id="phone-with-spaces"),
        pytest.param(profile(phone_number="+05005550006"), "/attributes/phone_number", id="phone-leading-zero"),
        pytest.param(profile(external_id=" "), "/attributes/external_id", id="blank-external-id"),
        pytest.param(profile(first_name="Ann"), "/attributes/", id="no-identifier"),
        pytest.param(profile(email=None, phone_number=None), "/attributes/", id="null-identifiers"),
        pytest.param(profile(email="a@example.com", favourite="x"), "/attributes/favourite", id="unknown-attribute"),
        pytest.param(profile(email="a@example.com", first_name=7), "/attributes/first_name", id="number-as-name"),
        pytest.param(profile(email="a@example.com", properties=[1]), "/attributes/properties", id="properties-list"),
        pytest.param(
            profile(email="a@example.com", location={"planet": "Mars"}),
            "/attributes/location/planet",
            id="location-key",
        ),
        pytest.param(profile(email="a@example.com", properties={"blob": "y" * 100_001}), "", id="profile-over-100-kb"),
        pytest.param({"type": "person", "attributes": {"email": "a@example.com"}}, "/type", id="wrong-type"),
    ],
)
def test_invalid_profiles_are_400_with_a_pointer_to_the_field(
    sim: KlaviyoSimulator,
    http_session: requests.Session,
    list_id: str,
    bad_profile: dict[str, Any],
    pointer_suffix: str,
) -> None:
    profiles = [profile(email="ok@example.com"), bad_profile]
    response = http_session.post(sim.url + JOBS, data=job_body(profiles, list_id))
    assert response.status_code == 400
    error = only_error(response)
    assert error["source"] == {"pointer": f"/data/attributes/profiles/data/1{pointer_suffix}"}


@pytest.mark.parametrize(
    "email",
    ["ann@example.com", "o'neil+tag@mail.example.co.uk", "user@bücher.ch", "x@xn--bcher-kva.ch"],
    ids=["plain", "plus-and-subdomain", "idn-domain", "punycode-domain"],
)
def test_reasonable_emails_are_accepted(
    sim: KlaviyoSimulator, http_session: requests.Session, list_id: str, email: str
) -> None:
    response = http_session.post(sim.url + JOBS, data=job_body([profile(email=email)], list_id))
    assert response.status_code == 202, response.text


def test_two_lists_in_one_job_is_400(sim: KlaviyoSimulator, http_session: requests.Session, list_id: str) -> None:
    other = sim.create_list("Other")
    document = orjson.loads(job_body([profile(email="a@example.com")], list_id))
    document["data"]["relationships"]["lists"]["data"].append({"type": "list", "id": other})
    response = http_session.post(sim.url + JOBS, data=orjson.dumps(document))
    assert response.status_code == 400
    assert only_error(response)["source"] == {"pointer": "/data/relationships/lists/data"}


def test_unknown_list_is_refused_and_unknown_list_reads_are_404(
    sim: KlaviyoSimulator, http_session: requests.Session
) -> None:
    foreign = sim.create_list("Someone else's", account="other-account")
    for missing in ("NoSuch", foreign):
        job = http_session.post(sim.url + JOBS, data=job_body([profile(email="a@example.com")], missing))
        assert job.status_code == 400
        error = only_error(job)
        assert (error["source"], error["detail"]) == ({"pointer": "/data"}, f"List ID {missing} does not exist.")
        read = http_session.get(f"{sim.url}/api/lists/{missing}")
        assert read.status_code == 404
        assert only_error(read)["code"] == "not_found"
    assert sim.stats["jobs_created"] == 0


# --------------------------------------------------------------------------- job processing


def test_job_runs_from_queued_to_complete_and_fills_the_list(
    sim: KlaviyoSimulator, http_session: requests.Session, list_id: str
) -> None:
    profiles = [
        profile(
            email="Ann@Example.com",
            phone_number="+15005550006",
            external_id="C-1",
            first_name="Ann",
            location={"city": "Leeds", "zip": None},
            properties={"tier": "gold"},
        ),
        profile(external_id="C-2", last_name="Lee"),
    ]
    response = http_session.post(sim.url + JOBS, data=job_body(profiles, list_id))
    assert response.status_code == 202
    assert response.headers["Content-Type"] == JSONAPI
    data = response.json()["data"]
    assert data["type"] == "profile-bulk-import-job"
    attributes = data["attributes"]
    assert {k: attributes[k] for k in ("status", "total_count", "completed_count", "failed_count")} == {
        "status": "queued",
        "total_count": 2,
        "completed_count": 0,
        "failed_count": 0,
    }
    assert attributes["started_at"] is None and attributes["completed_at"] is None
    assert attributes["created_at"] < attributes["expires_at"]
    assert data["relationships"]["lists"]["data"] == [{"type": "list", "id": list_id}]

    done = wait_until_complete(http_session, sim, data["id"])
    assert (done["completed_count"], done["failed_count"]) == (2, 0)
    assert done["started_at"] is not None and done["completed_at"] >= done["started_at"]

    members = sorted(sim.list_members(list_id), key=lambda m: m["external_id"])
    assert [(m["email"], m["phone_number"], m["external_id"]) for m in members] == [
        ("ann@example.com", "+15005550006", "C-1"),
        (None, None, "C-2"),
    ]
    assert members[0]["first_name"] == "Ann"
    assert members[0]["location"] == {"city": "Leeds"}
    assert members[0]["properties"] == {"tier": "gold"}
    streamed = requests.get(f"{sim.url}/_sim/lists/{list_id}/members")
    assert streamed.headers["Transfer-Encoding"] == "chunked"
    assert sorted(streamed.json(), key=lambda m: m["external_id"]) == members
    assert requests.get(f"{sim.url}/_sim/lists/{list_id}/members?count_only=1").json() == {"count": 2}

    job_profiles = http_session.get(f"{sim.url}{JOBS}/{data['id']}/profiles").json()["data"]
    assert sorted(p["id"] for p in job_profiles) == sorted(m["id"] for m in members)
    ids = http_session.get(f"{sim.url}{JOBS}/{data['id']}/relationships/profiles").json()["data"]
    assert sorted(ids, key=lambda p: p["id"]) == sorted(({"type": "profile", "id": m["id"]} for m in members), key=str)
    job_lists = http_session.get(f"{sim.url}{JOBS}/{data['id']}/relationships/lists").json()["data"]
    assert job_lists == [{"type": "list", "id": list_id}]


def test_profiles_already_on_the_list_are_updated_not_duplicated(
    sim: KlaviyoSimulator, http_session: requests.Session, list_id: str
) -> None:
    first = [profile(email="ann@example.com", first_name="Ann", properties={"tier": "gold", "visits": 1})]
    wait_until_complete(http_session, sim, create_job(http_session, sim, first, list_id))
    second = [
        profile(email="ANN@example.com", first_name=None, last_name="Lee", properties={"visits": 2}),
        profile(email="bob@example.com"),
    ]
    wait_until_complete(http_session, sim, create_job(http_session, sim, second, list_id))
    members = {m["email"]: m for m in sim.list_members(list_id)}
    assert sorted(members) == ["ann@example.com", "bob@example.com"]
    ann = members["ann@example.com"]
    assert (ann["first_name"], ann["last_name"]) == ("Ann", "Lee")
    assert ann["properties"] == {"tier": "gold", "visits": 2}


def test_email_and_phone_of_different_profiles_is_a_duplicate_profile_error(
    sim: KlaviyoSimulator, http_session: requests.Session, list_id: str
) -> None:
    setup = [profile(email="ann@example.com"), profile(phone_number="+15005550006")]
    wait_until_complete(http_session, sim, create_job(http_session, sim, setup, list_id))
    clash = [profile(email="carl@example.com"), profile(email="ann@example.com", phone_number="+15005550006")]
    job_id = create_job(http_session, sim, clash, list_id)
    done = wait_until_complete(http_session, sim, job_id)
    assert (done["completed_count"], done["failed_count"]) == (1, 1)
    errors = http_session.get(f"{sim.url}{JOBS}/{job_id}/import-errors").json()
    assert errors["links"]["next"] is None
    [error] = errors["data"]
    assert error["type"] == "import-error"
    assert error["attributes"]["code"] == "duplicate_profile"
    assert error["attributes"]["source"] == {"pointer": "/data/attributes/profiles/data/1/attributes/phone_number"}
    assert error["attributes"]["original_payload"] == {"email": "ann@example.com", "phone_number": "+15005550006"}
    assert len(sim.list_members(list_id)) == 3


def test_injected_profile_failures_are_listed_as_import_errors(
    sim: KlaviyoSimulator, http_session: requests.Session, list_id: str
) -> None:
    sim.configure(profile_failure_rate=0.5)
    profiles = [profile(email=f"u{i}@example.com") for i in range(40)]
    job_id = create_job(http_session, sim, profiles, list_id)
    done = wait_until_complete(http_session, sim, job_id)
    assert done["completed_count"] + done["failed_count"] == 40
    assert 5 <= done["failed_count"] <= 35
    collected: list[dict[str, Any]] = []
    url: str | None = f"{sim.url}{JOBS}/{job_id}/import-errors?page[size]=7"
    while url:
        page = http_session.get(url).json()
        collected += page["data"]
        url = page["links"]["next"]
    assert len(collected) == done["failed_count"]
    failed_emails = {e["attributes"]["original_payload"]["email"] for e in collected}
    assert failed_emails.isdisjoint(m["email"] for m in sim.list_members(list_id))
    assert len(sim.list_members(list_id)) == done["completed_count"]
    assert sim.stats["profiles_failed"] == done["failed_count"]


# --------------------------------------------------------------------------- scopes and rate limits


@pytest.mark.parametrize(
    ("scopes", "method", "path"),
    [
        pytest.param(["profiles:write"], "POST", JOBS, id="import-needs-lists-write"),
        pytest.param(["lists:write"], "POST", JOBS, id="import-needs-profiles-write"),
        pytest.param(["profiles:read"], "GET", JOBS, id="job-list-needs-lists-read"),
        pytest.param(["profiles:write", "lists:write"], "GET", "/api/lists/{list}", id="get-list-needs-lists-read"),
        pytest.param(["lists:read"], "GET", "/api/lists/{list}/profiles", id="members-need-profiles-read"),
        pytest.param(
            ["lists:write"], "POST", "/api/lists/{list}/relationships/profiles", id="add-needs-profiles-write"
        ),
    ],
)
def test_missing_scope_is_403(sim: KlaviyoSimulator, list_id: str, scopes: list[str], method: str, path: str) -> None:
    sim.add_api_key("pk_narrow", scopes)
    headers = {**HEADERS, "Authorization": "Klaviyo-API-Key pk_narrow"}
    body = job_body([profile(email="a@example.com")], list_id) if method == "POST" else None
    response = requests.request(method, sim.url + path.format(list=list_id), data=body, headers=headers)
    assert response.status_code == 403
    assert only_error(response)["code"] == "permission_denied"
    assert sim.stats["jobs_created"] == 0


def test_burst_limit_answers_429_with_retry_after_then_recovers(
    sim: KlaviyoSimulator, http_session: requests.Session
) -> None:
    statuses = [http_session.get(sim.url + JOBS) for _ in range(11)]
    assert [r.status_code for r in statuses] == [200] * 10 + [429]
    throttled = statuses[-1]
    error = only_error(throttled)
    assert (error["code"], error["title"]) == ("throttled", "Request was throttled.")
    assert throttled.headers["Retry-After"] == "1"
    assert "RateLimit-Remaining" not in throttled.headers
    assert statuses[0].headers["RateLimit-Limit"] == "150"
    assert statuses[9].headers["RateLimit-Remaining"] == "140"
    time.sleep(int(throttled.headers["Retry-After"]))
    assert http_session.get(sim.url + JOBS).status_code == 200
    assert sim.stats["throttled"] == 1


def test_rate_limits_are_per_account_and_per_endpoint(sim: KlaviyoSimulator, list_id: str) -> None:
    sim.add_api_key("pk_other_account", account="elsewhere")
    other = {**HEADERS, "Authorization": "Klaviyo-API-Key pk_other_account"}
    assert all(requests.get(sim.url + JOBS, headers=HEADERS).status_code == 200 for _ in range(10))
    assert requests.get(sim.url + JOBS, headers=HEADERS).status_code == 429
    assert requests.get(sim.url + JOBS, headers=other).status_code == 200
    assert requests.get(f"{sim.url}/api/lists/{list_id}", headers=HEADERS).status_code == 200


def test_steady_window_retry_after_counts_down_to_its_reset() -> None:
    now = [1000.0]
    limiter = RateLimiter(clock=lambda: now[0])
    limit = RateLimit(burst=10, steady=150)
    for second in range(15):
        now[0] = 1000.0 + second
        assert all(limiter.acquire("acct", "jobs", limit).allowed for _ in range(10))
    now[0] = 1015.5
    blocked = limiter.acquire("acct", "jobs", limit)
    assert (blocked.allowed, blocked.retry_after) == (False, 45)
    now[0] = 1060.0
    assert limiter.acquire("acct", "jobs", limit).allowed


def test_no_rate_limits_when_disabled(http_session: requests.Session) -> None:
    with KlaviyoSimulator(SimulatorConfig(rate_limits=False)) as free:
        free.add_api_key(KEY)
        assert {http_session.get(free.url + JOBS).status_code for _ in range(25)} == {200}


# --------------------------------------------------------------------------- pagination


def test_jobs_paginate_with_absolute_next_links_and_filter_by_status(
    sim: KlaviyoSimulator, http_session: requests.Session, list_id: str
) -> None:
    sim.configure(processing_seconds=60.0)
    slow_ids = [create_job(http_session, sim, [profile(email=f"s{i}@example.com")], list_id) for i in range(3)]
    sim.configure(processing_seconds=0.0)
    fast_id = create_job(http_session, sim, [profile(email="f@example.com")], list_id)
    wait_until_complete(http_session, sim, fast_id)

    seen: list[str] = []
    url: str | None = f"{sim.url}{JOBS}?page[size]=2"
    pages = 0
    while url:
        assert url.startswith(sim.url + JOBS)
        page = http_session.get(url).json()
        seen += [job["id"] for job in page["data"]]
        url = page["links"]["next"]
        pages += 1
        if url:
            assert "page%5Bcursor%5D=" in url and "page%5Bsize%5D=2" in url
    assert (seen, pages) == (slow_ids + [fast_id], 2)

    complete = http_session.get(sim.url + JOBS, params={"filter": "equals(status,'complete')"}).json()["data"]
    assert [job["id"] for job in complete] == [fast_id]
    pending = http_session.get(sim.url + JOBS, params={"filter": "any(status,['queued','processing'])"}).json()
    assert [job["id"] for job in pending["data"]] == slow_ids
    newest = http_session.get(sim.url + JOBS, params={"sort": "-created_at", "page[size]": "1"}).json()
    assert newest["data"][0]["id"] == fast_id


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        pytest.param({"page[size]": "101"}, "page[size]", id="page-too-big"),
        pytest.param({"page[size]": "0"}, "page[size]", id="page-zero"),
        pytest.param({"page[cursor]": "not-a-cursor"}, "page[cursor]", id="bad-cursor"),
        pytest.param({"filter": "equals(status,'lost')"}, "filter", id="unknown-status"),
        pytest.param({"filter": "greater-than(status,'x')"}, "filter", id="wrong-operator"),
        pytest.param({"filter": "equals(status,"}, "filter", id="broken-syntax"),
    ],
)
def test_bad_paging_and_filter_parameters_are_400(
    sim: KlaviyoSimulator, http_session: requests.Session, params: dict[str, str], parameter: str
) -> None:
    response = http_session.get(sim.url + JOBS, params=params)
    assert response.status_code == 400
    assert only_error(response)["source"] == {"parameter": parameter}


def test_list_profiles_paginate_with_sparse_fields_and_filters(
    sim: KlaviyoSimulator, http_session: requests.Session, list_id: str
) -> None:
    profiles = [profile(email=f"m{i}@example.com", first_name=f"M{i}") for i in range(5)]
    wait_until_complete(http_session, sim, create_job(http_session, sim, profiles, list_id))
    emails: list[str] = []
    url: str | None = f"{sim.url}/api/lists/{list_id}/profiles?page[size]=2&fields[profile]=email"
    while url:
        page = http_session.get(url).json()
        assert all(set(p["attributes"]) == {"email"} for p in page["data"])
        emails += [p["attributes"]["email"] for p in page["data"]]
        url = page["links"]["next"]
    assert emails == [f"m{i}@example.com" for i in range(5)]

    full = http_session.get(f"{sim.url}/api/lists/{list_id}/profiles").json()["data"][0]
    assert set(full["attributes"]) >= {
        "email",
        "phone_number",
        "external_id",
        "location",
        "properties",
        "joined_group_at",
    }
    found = http_session.get(
        f"{sim.url}/api/lists/{list_id}/profiles", params={"filter": "any(email,['m3@example.com','nobody@x.io'])"}
    ).json()["data"]
    assert [p["attributes"]["email"] for p in found] == ["m3@example.com"]
    ids = http_session.get(f"{sim.url}/api/lists/{list_id}/relationships/profiles?page[size]=100").json()
    assert len(ids["data"]) == 5 and ids["links"]["next"] is None
    assert http_session.get(f"{sim.url}/api/lists/{list_id}/profiles?page[size]=101").status_code == 400
    with_count = http_session.get(f"{sim.url}/api/lists/{list_id}?additional-fields[list]=profile_count").json()
    assert with_count["data"]["attributes"]["profile_count"] == 5


def test_list_relationships_add_and_remove_profiles_by_id(
    sim: KlaviyoSimulator, http_session: requests.Session, list_id: str
) -> None:
    wait_until_complete(http_session, sim, create_job(http_session, sim, [profile(email="a@example.com")], None))
    job_id = http_session.get(f"{sim.url}{JOBS}").json()["data"][0]["id"]
    profile_ids = http_session.get(f"{sim.url}{JOBS}/{job_id}/relationships/profiles").json()["data"]
    relationships = f"{sim.url}/api/lists/{list_id}/relationships/profiles"

    assert http_session.post(relationships, data=orjson.dumps({"data": profile_ids})).status_code == 204
    assert http_session.post(relationships, data=orjson.dumps({"data": profile_ids})).status_code == 204
    assert [m["email"] for m in sim.list_members(list_id)] == ["a@example.com"]
    assert http_session.delete(relationships, data=orjson.dumps({"data": profile_ids})).status_code == 204
    assert sim.list_members(list_id) == []

    unknown = http_session.post(
        relationships, data=orjson.dumps({"data": [{"type": "profile", "id": "01" + "0" * 24}]})
    )
    assert unknown.status_code == 404
    assert only_error(unknown)["source"] == {"pointer": "/data/0/id"}
    too_many = [{"type": "profile", "id": profile_ids[0]["id"]}] * 1001
    assert http_session.post(relationships, data=orjson.dumps({"data": too_many})).status_code == 400


# --------------------------------------------------------------------------- faults


def test_error_rate_answers_5xx_before_doing_anything(
    sim: KlaviyoSimulator, http_session: requests.Session, list_id: str
) -> None:
    sim.configure(error_rate=1.0)
    statuses = {
        http_session.post(sim.url + JOBS, data=job_body([profile(email="a@x.io")], list_id)).status_code
        for _ in range(12)
    }
    assert statuses <= {500, 502, 503, 504} and len(statuses) > 1
    assert sim.stats["jobs_created"] == 0
    assert sim.stats["faults"]["error"] == 12


def test_throttle_storm_answers_429_with_retry_after(sim: KlaviyoSimulator, http_session: requests.Session) -> None:
    sim.configure(throttle_storm_every=30.0, throttle_storm_seconds=2.0)
    response = http_session.get(sim.url + "/api/lists")
    assert response.status_code == 429
    assert response.headers["Retry-After"] in ("1", "2")
    assert only_error(response)["code"] == "throttled"
    assert sim.stats["faults"]["storm"] == 1


def test_reset_rate_drops_the_connection_without_a_response(
    sim: KlaviyoSimulator, http_session: requests.Session, list_id: str
) -> None:
    sim.configure(reset_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        http_session.post(sim.url + JOBS, data=job_body([profile(email="a@x.io")], list_id))
    sim.configure(reset_rate=0.0)
    assert http_session.get(sim.url + "/api/lists").status_code == 200
    assert sim.stats["faults"]["reset"] == 1
    assert sim.stats["jobs_created"] == 0


def test_slow_rate_delays_responses(sim: KlaviyoSimulator, http_session: requests.Session) -> None:
    sim.configure(slow_rate=1.0, slow_seconds=0.4)
    started = time.monotonic()
    assert http_session.get(sim.url + "/api/lists").status_code == 200
    assert time.monotonic() - started >= 0.4
    with pytest.raises(requests.Timeout):
        http_session.get(sim.url + "/api/lists", timeout=0.1)
    assert sim.stats["faults"]["slow"] >= 1


def test_challenge_rate_answers_a_cloudflare_style_html_403(
    sim: KlaviyoSimulator, http_session: requests.Session
) -> None:
    sim.configure(challenge_rate=1.0)
    response = http_session.get(sim.url + "/api/lists")
    assert response.status_code == 403
    assert response.headers["cf-mitigated"] == "challenge"
    assert response.headers["Content-Type"].startswith("text/html")


def test_faults_never_touch_admin_routes(sim: KlaviyoSimulator) -> None:
    sim.configure(error_rate=1.0, reset_rate=1.0, throttle_storm_every=10.0, throttle_storm_seconds=10.0)
    assert requests.get(sim.url + "/_sim/stats").status_code == 200
    assert requests.post(sim.url + "/_sim/lists", json={"name": "Admin"}).status_code == 201


# --------------------------------------------------------------------------- admin routes and CLI


def test_admin_routes_drive_the_simulator(sim: KlaviyoSimulator) -> None:
    admin = sim.url + "/_sim"
    assert requests.post(admin + "/keys", json={"key": "pk_admin", "scopes": ["lists:read"]}).status_code == 201
    created = requests.post(admin + "/lists", json={"name": "Admin list", "list_id": "AdmN01"})
    assert (created.status_code, created.json()) == (201, {"id": "AdmN01"})
    headers = {**HEADERS, "Authorization": "Klaviyo-API-Key pk_admin"}
    assert requests.get(sim.url + "/api/lists/AdmN01", headers=headers).status_code == 200
    assert requests.get(admin + "/lists/AdmN01/members").json() == []
    assert requests.get(admin + "/lists/AdmN01/members?count_only=1").json() == {"count": 0}
    config = requests.post(admin + "/config", json={"error_rate": 0.25})
    assert config.json()["error_rate"] == 0.25 and sim.config.error_rate == 0.25
    assert requests.post(admin + "/config", json={"no_such_setting": 1}).status_code == 400
    assert requests.delete(admin + "/lists/AdmN01").status_code == 204
    assert requests.get(admin + "/lists/AdmN01/members").status_code == 404
    stats = requests.get(admin + "/stats").json()
    assert stats["requests_by_endpoint"]["GET /api/lists/{id}"] == 1


def test_cli_prints_its_url_first_and_serves_until_terminated() -> None:
    command = [sys.executable, "-m", "tools.klaviyo_sim", "--port", "0", "--api-key", KEY, "--list", "CliL01:From CLI"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first_line = process.stdout.readline() if process.stdout else ""
        assert first_line.startswith("Klaviyo simulator listening on http://127.0.0.1:")
        url = first_line.split()[-1]
        response = requests.get(url + "/api/lists/CliL01", headers=HEADERS, timeout=5)
        assert (response.status_code, response.json()["data"]["attributes"]["name"]) == (200, "From CLI")
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


@pytest.mark.parametrize("fast_import", [False, True], ids=["validated", "fast-import"])
def test_imports_upsert_by_email_into_the_list_whatever_the_reading(
    http_session: requests.Session, fast_import: bool
) -> None:
    """The benchmarks' fast reading of import bodies keeps the contract's upsert: an email seen in an
    earlier job, twice in one job, or in other case joins the list once."""
    with KlaviyoSimulator(SimulatorConfig(processing_seconds=0.0, fast_import=fast_import)) as simulator:
        simulator.add_api_key(KEY)
        first_list, second_list = simulator.create_list("first"), simulator.create_list("second")
        first = [profile(email=f"p{i}@example.com") for i in range(5)]
        again = [profile(email="p0@example.com"), profile(email="P1@Example.com"), profile(email="new@example.com")]
        again.append(profile(email="new@example.com"))
        jobs = [
            create_job(http_session, simulator, first, first_list),
            create_job(http_session, simulator, again, first_list),
            create_job(http_session, simulator, again, second_list),
        ]
        for job_id in jobs:
            wait_until_complete(http_session, simulator, job_id)
        assert simulator.list_member_count(first_list) == 6
        assert simulator.list_member_count(second_list) == 3
        emails = sorted(member["email"] for member in simulator.list_members(second_list))
        assert emails == ["new@example.com", "p0@example.com", "p1@example.com"]
