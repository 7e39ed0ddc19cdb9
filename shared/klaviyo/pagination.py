"""Paged JSON:API collections: every resource of every page, following each page's `links.next`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from shared.klaviyo.errors import KlaviyoError
from shared.klaviyo.transport import Transport


def paged(
    transport: Transport, path: str, group: str, *, params: dict[str, str], what: str
) -> Iterator[dict[str, Any]]:
    """The resources of a collection, a page (one call) at a time. `params` go with the first call
    only: the next-page links Klaviyo sends already carry them, with the cursor."""
    next_path: str | None = path
    page_params: dict[str, str] | None = params
    while next_path:
        document = transport.call("GET", next_path, group, params=page_params, what=what)
        yield from document.get("data", [])
        next_path, page_params = next_page(document, transport.base_url), None


def next_page(document: dict[str, Any], base_url: str) -> str | None:
    """The path of the page after `document`, or None on the last page. A link that leaves
    `base_url` is refused rather than followed: the client sends its API key to that API only."""
    link = (document.get("links") or {}).get("next")
    if not link:
        return None
    if not link.startswith(base_url):
        raise KlaviyoError(f"pagination link leaves {base_url}; refusing to follow it")
    return link[len(base_url) :]
