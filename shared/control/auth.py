"""Who is calling: the App Service Authentication principal, mapped to the app's roles.

App Service Authentication (Easy Auth) strips any client-sent `x-ms-client-principal` header and
sets its own, so the header can be trusted ONLY when Easy Auth runs in front of the app. Without
it, anyone can forge the header: the app therefore refuses every request when it runs in Azure
without Easy Auth (`WEBSITE_AUTH_ENABLED` is not true), and the local-development bypass
(`LOCAL_AUTH_BYPASS_ROLE`) is refused whenever the app runs in Azure.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

ADMIN, CONTRIBUTOR = "Admin", "Contributor"
PRINCIPAL_HEADER = "x-ms-client-principal"
_ROLE_CLAIMS = ("roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role")
# The name and role claims the app reads are text of at most this many characters: the name is stored
# (who changed a connection or export, who asked for a run, who agreed to send data), so an object, a
# number or 40,000 characters in it must be refused, not crash the write.
MAX_CLAIM_CHARS = 256


class AuthError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Caller:
    name: str
    roles: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.roles

    @property
    def is_contributor(self) -> bool:
        return CONTRIBUTOR in self.roles or self.is_admin


def running_in_azure(env: Mapping[str, str] = os.environ) -> bool:
    return bool(env.get("WEBSITE_INSTANCE_ID") or env.get("WEBSITE_SITE_NAME"))


def identify(headers: Mapping[str, str], env: Mapping[str, str] = os.environ) -> Caller:
    """The caller, or AuthError: 401 no identity, 500 unsafe configuration."""
    bypass_role = env.get("LOCAL_AUTH_BYPASS_ROLE", "").strip()
    in_azure = running_in_azure(env)
    if bypass_role:
        if in_azure:
            raise AuthError(
                500, "LOCAL_AUTH_BYPASS_ROLE is set but the app runs in Azure: refused. Remove the setting."
            )
        if bypass_role not in (ADMIN, CONTRIBUTOR):
            raise AuthError(500, f"LOCAL_AUTH_BYPASS_ROLE must be {ADMIN} or {CONTRIBUTOR}")
        return Caller("local-developer", frozenset({bypass_role}))
    if in_azure and env.get("WEBSITE_AUTH_ENABLED", "").lower() != "true":
        raise AuthError(
            500,
            "App Service Authentication is not enabled, so the caller's identity cannot be "
            "trusted: refusing every request until it is",
        )
    raw = _header(headers, PRINCIPAL_HEADER)
    if not raw:
        raise AuthError(401, "no authenticated caller: sign in through App Service Authentication")
    try:
        principal = orjson.loads(base64.b64decode(raw, validate=False))
        claims = principal.get("claims") or []
        role_type = principal.get("role_typ") or "roles"
        name_type = principal.get("name_typ") or "name"
        roles = {_claim_value(c) for c in claims if c.get("typ") in (role_type, *_ROLE_CLAIMS)}
        names = [_claim_value(c) for c in claims if c.get("typ") == name_type]
    except (ValueError, binascii.Error, orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
        raise AuthError(401, f"the {PRINCIPAL_HEADER} header is malformed") from None
    return Caller(names[0] if names else "unknown", frozenset(roles))


def _claim_value(claim: Mapping[str, object]) -> str:
    """A name or role claim's value, or AuthError (401) when it is not text of at most MAX_CLAIM_CHARS."""
    value = claim["val"]
    if not isinstance(value, str) or len(value) > MAX_CLAIM_CHARS:
        raise AuthError(
            401,
            f"the {PRINCIPAL_HEADER} header is malformed: a name or role claim is not text of at most "
            f"{MAX_CLAIM_CHARS} characters",
        )
    return value


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return ""


def encode_principal(name: str, *roles: str) -> str:
    """A principal header as App Service Authentication writes it (for tests and local tools)."""
    claims = [{"typ": "name", "val": name}] + [{"typ": "roles", "val": r} for r in roles]
    document = {"auth_typ": "aad", "name_typ": "name", "role_typ": "roles", "claims": claims}
    return base64.b64encode(orjson.dumps(document)).decode()
