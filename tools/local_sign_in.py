"""The local host's stand-in for App Service Authentication's sign-in, so the console works in a browser
on `make host`: /.auth/login/aad offers to sign in as an Admin, a Contributor or a user with no role; the
choice is kept in a cookie, which the host turns into the x-ms-client-principal header of each request,
as App Service Authentication turns its session cookie into it. Local only: nothing here is deployed."""

from __future__ import annotations

import html
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlsplit

from shared.control import ADMIN, encode_principal
from shared.control.auth import CONTRIBUTOR, PRINCIPAL_HEADER

COOKIE = "local_principal"
CONSOLE = "/api/console"
USERS = {
    ADMIN: ("admin@contoso.example", ADMIN),
    CONTRIBUTOR: ("contributor@contoso.example", CONTRIBUTOR),
    "none": ("nobody@contoso.example", "Reader"),
}


class Answer:
    """What the host sends back for a /.auth/ request: a status, headers and an HTML body."""

    def __init__(self, status: int, headers: dict[str, str], body: str = "") -> None:
        self.status, self.headers, self.body = status, headers, body.encode()


def answer(path_and_query: str) -> Answer | None:
    """The answer to a /.auth/ request, or None when the path is not one of them."""
    parts = urlsplit(path_and_query)
    query = parse_qs(parts.query)
    if parts.path == "/.auth/login/aad":
        links = "".join(
            f'<li><a href="/.auth/login/local?as={key}">{html.escape(name)} ({role})</a></li>'
            for key, (name, role) in USERS.items()
        )
        page = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Local sign-in</title></head><body>'
            "<main><h1>Local sign-in</h1><p>The local host has no Microsoft Entra ID: sign in as</p>"
            f"<ul>{links}</ul></main></body></html>"
        )
        return Answer(200, {}, page)
    if parts.path == "/.auth/login/local" and query.get("as", [""])[0] in USERS:
        name, role = USERS[query["as"][0]]
        cookie = f"{COOKIE}={encode_principal(name, role)}; Path=/; HttpOnly; SameSite=Strict"
        return Answer(302, {"location": CONSOLE, "set-cookie": cookie})
    if parts.path == "/.auth/logout":
        return Answer(302, {"location": "/.auth/login/aad", "set-cookie": f"{COOKIE}=; Path=/; Max-Age=0"})
    return None


def with_principal(headers: dict[str, str]) -> dict[str, str]:
    """The request's headers, with the principal of the local sign-in cookie when it sends no principal."""
    if any(key.lower() == PRINCIPAL_HEADER for key in headers):
        return headers
    cookies = SimpleCookie()
    cookies.load(next((v for k, v in headers.items() if k.lower() == "cookie"), ""))
    if COOKIE in cookies and cookies[COOKIE].value:
        return {**headers, PRINCIPAL_HEADER: cookies[COOKIE].value}
    return headers
