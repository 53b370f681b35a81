"""The upload page in a real Chromium: files go from the page straight to S3.

Debian's Chromium drives the page served by `live_server`; the page posts the
files to the embedded S3 endpoint (another origin, so CORS and its preflight
are real) and calls the API like a user's browser does.
"""

from __future__ import annotations

import base64
import io
import os
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.test import Client
from PIL import Image

from tests.conftest import make_upload, wait_for
from tests.environment import TEST_ENV
from uploads import s3
from uploads.models import Status, Upload

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, FilePayload, Page, Request

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
STORAGE_URL = TEST_ENV["AWS_ENDPOINT_URL"]
# Without a worker an upload stays "processing"; with one it may already be "ready".
ARRIVED = re.compile(r"^(processing|ready)$")
ARRIVED_LABEL = re.compile(r"^(Processing…|Ready)$")


def jpeg(size: tuple[int, int] = (64, 48), noise: bool = False) -> bytes:
    """A real JPEG; with noise it barely compresses, so a large one is easy to make."""
    if noise:
        image = Image.frombytes(
            "RGB", size, random.Random(size[0]).randbytes(size[0] * size[1] * 3)
        )
    else:
        image = Image.new("RGB", size, (200, 30, 30))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), (30, 120, 200)).save(buffer, "PNG")
    return buffer.getvalue()


def a_file(name: str, mime_type: str, data: bytes) -> FilePayload:
    return {"name": name, "mimeType": mime_type, "buffer": data}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: install Debian's chromium package"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with pytest.MonkeyPatch.context() as patch:
        # Between calls, Playwright's sync API leaves its event loop marked as
        # running in this thread, which Django takes for an async context; the
        # ORM calls of these tests still run synchronously, one at a time.
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            yield chromium
            chromium.close()


@pytest.fixture
def page(browser: Browser, live_server: Any, transactional_db: None) -> Iterator[Page]:
    from playwright.sync_api import expect

    expect.set_options(timeout=10_000)
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1000, "height": 800})
    context.set_default_timeout(10_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    refused: list[str] = []

    def note_policy_violation(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            refused.append(message.text)

    page.on("console", note_policy_violation)
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
    assert not refused, f"The Content-Security-Policy refused: {refused}"


@pytest.fixture
def signed_in(page: Page, live_server: Any, user: Any) -> Page:
    """A page with alice's session cookie: quicker than the login form, tested once."""
    client = Client()
    client.force_login(user)
    session = client.cookies["sessionid"].value
    page.context.add_cookies([{"name": "sessionid", "value": session, "url": live_server.url}])
    return page


def open_uploads(page: Page) -> Page:
    page.goto("/")
    wait_until_loaded(page)
    return page


def wait_until_loaded(page: Page) -> None:
    from playwright.sync_api import expect

    expect(page.get_by_role("heading", name="Upload files")).to_be_visible()
    # The page's module has run once the first page of earlier uploads is in.
    expect(page.locator("#gallery")).to_have_attribute("aria-busy", "false")


def row(page: Page, filename: str) -> Any:
    return page.locator("#queue .row", has_text=filename)


def api_calls(page: Page, method: str = "POST", path: str = "/api/uploads/") -> list[Request]:
    """Requests the page sends to one API endpoint, collected from now on."""
    seen: list[Request] = []
    page.on(
        "request",
        lambda request: (
            seen.append(request)
            if request.method == method and request.url.endswith(path)
            else None
        ),
    )
    return seen


def storage_posts(page: Page) -> list[Request]:
    seen: list[Request] = []
    page.on(
        "request",
        lambda request: (
            seen.append(request)
            if request.method == "POST" and request.url.startswith(STORAGE_URL)
            else None
        ),
    )
    return seen


# Builds Files in the page from bytes and drops them the way a user's drag does.
DROP_FILES = """
([zoneId, files]) => {
  const transfer = new DataTransfer();
  for (const { name, type, base64 } of files) {
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    transfer.items.add(new File([bytes], name, { type }));
  }
  const zone = document.getElementById(zoneId);
  const options = { bubbles: true, cancelable: true, dataTransfer: transfer };
  // dispatchEvent() is false when a listener took the event (preventDefault).
  const fire = (type) => !zone.dispatchEvent(new DragEvent(type, options));
  const accepted = fire("dragenter") && fire("dragover");
  const highlighted = zone.classList.contains("over");
  const dropped = fire("drop");
  return { accepted, highlighted, dropped, highlightedAfter: zone.classList.contains("over") };
}
"""


def drop(page: Page, *files: tuple[str, str, bytes]) -> dict[str, bool]:
    payload = [
        {"name": name, "type": mime, "base64": base64.b64encode(data).decode()}
        for name, mime, data in files
    ]
    return dict(page.evaluate(DROP_FILES, ["dropzone", payload]))


def throttle_uploads(page: Page, bytes_per_second: int) -> Any:
    """Slow the page's uploads down (DevTools network emulation); -1 lifts the limit."""
    session = page.context.new_cdp_session(page)
    session.send("Network.enable")
    session.send(
        "Network.emulateNetworkConditions",
        {
            "offline": False,
            "latency": 0,
            "downloadThroughput": -1,
            "uploadThroughput": bytes_per_second,
        },
    )
    return session


def progress_value(page: Page, filename: str) -> float:
    return float(row(page, filename).locator("progress").evaluate("node => node.value"))


# --- Tests ---


def test_photo_dropped_after_signing_in_goes_to_storage_and_is_listed(
    page: Page, user: Any
) -> None:
    from playwright.sync_api import expect

    page.goto("/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("pw-alice-1234")
    page.get_by_role("button", name="Sign in").click()
    wait_until_loaded(page)
    expect(page.locator("#unread-label")).to_have_text("No new notifications")
    to_storage = storage_posts(page)
    data = jpeg()

    outcome = drop(page, ("photo.jpg", "image/jpeg", data))

    assert outcome == {
        "accepted": True,
        "highlighted": True,
        "dropped": True,
        "highlightedAfter": False,
    }
    photo = row(page, "photo.jpg")
    expect(photo).to_have_attribute("data-state", ARRIVED)
    expect(photo.locator("progress")).to_have_js_property("value", 100)
    expect(photo.locator(".percent")).to_have_text("100 %")
    expect(photo.locator(".status")).to_have_text(ARRIVED_LABEL)
    expect(photo.get_by_role("button", name="Cancel photo.jpg", include_hidden=True)).to_be_hidden()
    expect(page.locator("#announcer")).to_have_text(re.compile(r"^photo\.jpg: (Processing…|Ready)"))
    # The bytes went to storage, in one POST, never through Django.
    bucket_url = f"{STORAGE_URL}/{TEST_ENV['AWS_STORAGE_BUCKET_NAME']}"
    assert [request.url for request in to_storage] == [bucket_url]
    upload = Upload.objects.get()
    assert upload.owner == user
    assert upload.status in (Status.PROCESSING, Status.READY)
    assert upload.verified_size == len(data)
    info = s3.head(upload.key)
    assert info is not None and info.size == len(data)
    assert photo.get_attribute("data-upload-id") == str(upload.pk)

    page.reload()
    wait_until_loaded(page)

    tile = page.locator("#gallery .tile")
    expect(tile).to_have_count(1)
    expect(tile).to_have_attribute("data-upload-id", str(upload.pk))
    expect(tile.locator(".name")).to_have_text("photo.jpg")
    expect(tile.locator(".status")).to_have_text(ARRIVED_LABEL)
    expect(page.locator("#gallery-empty")).to_be_hidden()
    expect(page.locator("#queue .row")).to_have_count(0)


def test_several_files_upload_side_by_side(signed_in: Page) -> None:
    from playwright.sync_api import expect

    page = open_uploads(signed_in)
    to_storage = storage_posts(page)
    files = [
        a_file("red.jpg", "image/jpeg", jpeg()),
        a_file("wide.jpg", "image/jpeg", jpeg((120, 40))),
        a_file("blue.png", "image/png", png()),
    ]

    page.set_input_files("#file-input", files=files)

    for name in ("red.jpg", "wide.jpg", "blue.png"):
        expect(row(page, name)).to_have_attribute("data-state", ARRIVED)
        expect(row(page, name).locator(".percent")).to_have_text("100 %")
        # Each row shows the file itself while it uploads.
        expect(row(page, name).locator(".preview img")).to_have_count(1)
    assert len(to_storage) == 3
    uploads = Upload.objects.order_by("filename")
    assert [(u.filename, u.content_type) for u in uploads] == [
        ("blue.png", "image/png"),
        ("red.jpg", "image/jpeg"),
        ("wide.jpg", "image/jpeg"),
    ]
    assert all(u.status in (Status.PROCESSING, Status.READY) for u in uploads)


def test_disallowed_type_is_refused_on_the_page_without_creating_an_upload(
    signed_in: Page,
) -> None:
    from playwright.sync_api import expect

    page = open_uploads(signed_in)
    starts = api_calls(page)

    drop(page, ("page.html", "text/html", b"<script>alert(1)</script>"))

    refused = row(page, "page.html")
    expect(refused).to_have_attribute("data-state", "rejected")
    expect(refused.locator(".status")).to_have_text("Rejected")
    expect(refused.locator(".message")).to_have_text(
        "This kind of file is not accepted. Allowed: JPEG image, PNG image, WebP image, "
        "GIF image, HEIC image, HEIF image, AVIF image, PDF document."
    )
    expect(page.locator("#announcer")).to_contain_text("page.html: Rejected. This kind of file")
    # Nothing to retry or cancel: the file itself is the problem.
    expect(
        refused.get_by_role("button", name="Retry page.html", include_hidden=True)
    ).to_be_hidden()
    expect(
        refused.get_by_role("button", name="Cancel page.html", include_hidden=True)
    ).to_be_hidden()
    assert starts == []
    assert not Upload.objects.exists()


def test_file_over_the_limit_is_refused_before_it_is_sent(signed_in: Page, settings: Any) -> None:
    from playwright.sync_api import expect

    settings.UPLOAD_MAX_BYTES = 1000
    page = open_uploads(signed_in)
    expect(page.locator("#limits")).to_contain_text("Up to 1000 B each")
    starts = api_calls(page)

    page.set_input_files("#file-input", files=[a_file("big.jpg", "image/jpeg", jpeg(noise=True))])

    big = row(page, "big.jpg")
    expect(big).to_have_attribute("data-state", "rejected")
    expect(big.locator(".message")).to_have_text(
        re.compile(r"^This file is [\d.]+ KB; the limit is 1000 B\.$")
    )
    assert starts == []
    assert not Upload.objects.exists()


def test_server_refusal_shows_the_servers_message(signed_in: Page, settings: Any) -> None:
    from playwright.sync_api import expect

    page = open_uploads(signed_in)
    # The limit drops after the page has read it, so only the server can tell.
    settings.UPLOAD_MAX_BYTES = 1000
    data = jpeg(noise=True)

    page.set_input_files("#file-input", files=[a_file("big.jpg", "image/jpeg", data)])

    big = row(page, "big.jpg")
    expect(big).to_have_attribute("data-state", "rejected")
    expect(big.locator(".message")).to_have_text(
        f"The file is {len(data):,} bytes; the limit is 1,000 bytes."
    )
    expect(big.get_by_role("button", name="Retry big.jpg", include_hidden=True)).to_be_hidden()
    assert not Upload.objects.exists()


def test_storage_failure_is_shown_and_retry_succeeds(signed_in: Page) -> None:
    from playwright.sync_api import Route, expect

    page = open_uploads(signed_in)
    failures = [503]

    def storage_fails_once(route: Route) -> None:
        if route.request.method == "POST" and failures:
            route.fulfill(
                status=failures.pop(),
                headers={"Access-Control-Allow-Origin": "*"},
                body="<Error><Code>SlowDown</Code></Error>",
            )
        else:
            route.continue_()

    page.route(f"{STORAGE_URL}/**", storage_fails_once)

    page.set_input_files("#file-input", files=[a_file("photo.jpg", "image/jpeg", jpeg())])

    photo = row(page, "photo.jpg")
    expect(photo).to_have_attribute("data-state", "error")
    expect(photo.locator(".message")).to_have_text("Storage refused the file (503).")

    photo.get_by_role("button", name="Retry photo.jpg").click()

    expect(photo).to_have_attribute("data-state", ARRIVED)
    expect(photo.locator(".percent")).to_have_text("100 %")
    # The failed attempt's upload was discarded: only the retried one is left.
    upload = Upload.objects.get()
    assert upload.status in (Status.PROCESSING, Status.READY)
    assert photo.get_attribute("data-upload-id") == str(upload.pk)


def test_a_lost_arrival_is_announced_again_until_the_server_sees_the_file(
    signed_in: Page,
) -> None:
    from playwright.sync_api import Route, expect

    page = open_uploads(signed_in)
    completes: list[str] = []

    def first_complete_lost(route: Route) -> None:
        completes.append(route.request.url)
        if len(completes) == 1:  # as if the request died on the way
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route("**/api/uploads/*/complete", first_complete_lost)
    page.set_input_files("#file-input", files=[a_file("late.jpg", "image/jpeg", jpeg())])

    late = row(page, "late.jpg")
    # No consumer runs here, so only the page's second call moves it on.
    expect(late).to_have_attribute("data-state", ARRIVED, timeout=20_000)
    assert len(completes) == 2


def test_storage_that_refuses_this_origin_is_reported(signed_in: Page) -> None:
    from playwright.sync_api import expect

    from uploads import provisioning

    page = open_uploads(signed_in)
    # The progress listeners make the upload preflighted; storage answers the
    # preflight from the bucket's CORS rules, which now name another site.
    s3.client("s3").put_bucket_cors(
        Bucket=s3.bucket(),
        CORSConfiguration={
            "CORSRules": [
                {"AllowedOrigins": ["https://elsewhere.example"], "AllowedMethods": ["POST"]}
            ]
        },
    )
    try:
        page.set_input_files("#file-input", files=[a_file("photo.jpg", "image/jpeg", jpeg())])

        photo = row(page, "photo.jpg")
        expect(photo).to_have_attribute("data-state", "error")
        expect(photo.locator(".message")).to_have_text("The connection to storage failed.")
        expect(photo.get_by_role("button", name="Retry photo.jpg")).to_be_visible()
    finally:
        provisioning.put_cors()
    assert Upload.objects.get().status == Status.PENDING


def test_cancel_during_upload_then_retry(signed_in: Page) -> None:
    from playwright.sync_api import expect

    page = open_uploads(signed_in)
    network = throttle_uploads(page, 500_000)
    data = jpeg((1000, 1000), noise=True)  # about 2 MB: several seconds at this speed

    page.set_input_files("#file-input", files=[a_file("big.jpg", "image/jpeg", data)])

    big = row(page, "big.jpg")
    expect(big).to_have_attribute("data-state", "uploading")
    page.wait_for_function("() => document.querySelector('#queue progress').value >= 5")
    expect(big.locator(".speed")).to_have_text(re.compile(r"^\d[\d.]* (KB|MB)/s$"))
    assert 5 <= progress_value(page, "big.jpg") < 100

    big.get_by_role("button", name="Cancel big.jpg").click()

    expect(big).to_have_attribute("data-state", "cancelled")
    expect(big.locator(".status")).to_have_text("Cancelled")
    expect(page.locator("#announcer")).to_have_text("big.jpg: Cancelled")
    # The upload that never arrived is deleted, so it is not listed.
    wait_for(lambda: not Upload.objects.exists(), timeout=5)

    network.send(
        "Network.emulateNetworkConditions",
        {
            "offline": False,
            "latency": 0,
            "downloadThroughput": -1,
            "uploadThroughput": -1,
        },
    )
    big.get_by_role("button", name="Retry big.jpg").click()

    expect(big).to_have_attribute("data-state", ARRIVED)
    expect(big.locator("progress")).to_have_js_property("value", 100)
    upload = Upload.objects.get()
    assert upload.verified_size == len(data)


def test_keyboard_alone_can_choose_cancel_and_retry(signed_in: Page) -> None:
    from playwright.sync_api import expect

    page = open_uploads(signed_in)
    # Playwright starts intercepting file pickers with the first listener; one
    # added in the same breath as the key press can miss the picker.
    page.on("filechooser", lambda chooser: None)
    chooser_label = page.locator("label[for=file-input]")
    expect(chooser_label).to_have_css("outline-style", "none")
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "file-input":
            break
    else:
        pytest.fail("Tab never reached the file input")
    # The input is hidden visually, so its label shows where the focus is.
    expect(chooser_label).to_have_css("outline-style", "solid")
    network = throttle_uploads(page, 500_000)

    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Enter")
    chooser.value.set_files([a_file("big.jpg", "image/jpeg", jpeg((1000, 1000), noise=True))])

    big = row(page, "big.jpg")
    expect(big).to_have_attribute("data-state", "uploading")
    expect(page.locator("#announcer")).to_have_text("big.jpg: Uploading")
    page.keyboard.press("Tab")
    expect(big.get_by_role("button", name="Cancel big.jpg")).to_be_focused()
    page.keyboard.press("Enter")
    expect(big).to_have_attribute("data-state", "cancelled")
    # Focus stays in the row, on the button that replaced the one pressed.
    expect(big.get_by_role("button", name="Retry big.jpg")).to_be_focused()
    network.send(
        "Network.emulateNetworkConditions",
        {
            "offline": False,
            "latency": 0,
            "downloadThroughput": -1,
            "uploadThroughput": -1,
        },
    )
    page.keyboard.press("Enter")
    expect(big).to_have_attribute("data-state", ARRIVED)
    expect(page.locator("#announcer")).to_have_text(re.compile(r"^big\.jpg: (Processing…|Ready)"))


def test_earlier_uploads_are_listed_a_page_at_a_time(
    signed_in: Page, user: Any, settings: Any
) -> None:
    from playwright.sync_api import expect

    settings.UPLOAD_PAGE_SIZE = 2
    for _ in range(3):
        make_upload(user, Status.READY)

    page = open_uploads(signed_in)

    tiles = page.locator("#gallery .tile")
    expect(tiles).to_have_count(2)
    more = page.get_by_role("button", name="Show more")
    more.click()
    expect(tiles).to_have_count(3)
    expect(more).to_be_hidden()


def test_expired_links_in_the_list_are_signed_again(
    signed_in: Page, user: Any, settings: Any
) -> None:
    from playwright.sync_api import Route

    from uploads.models import Thumbnail

    # The page signs links again once they are older than this less 15 s: here, 1 s.
    settings.DOWNLOAD_URL_EXPIRES = 16
    upload = make_upload(user, Status.READY, jpeg(), detected_type="image/jpeg")
    webp = io.BytesIO()
    Image.new("RGB", (32, 24), (10, 200, 10)).save(webp, "WEBP")
    key = Thumbnail.key_for(upload.pk, "256")
    s3.put(key, webp.getvalue(), "image/webp", "private")
    Thumbnail.objects.create(upload=upload, name="256", file=key, width=32, height=24, bytes=1)
    refused: list[str] = []

    def expired_once(route: Route) -> None:
        if refused:
            route.continue_()
        else:  # as S3 answers a link past its expiry
            refused.append(route.request.url)
            route.fulfill(status=403, body="<Error><Code>AccessDenied</Code></Error>")

    signed_in.route(f"{STORAGE_URL}/**/thumbs/**", expired_once)
    detail = f"/api/uploads/{upload.pk}/"
    asked_again: list[str] = []

    def note_detail_request(request: Request) -> None:
        if detail in request.url:
            asked_again.append(request.url)

    signed_in.on("request", note_detail_request)
    page = open_uploads(signed_in)

    page.wait_for_function(
        "() => document.querySelector('#gallery .tile img')?.naturalWidth === 32"
    )
    assert len(refused) == 1
    assert len(asked_again) == 1  # the tile's links were signed again, once

    link = page.get_by_role("link", name=f"Open {upload.filename}")
    first_href = link.get_attribute("href")
    page.wait_for_timeout(1500)
    with page.expect_popup() as popup:
        link.click()
    popup.value.wait_for_url(f"{STORAGE_URL}/**")
    opened = popup.value.url
    assert opened.startswith(f"{STORAGE_URL}/") and f"{upload.pk}.jpg" in opened
    assert opened != first_href


@pytest.mark.pipeline
def test_processed_photo_shows_its_thumbnail_and_a_notification(
    signed_in: Page, pipeline: Any
) -> None:
    from playwright.sync_api import expect

    page = open_uploads(signed_in)

    page.set_input_files("#file-input", files=[a_file("photo.jpg", "image/jpeg", jpeg((800, 600)))])

    photo = row(page, "photo.jpg")
    expect(photo).to_have_attribute("data-state", "ready", timeout=30_000)
    expect(photo.locator(".status")).to_have_text("Ready")
    thumbnail = photo.locator(".preview img")
    expect(thumbnail).to_have_attribute("alt", "Thumbnail of photo.jpg")
    expect(thumbnail).to_have_attribute("src", re.compile(re.escape(STORAGE_URL)))
    # The signed thumbnail URL really loads from storage.
    expect(thumbnail).to_have_js_property("naturalWidth", 256)
    tile = page.locator("#gallery .tile")
    expect(tile).to_have_attribute("data-status", "ready")
    expect(tile.get_by_role("link", name="Open photo.jpg")).to_be_visible()
    expect(page.locator("#unread-count")).to_have_text("1")
    expect(page.locator("#unread-label")).to_have_text("1 new: “photo.jpg” is uploaded and ready.")

    page.get_by_role("button", name="Mark all read").click()

    expect(page.locator("#unread-label")).to_have_text("No new notifications")
    expect(page.locator("#unread-count")).to_be_hidden()


@pytest.mark.pipeline
def test_a_file_that_is_not_what_it_claims_shows_its_rejection_on_its_own(
    signed_in: Page, pipeline: Any
) -> None:
    from playwright.sync_api import expect

    page = open_uploads(signed_in)
    html = b"<!doctype html><html><body><script>alert(1)</script></body></html>"

    page.set_input_files("#file-input", files=[a_file("fake.jpg", "image/jpeg", html)])

    fake = row(page, "fake.jpg")
    expect(fake).to_have_attribute("data-state", "rejected", timeout=30_000)
    expect(fake.locator(".message")).to_have_text("The file is not a JPEG image.")
    expect(page.locator("#unread-label")).to_have_text(
        "1 new: “fake.jpg” was not accepted: The file is not a JPEG image."
    )
