"""The Klaviyo client against the simulator: auth, fatal errors, retries, rate limits, jobs."""

from __future__ import annotations

import math
import time

import orjson
import pytest
import requests

from shared.engine.batching import Batch, Batcher
from shared.klaviyo import InvalidPayload, KlaviyoClient, KlaviyoError
from shared.klaviyo.limits import REVISION
from shared.mapping.rows import serialize_profile
from shared.settings import Settings
from tests.conftest import API_KEY
from tools.klaviyo_sim import KlaviyoSimulator


def body_for(list_id: str, *emails: str) -> bytes:
    batch = Batch()
    for i, email in enumerate(emails):
        batch.add(serialize_profile({"email": email}), 0, i)
    return batch.body(list_id)


def test_a_job_is_created_polled_and_imported(client: KlaviyoClient, klaviyo: KlaviyoSimulator, list_id: str):
    job = client.create_import_job(body_for(list_id, "a@example.com", "b@example.com"))
    assert job.status in ("queued", "processing") and job.total == 2
    deadline = time.monotonic() + 10
    while not (job := client.get_import_job(job.id)).done:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert (job.status, job.completed, job.failed) == ("complete", 2, 0)
    assert any(j.id == job.id for j in client.recent_import_jobs())


@pytest.mark.parametrize(
    ("key", "scopes", "message"),
    [
        pytest.param("pk_wrong", None, r"rejected the API key \(401", id="bad-key"),
        pytest.param("pk_readonly", ["profiles:read"], r"lacks a required scope \(403", id="missing-scope"),
    ],
)
def test_key_problems_fail_fast_with_a_clear_message(
    klaviyo: KlaviyoSimulator, list_id: str, key: str, scopes: list[str] | None, message: str
):
    if scopes is not None:
        klaviyo.add_api_key(key, scopes=scopes)
    api = KlaviyoClient(key, klaviyo.url)
    started = time.monotonic()
    with pytest.raises(KlaviyoError, match=message) as info:
        api.check_import_access(list_id)
    assert info.value.fatal
    assert time.monotonic() - started < 2, "fatal errors are not retried"
    assert key not in str(info.value)


def test_unknown_list_is_fatal(client: KlaviyoClient):
    with pytest.raises(KlaviyoError, match="list Nope12: not found") as info:
        client.get_list("Nope12")
    assert info.value.fatal and info.value.status == 404


def test_headers_are_pinned(client: KlaviyoClient):
    headers = client.transport.session.headers
    assert headers["revision"] == REVISION
    assert headers["accept"] == "application/vnd.api+json"
    assert headers["Authorization"] == f"Klaviyo-API-Key {API_KEY}"


def test_invalid_profile_raises_with_its_pointer(client: KlaviyoClient, list_id: str):
    with pytest.raises(InvalidPayload) as info:
        client.create_import_job(body_for(list_id, "a@example.com", "not an email", "c@example.com"))
    pointers = [e["source"]["pointer"] for e in info.value.errors]
    assert any(p.startswith("/data/attributes/profiles/data/1/") for p in pointers)


def test_5xx_are_retried_then_succeed(client: KlaviyoClient, klaviyo: KlaviyoSimulator, list_id: str):
    klaviyo.configure(error_rate=0.5)
    for _ in range(6):
        client.get_list(list_id)
    assert sum(v for k, v in client.stats.counts.items() if k.startswith("retried_5")) >= 1


def test_429_honours_retry_after(client: KlaviyoClient, klaviyo: KlaviyoSimulator, list_id: str):
    klaviyo.configure(throttle_storm_every=100.0, throttle_storm_seconds=1.0)
    started = time.monotonic()
    client.get_list(list_id)
    assert client.stats.counts["retried_429"] >= 1
    assert time.monotonic() - started >= 0.9


def client_with_rate_limits(klaviyo: KlaviyoSimulator, setting: str) -> KlaviyoClient:
    """A client built the way the app and the CLI build theirs, with KLAVIYO_RATE_LIMITS set."""
    scale = Settings.from_env({"KLAVIYO_RATE_LIMITS": setting}).klaviyo_rate_limit_scale
    return KlaviyoClient(API_KEY, klaviyo.url, timeout=(2.0, 10.0), rate_limit_scale=scale)


@pytest.mark.parametrize(
    ("setting", "fastest", "slowest"),
    [
        pytest.param("", 2.0, math.inf, id="default-published"),  # 10 a second: 25 jobs need 2 windows
        pytest.param("2", 1.0, 2.0, id="twice-published"),  # 20 a second: 1 window
        pytest.param("off", 0.0, 2.0, id="off"),
    ],
)
def test_rate_limits_setting_paces_import_jobs_against_a_simulator_without_limits(
    klaviyo: KlaviyoSimulator, list_id: str, setting: str, fastest: float, slowest: float
):
    klaviyo.configure(rate_limits=False)  # as `python -m tools.klaviyo_sim --no-rate-limits`
    api = client_with_rate_limits(klaviyo, setting)
    started = time.monotonic()
    for n in range(25):
        api.create_import_job(body_for(list_id, f"p{n}@example.com"))
    elapsed = time.monotonic() - started
    api.close()
    assert fastest <= elapsed < slowest, f"25 import jobs took {elapsed:.2f} s"


def test_rate_limits_off_still_waits_out_a_429s_retry_after(klaviyo: KlaviyoSimulator, list_id: str):
    klaviyo.configure(throttle_storm_every=100.0, throttle_storm_seconds=1.0)
    api = client_with_rate_limits(klaviyo, "off")
    started = time.monotonic()
    api.get_list(list_id)
    assert api.stats.counts["retried_429"] >= 1
    assert time.monotonic() - started >= 0.9
    api.close()


def test_persistent_5xx_gives_up_with_a_bounded_number_of_tries(klaviyo: KlaviyoSimulator, list_id: str):
    klaviyo.configure(error_rate=1.0)
    api = KlaviyoClient(API_KEY, klaviyo.url, max_retries=2)
    with pytest.raises(KlaviyoError, match="kept failing") as info:
        api.get_list(list_id)
    assert not info.value.fatal
    assert klaviyo.stats["requests"] <= 3 + 1


def test_batcher_splits_by_count_and_by_size():
    batcher = Batcher("L1", max_profiles=3, max_bytes=10_000)
    full = [b for i in range(7) if (b := batcher.add(b"x" * 10, 0, i))]
    assert [len(b) for b in full] == [3, 3] and len(batcher.flush()) == 1
    batcher = Batcher("L1", max_profiles=1000, max_bytes=1_000)
    full = [b for i in range(10) if (b := batcher.add(b"y" * 300, 0, i))]
    assert all(len(b.body("L1")) <= 1_000 for b in full + [batcher.flush()])


def test_batch_body_is_the_documented_json_api_document():
    batch = Batch()
    batch.add(serialize_profile({"email": "a@example.com", "properties": {"tier": "gold"}}), 0, 1)
    document = orjson.loads(batch.body("Y6nRLr"))
    assert document == {
        "data": {
            "type": "profile-bulk-import-job",
            "attributes": {
                "profiles": {
                    "data": [
                        {"type": "profile", "attributes": {"email": "a@example.com", "properties": {"tier": "gold"}}}
                    ]
                }
            },
            "relationships": {"lists": {"data": [{"type": "list", "id": "Y6nRLr"}]}},
        }
    }


def test_cloudflare_challenges_are_retried_not_taken_for_a_missing_scope(klaviyo: KlaviyoSimulator, list_id: str):
    klaviyo.configure(challenge_rate=0.5, seed=3)
    api = KlaviyoClient(API_KEY, klaviyo.url)
    for _ in range(8):
        assert api.get_list(list_id)["id"] == list_id
    assert api.stats.counts["retried_challenge"] >= 1


def test_a_challenge_that_never_clears_fails_without_calling_it_a_scope_problem(
    klaviyo: KlaviyoSimulator, list_id: str
):
    klaviyo.configure(challenge_rate=1.0)
    api = KlaviyoClient(API_KEY, klaviyo.url, max_retries=2)
    with pytest.raises(KlaviyoError, match="browser challenge") as info:
        api.get_list(list_id)
    assert not info.value.fatal and "scope" not in str(info.value)


def test_job_profiles_list_members_and_removal_page_and_batch_within_klaviyos_limits(
    client: KlaviyoClient, klaviyo: KlaviyoSimulator, list_id: str
):
    emails = [f"m{n}@example.com" for n in range(2_345)]
    job = client.create_import_job(body_for(list_id, *emails))
    assert klaviyo.wait_for_jobs()
    imported = dict(client.import_job_profiles(job.id))
    assert sorted(a["email"] for a in imported.values()) == sorted(emails)
    members = dict(client.list_member_ids(list_id))
    assert members.keys() == imported.keys()
    calls = klaviyo.stats["requests_by_endpoint"]
    assert calls["GET /api/profile-bulk-import-jobs/{id}/profiles"] == 24  # 100 a page
    assert calls["GET /api/lists/{id}/profiles"] == 24

    leaving = [pid for pid, a in imported.items() if a["email"] != "m0@example.com"]
    assert client.remove_from_list(list_id, leaving) == 2_344
    assert klaviyo.stats["requests_by_endpoint"]["DELETE /api/lists/{id}/relationships/profiles"] == 3  # 1,000 a call
    assert [m["email"] for m in klaviyo.list_members(list_id)] == ["m0@example.com"]
    # Removal ends list membership only: the profiles are still there for the job's profiles to name.
    assert len(dict(client.import_job_profiles(job.id))) == 2_345


def test_lookups_by_identifier_find_members_and_profiles_100_values_a_call(
    client: KlaviyoClient, klaviyo: KlaviyoSimulator, list_id: str
):
    batch = Batch()
    profiles = [{"email": "Ann@Example.com"}, {"phone_number": "+15005550006"}, {"external_id": 'C-"1\\'}]
    for i, attributes in enumerate(profiles):
        batch.add(serialize_profile(attributes), 0, i)
    client.create_import_job(batch.body(list_id))
    elsewhere = klaviyo.create_list("Another list")
    client.create_import_job(body_for(elsewhere, "bo@example.com"))
    assert klaviyo.wait_for_jobs()

    by_email = dict(client.list_members_by(list_id, "email", ["ann@example.com", "bo@example.com", "x@y.z"]))
    assert [a["email"] for a in by_email.values()] == ["ann@example.com"], "bo is not a member of this list"
    by_phone = dict(client.list_members_by(list_id, "phone_number", ["+15005550006"]))
    assert [a["phone_number"] for a in by_phone.values()] == ["+15005550006"]
    by_external = dict(client.profiles_by("external_id", ['C-"1\\', "C-2"]))
    assert [a["external_id"] for a in by_external.values()] == ['C-"1\\']
    assert len(dict(client.profiles_by("email", ["bo@example.com"]))) == 1, "profiles are found on any list"
    calls = klaviyo.stats["requests_by_endpoint"]
    assert calls["GET /api/lists/{id}/profiles"] == 2 and calls["GET /api/profiles"] == 2

    many = [f"m{n}@example.com" for n in range(101)]
    with pytest.raises(ValueError, match="from 1 to 100"):
        client.list_members_by(list_id, "email", many)
    with pytest.raises(ValueError, match="external_id"):
        client.list_members_by(list_id, "external_id", ["C-2"])


@pytest.mark.parametrize(
    ("path", "filter_text", "message"),
    [
        ("/api/lists/{list}/profiles", "any(email,[{values}])", "from 1 to 100 values"),
        ("/api/lists/{list}/profiles", 'any(external_id,["C-1"])', "not a valid operator for the field 'external_id'"),
        ("/api/profiles", "any(external_id,[{values}])", "from 1 to 100 values"),
        ("/api/profiles", 'any(first_name,["Ann"])', "not a valid operator for the field 'first_name'"),
        ("/api/profiles", 'greater-than(email,"a")', "not a valid operator"),
    ],
)
def test_the_simulator_refuses_lookups_klaviyo_refuses(
    klaviyo: KlaviyoSimulator, list_id: str, path, filter_text, message
):
    values = ",".join(f'"m{n}@example.com"' for n in range(101))
    answer = requests.get(
        klaviyo.url + path.format(list=list_id),
        params={"filter": filter_text.format(values=values), "page[size]": "100"},
        headers={
            "Authorization": f"Klaviyo-API-Key {API_KEY}",
            "revision": REVISION,
            "accept": "application/vnd.api+json",
        },
        timeout=10,
    )
    assert answer.status_code == 400
    assert message in answer.json()["errors"][0]["detail"]


def test_a_lookup_retried_after_a_lost_connection_logs_no_identifier(
    klaviyo: KlaviyoSimulator, list_id: str, caplog: pytest.LogCaptureFixture
):
    klaviyo.configure(reset_rate=1.0)
    api = KlaviyoClient(API_KEY, klaviyo.url, max_retries=1)
    with caplog.at_level("DEBUG"), pytest.raises(KlaviyoError):
        list(api.list_members_by(list_id, "email", ["secret.person@example.com"]))
    retries = [r for r in caplog.records if r.name.startswith("urllib3")]
    assert retries, "urllib3 logged its retries"
    assert not any("secret" in r.getMessage() or "example.com" in r.getMessage() for r in caplog.records)
