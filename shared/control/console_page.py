"""The browser console: one page and its script and style, bundled in the package (no CDN, no external
font or script, so it works where the app has no internet) and served by the app's `console` function.

The page holds no data: it calls the same API as any client. It is served only to a caller with a role
(the same identify() as every API call), and shows the caller's name and role, which decide what it offers."""

from __future__ import annotations

import html
from importlib import resources
from typing import NamedTuple

from shared.control.auth import ADMIN, CONTRIBUTOR, AuthError, identify

# The files the console is made of: the name in the URL -> (file in shared/control/console/, content type).
ASSETS = {
    "": ("index.html", "text/html"),
    "console.js": ("console.js", "text/javascript"),
    "console.css": ("console.css", "text/css"),
}
# Everything from the app itself; nothing inline; never framed.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
SIGN_IN = "/.auth/login/aad?post_login_redirect_uri=/api/console"


class Page(NamedTuple):
    status: int
    body: bytes
    content_type: str


def _file(name: str) -> str:
    return resources.files("shared.control").joinpath("console", name).read_text(encoding="utf-8")


def console_page(headers: dict[str, str], asset: str = "") -> Page:
    """The page or one of its files for this caller: 401 (with a sign-in link) without a principal, 403
    without a role, 500 when the app's authentication is unsafe, 404 for a file the console does not have."""
    try:
        caller = identify(headers)
    except AuthError as exc:
        return _refusal(exc.status, str(exc))
    role = ADMIN if caller.is_admin else CONTRIBUTOR if caller.is_contributor else ""
    if not role:
        return _refusal(403, "your account has neither app role of this app (Admin, Contributor): ask an Admin")
    if asset not in ASSETS:
        return Page(404, b"not found", "text/plain")
    name, content_type = ASSETS[asset]
    text = _file(name)
    if name == "index.html":
        text = text.replace("{{role}}", role).replace("{{name}}", html.escape(caller.name, quote=True))
    return Page(200, text.encode(), content_type)


def _refusal(status: int, message: str) -> Page:
    link = f'<p><a href="{SIGN_IN}">Sign in</a></p>' if status == 401 else ""
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Klaviyo exports</title></head>'
        f'<body><main><h1>Klaviyo exports</h1><p role="alert">{html.escape(message)}</p>{link}</main></body></html>'
    )
    return Page(status, body.encode(), "text/html")
