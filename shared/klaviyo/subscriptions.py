"""Klaviyo's bulk subscription calls: subscribing profiles to email and SMS marketing into a list
(profile-subscription-bulk-create-jobs, up to 1,000 profiles a call) and unsubscribing them
(profile-subscription-bulk-delete-jobs, up to 100), with the request bodies as the OpenAPI
description of revision 2026-07-15 gives them, and the check that a key may make them.

Profiles come already serialized, each followed by a comma (as ConsentReader writes them), so a
call's body is one join, not an object per profile."""

from __future__ import annotations

import orjson

from shared.klaviyo.errors import InvalidPayload, KlaviyoError
from shared.klaviyo.limits import MAX_SUBSCRIBE_PROFILES, MAX_UNSUBSCRIBE_PROFILES, EndpointGroup
from shared.klaviyo.transport import Transport

SUBSCRIBE_PATH = "/api/profile-subscription-bulk-create-jobs"
UNSUBSCRIBE_PATH = "/api/profile-subscription-bulk-delete-jobs"
SUBSCRIPTIONS_SCOPE = "subscriptions:write"
# Stored by Klaviyo on each consent record it makes (custom_method_detail).
CUSTOM_SOURCE = "klaviyo-segment-export"


def subscribe_body(list_id: str, profiles: bytes, historical_import: bool) -> bytes:
    """A bulk subscribe request: `profiles` is the serialized profiles each followed by a comma."""
    attributes = b'{"custom_source":' + orjson.dumps(CUSTOM_SOURCE)
    attributes += b',"historical_import":' + (b"true" if historical_import else b"false")
    attributes += b',"profiles":{"data":[' + profiles.removesuffix(b",") + b"]}}"
    return _envelope(b"profile-subscription-bulk-create-job", attributes, list_id)


def unsubscribe_body(list_id: str, profiles: bytes) -> bytes:
    attributes = b'{"profiles":{"data":[' + profiles.removesuffix(b",") + b"]}}"
    return _envelope(b"profile-subscription-bulk-delete-job", attributes, list_id)


def _envelope(job_type: bytes, attributes: bytes, list_id: str) -> bytes:
    relationships = orjson.dumps({"list": {"data": {"type": "list", "id": list_id}}})
    return (
        b'{"data":{"type":"' + job_type + b'","attributes":' + attributes + b',"relationships":' + relationships + b"}}"
    )


class Subscriptions:
    """The subscription calls over a client's transport (its retries and rate limiter)."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def subscribe(self, list_id: str, profiles: bytes, count: int, historical_import: bool) -> None:
        """Subscribes `count` profiles (at most 1,000); Klaviyo answers 202 with nothing to poll.
        A 400 raises InvalidPayload whose pointers name the profiles at fault."""
        if not 0 < count <= MAX_SUBSCRIBE_PROFILES:
            raise ValueError(f"a subscribe call takes 1 to {MAX_SUBSCRIBE_PROFILES} profiles, not {count}")
        body = subscribe_body(list_id, profiles, historical_import)
        what = f"subscription of {count} profiles to list {list_id}"
        self.transport.call("POST", SUBSCRIBE_PATH, EndpointGroup.SUBSCRIBE, body=body, what=what)

    def unsubscribe(self, list_id: str, profiles: bytes, count: int) -> None:
        """Unsubscribes `count` profiles (at most 100) from the list's marketing. Klaviyo unsubscribes
        a profile that is not on the list from all marketing: send only the list's members."""
        if not 0 < count <= MAX_UNSUBSCRIBE_PROFILES:
            raise ValueError(f"an unsubscribe call takes 1 to {MAX_UNSUBSCRIBE_PROFILES} profiles, not {count}")
        body = unsubscribe_body(list_id, profiles)
        what = f"unsubscription of {count} profiles from list {list_id}"
        self.transport.call("POST", UNSUBSCRIBE_PATH, EndpointGroup.UNSUBSCRIBE, body=body, what=what)

    def check_access(self, list_id: str) -> None:
        """Raises a fatal KlaviyoError when the key may not subscribe, having subscribed no one.

        Klaviyo checks a key's scopes before it reads the body: a request with no profiles is
        refused 400 for its body when the key has subscriptions:write, 403 permission_denied
        when it has not. So an empty request asks the question and can change nothing."""
        try:
            self.transport.call(
                "POST",
                SUBSCRIBE_PATH,
                EndpointGroup.SUBSCRIBE,
                body=subscribe_body(list_id, b"", historical_import=False),
                what="subscription check",
            )
        except InvalidPayload:
            return  # the key may subscribe: only the (deliberately empty) body was refused
        except KlaviyoError as exc:
            if exc.status == 403:
                raise KlaviyoError(
                    f"the API key lacks the {SUBSCRIPTIONS_SCOPE} scope, needed to subscribe profiles "
                    f"(403 {exc.code or 'permission_denied'}); give the key {SUBSCRIPTIONS_SCOPE} "
                    "or turn subscribe off",
                    exc.status,
                    exc.code,
                    fatal=True,
                ) from None
            raise
