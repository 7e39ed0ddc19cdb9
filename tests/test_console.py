"""The browser console in a real browser (Debian's chromium, driven by Playwright), against the local host
serving the app over HTTP on the real Azurite, the Klaviyo simulator and the local Key Vault.

Every page here runs with the network to anything but the app blocked; screenshots at 1280 and 390 pixels
wide go to tests/artifacts/ (git-ignored)."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from shared.control import ADMIN, encode_principal, use_services
from shared.control.auth import CONTRIBUTOR
from tests.conftest import API_KEY, AUTH_SETTINGS, SECRET, App, build_app, member_emails
from tools import local_sign_in
from tools.azurite import Azurite
from tools.functions_host import LocalFunctionsHost, serve
from tools.keyvault_sim import LocalKeyVault
from tools.klaviyo_sim import KlaviyoSimulator, SimulatorConfig

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"
ADMIN_P = encode_principal("ada@contoso.example", ADMIN)
CONTRIB_P = encode_principal("cole@contoso.example", CONTRIBUTOR)
WIDE, NARROW = {"width": 1280, "height": 900}, {"width": 390, "height": 844}
# The segment: its email column is not called "email", so it has to be picked; one address twice.
ROWS = 40
SEGMENT = (
    "Customer Id,E-mail Address,First Name,Tier\n"
    + "".join(f"{n},user{n}@example.com,Name{n},gold\n" for n in range(ROWS - 1))
    + f"{ROWS},user3@example.com,Again,silver\n"
)


@dataclass
class Site:
    url: str
    app: App
    klaviyo: KlaviyoSimulator
    list_id: str
    outside: list[str] = field(default_factory=list)  # requests the pages tried to send elsewhere


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is not installed: the console's browser tests need Debian's chromium "
            "(`make test` installs it: apt-get update && apt-get install -y chromium)"
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield launched
        launched.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def site(azurite: Azurite, vault: LocalKeyVault) -> Iterator[Site]:
    # Klaviyo takes 3 s per import job here, so a run stays running long enough to watch.
    with pytest.MonkeyPatch.context() as env, KlaviyoSimulator(SimulatorConfig(processing_seconds=3.0)) as klaviyo:
        for name in AUTH_SETTINGS:
            env.delenv(name, raising=False)
        klaviyo.add_api_key(API_KEY)
        app = build_app(azurite, klaviyo, vault)
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        shutdown = serve(LocalFunctionsHost(app.services, url), port, poll_seconds=0.2, watch_seconds=None)
        try:
            yield Site(url, app, klaviyo, klaviyo.create_list("VIP"))
        finally:
            shutdown()
            use_services(None)


def open_console(browser: Browser, site: Site, principal: str | None, viewport: dict[str, int] = WIDE) -> Page:
    """A page signed in as `principal` with every request to anything but the app refused and recorded. The
    session is a cookie, as App Service Authentication's is: the local host turns it into the principal header
    (tools/local_sign_in.py), so downloads, which a browser sends without a page's extra headers, carry it too."""
    context: BrowserContext = browser.new_context(viewport=viewport, accept_downloads=True)
    if principal:
        context.add_cookies([{"name": local_sign_in.COOKIE, "value": principal, "url": site.url}])

    def only_the_app(route) -> None:
        if route.request.url.startswith(site.url + "/"):
            route.continue_()
        else:
            site.outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_the_app)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(f"{site.url}/api/console")
    return page


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"console-{name}.png"), full_page=True)


def test_add_a_connection_and_an_export_run_it_watch_it_and_download_its_rejects(browser: Browser, site: Site) -> None:
    site.app.upload("vip.csv", SEGMENT.encode())
    page = open_console(browser, site, ADMIN_P)
    expect(page.get_by_role("heading", name="Exports")).to_be_visible()
    expect(page.locator("#who-role")).to_have_text("Admin")

    page.get_by_role("link", name="Connections").click()
    page.get_by_role("link", name="Add connection").click()
    page.get_by_label("Name", exact=True).fill("main")
    page.get_by_label("Display name").fill("Main Klaviyo")
    page.get_by_label("Who may use it").select_option("contributors")
    page.get_by_label("Key Vault secret name").fill(SECRET)
    expect(page.locator("#agreement-text")).to_contain_text("sent to Klaviyo")
    page.get_by_label("I agree to the data privacy agreement above").check()
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_have_text("Saved connection main.")
    expect(page.get_by_role("cell", name="agreed by ada@contoso.example", exact=False)).to_be_visible()

    page.get_by_role("link", name="Exports").click()
    page.get_by_role("link", name="Add export").click()
    page.get_by_label("Name", exact=True).fill("vip")
    page.get_by_label("Connection").select_option("main")
    page.get_by_label("Klaviyo list id").fill(site.list_id)
    page.get_by_label("Storage container").fill(site.app.segments)
    page.get_by_label("File or folder in the container").fill("vip.csv")
    page.get_by_role("button", name="Read the columns").click()
    expect(page.get_by_role("status")).to_have_text("4 columns read from the segment's header.")
    email = page.get_by_label("email", exact=True)
    offered = email.locator("option").all_text_contents()
    assert offered == ["(not sent)", "Customer Id", "E-mail Address", "First Name", "Tier"]
    email.select_option("E-mail Address")
    page.get_by_label("first name", exact=True).select_option("First Name")
    page.get_by_label("Tier (as the custom property Tier)").check()
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_contain_text("Saved export vip. It has not run")
    saved = site.app.services.store.get_export("vip")
    assert saved["mapping"]["email"] == "E-mail Address" and saved["mapping"]["first_name"] == "First Name"
    assert saved["mapping"]["properties"] == {"Tier": "Tier"}
    expect(page.get_by_role("row", name=re.compile("vip"))).to_contain_text("never run")
    shot(page, "exports-1280")

    page.get_by_role("button", name="Run vip now").click()
    expect(page.get_by_role("heading", name="Run of vip")).to_be_visible()
    badge = page.locator(".badge").first
    expect(badge).to_have_text("running", timeout=20_000)  # progress: the page follows the run by itself
    expect(page.get_by_role("button", name="Cancel run")).to_be_visible()
    expect(badge).to_have_text("succeeded", timeout=60_000)
    expect(page.locator('[data-count="rows_read"]')).to_have_text(str(ROWS))
    expect(page.locator('[data-count="duplicates"]')).to_have_text("1")
    expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)
    expect(page.get_by_role("table", name="Rows not imported")).to_contain_text("duplicate")
    shot(page, "run-1280")
    page.set_viewport_size(NARROW)
    shot(page, "run-390")

    with page.expect_download() as download:
        page.get_by_role("link", name="Download rejects.csv").click()
    assert download.value.suggested_filename.endswith("-rejects.csv")
    rejects = Path(download.value.path()).read_text(encoding="utf-8").splitlines()
    assert len(rejects) == 2 and "duplicate" in rejects[1]
    assert "user3@example.com" not in rejects[1], "the rejects file masks identifiers"
    with page.expect_download() as download:
        page.get_by_role("link", name="Download report.json").click()
    assert '"status":"succeeded"' in Path(download.value.path()).read_text(encoding="utf-8").replace(" ", "")
    assert len(member_emails(site.klaviyo, site.list_id)) == ROWS - 1

    page.get_by_role("link", name="Exports").click()
    expect(page.get_by_role("row", name=re.compile("vip"))).to_contain_text("succeeded")
    shot(page, "exports-390")
    assert site.outside == []
    page.context.close()


def test_a_contributor_sees_only_shared_exports_no_connections_and_no_delete(browser: Browser, site: Site) -> None:
    app = site.app
    app.put_connection("main", usable_by="contributors")
    app.put_connection("private", usable_by="admins")
    app.upload("o.csv", b"email\nann@example.com\n")
    app.put_export("shared-one", site.list_id, {"blob": "o.csv"})
    app.put_export("admins-one", site.list_id, {"blob": "o.csv"}, connection="private")

    page = open_console(browser, site, CONTRIB_P, NARROW)
    expect(page.locator("#who-role")).to_have_text("Contributor")
    expect(page.get_by_role("row", name=re.compile("shared-one"))).to_be_visible()
    expect(page.get_by_role("row", name=re.compile("admins-one"))).to_have_count(0)
    expect(page.get_by_role("link", name="Connections")).to_have_count(0)
    expect(page.get_by_role("button", name=re.compile("Delete"))).to_have_count(0)
    expect(page.get_by_role("link", name=re.compile("^(Edit|Add)"))).to_have_count(0)
    expect(page.get_by_role("button", name="Run shared-one now")).to_be_visible()
    shot(page, "contributor-390")
    page.goto(f"{site.url}/api/console#/connections")  # typed by hand: back to the exports
    expect(page.get_by_role("heading", name="Exports")).to_be_visible()
    assert page.url.endswith("#/exports")
    page.set_viewport_size(WIDE)
    shot(page, "contributor-1280")
    assert site.outside == []
    page.context.close()


def test_a_field_error_from_the_api_is_shown_next_to_its_field(browser: Browser, site: Site) -> None:
    site.app.put_connection("main", usable_by="contributors")
    page = open_console(browser, site, ADMIN_P)
    page.goto(f"{site.url}/api/console#/exports/new")
    expect(page.get_by_role("heading", name="Add export")).to_be_visible()
    page.get_by_label("Name", exact=True).fill("bad-list")
    page.get_by_label("Connection").select_option("main")
    page.get_by_label("Klaviyo list id").fill("not a list!")
    page.get_by_label("Storage container").fill(site.app.segments)
    page.get_by_label("File or folder in the container").fill("vip.csv")
    page.get_by_label("email", exact=True).fill("E-mail Address")  # typed: the columns were not read
    page.get_by_role("button", name="Save").click()
    list_id = page.get_by_label("Klaviyo list id")
    expect(page.locator("#f-list-id-error")).to_have_text("must be a Klaviyo list id: letters and digits only")
    expect(list_id).to_have_attribute("aria-invalid", "true")
    expect(list_id).to_be_focused()
    expect(page.get_by_role("alert")).to_contain_text("The export was not saved: the export is not valid")
    expect(page.locator(".field-error:not([hidden])")).to_have_count(1)
    assert site.app.services.store.get_export("bad-list") is None
    shot(page, "field-error-1280")

    page.get_by_label("File or folder in the container").fill("no-such.csv")
    page.get_by_role("button", name="Read the columns").click()  # a problem with the whole segment: at its fieldset
    expect(page.locator("#f-segment-error")).to_contain_text("no-such.csv")
    expect(page.locator("#f-list-id-error")).to_be_hidden()

    site.app.upload("o.csv", b"email\nann@example.com\n")
    site.app.put_export("uses-main", site.list_id, {"blob": "o.csv"})
    page.goto(f"{site.url}/api/console#/connections")
    page.get_by_role("button", name="Delete main").click()  # the confirmation is accepted
    expect(page.get_by_role("alert")).to_contain_text("connection 'main' is used by export(s)")
    assert site.app.services.store.get_connection("main") is not None

    page.goto(f"{site.url}/api/console#/connections/new")
    expect(page.get_by_role("heading", name="Add connection")).to_be_visible()
    page.get_by_label("Name", exact=True).fill("Not A Name")
    page.get_by_label("Display name").fill("x")
    page.get_by_label("Key Vault secret name").fill(SECRET)
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#f-name-error")).to_have_text(
        "must be lowercase letters, digits and single dashes (at most 63)"
    )
    assert site.outside == []
    page.context.close()


def test_the_page_loads_and_works_with_everything_but_the_app_blocked(browser: Browser, site: Site) -> None:
    requested: list[str] = []
    page = open_console(browser, site, ADMIN_P)
    page.on("request", lambda request: requested.append(request.url))
    page.reload()
    expect(page.get_by_role("heading", name="Exports")).to_be_visible()
    # The style sheet came from the app (the header's colour is its own), the script drew the screen.
    background = page.locator("header").evaluate("node => getComputedStyle(node).backgroundColor")
    assert background == "rgb(20, 50, 79)"
    assert requested and all(url.startswith(site.url + "/api/") for url in requested), requested
    assert site.outside == []
    page.keyboard.press("Tab")  # the first stop is the skip link, which moves focus to the content
    expect(page.get_by_role("link", name="Skip to the content")).to_be_focused()
    page.close()


def test_without_a_principal_the_console_asks_to_sign_in_and_the_local_sign_in_works(
    browser: Browser, site: Site
) -> None:
    page = open_console(browser, site, None)
    expect(page.get_by_role("alert")).to_contain_text("no authenticated caller")
    page.get_by_role("link", name="Sign in").click()
    page.get_by_role("link", name=re.compile(r"\(Contributor\)")).click()
    expect(page.locator("#who-role")).to_have_text("Contributor")
    expect(page.get_by_role("heading", name="Exports")).to_be_visible()
    assert site.outside == []
    page.context.close()
