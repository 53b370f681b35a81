from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings
from django.test import Client
from django.utils import timezone
from PIL import Image

from tests.conftest import ROOT, make_upload, post_to_s3, wait_for
from uploads import s3
from uploads.models import Notification, Status, UnconfirmedEmail, Upload

pytestmark = pytest.mark.django_db


def jpeg_bytes(size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, "JPEG")
    return buffer.getvalue()


def start(client: Client, **body: Any) -> Any:
    return client.post("/api/uploads/", json.dumps(body), content_type="application/json")


def start_jpeg(client: Client, data: bytes, filename: str = "photo.jpg") -> dict[str, Any]:
    response = start(client, filename=filename, content_type="image/jpeg", size=len(data))
    assert response.status_code == 201, response.content
    return response.json()


def error_code(response: Any) -> str:
    return str(response.json()["error"]["code"])


def unordered(conditions: list[Any]) -> list[str]:
    """Policy conditions in a comparable form, whatever their order."""
    return sorted(json.dumps(condition, sort_keys=True) for condition in conditions)


def csrf_client(user: Any) -> tuple[Client, str]:
    """A signed-in client that enforces CSRF, and the token the page gives it."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.get("/")  # sets the csrftoken cookie, as the page does
    return client, client.cookies["csrftoken"].value


def notify(user: Any) -> Notification:
    upload = make_upload(user, Status.READY)
    return Notification.objects.create(
        owner=user, upload=upload, kind=Status.READY, message="ready.jpg is ready."
    )


def test_start_returns_a_sigv4_form_bound_to_key_type_and_size(
    alice: Client, settings: Any
) -> None:
    # Not the default, so that a hard-coded lifetime would show.
    settings.UPLOAD_URL_EXPIRES = 420
    response = start(alice, filename="holiday.jpg", content_type="image/jpeg", size=12345)

    assert response.status_code == 201
    body = response.json()
    upload = Upload.objects.get(pk=body["id"])
    assert upload.status == Status.PENDING
    assert upload.key.startswith("uploads/") and upload.key.endswith(".jpg")
    assert "holiday" not in upload.key
    assert body["upload"]["status"] == "pending"
    assert body["url"] == f"{settings.AWS_ENDPOINT_URL}/{settings.AWS_STORAGE_BUCKET_NAME}"
    fields = body["fields"]
    # Nothing beyond what the policy pins down: no ACL making the object public, say.
    assert set(fields) == {
        "key",
        "Content-Type",
        "x-amz-algorithm",
        "x-amz-credential",
        "x-amz-date",
        "policy",
        "x-amz-signature",
    }
    assert fields["key"] == upload.key
    assert fields["Content-Type"] == "image/jpeg"
    assert fields["x-amz-algorithm"] == "AWS4-HMAC-SHA256"
    signed_at = datetime.strptime(fields["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - signed_at).total_seconds()) < 60
    scope = f"{signed_at:%Y%m%d}/{settings.AWS_S3_REGION_NAME}/s3/aws4_request"
    assert fields["x-amz-credential"] == f"{settings.AWS_ACCESS_KEY_ID}/{scope}"

    policy = json.loads(base64.b64decode(fields["policy"]))
    assert set(policy) == {"expiration", "conditions"}
    assert unordered(policy["conditions"]) == unordered(
        [
            {"bucket": settings.AWS_STORAGE_BUCKET_NAME},
            {"key": upload.key},
            {"Content-Type": "image/jpeg"},
            ["content-length-range", 12345, 12345],
            {"x-amz-algorithm": "AWS4-HMAC-SHA256"},
            {"x-amz-credential": fields["x-amz-credential"]},
            {"x-amz-date": fields["x-amz-date"]},
        ]
    )
    expiration = datetime.fromisoformat(policy["expiration"].replace("Z", "+00:00"))
    lifetime = (expiration - datetime.now(UTC)).total_seconds()
    assert 420 - 5 < lifetime <= 420
    expires_at = datetime.fromisoformat(body["expires_at"])
    assert abs((expires_at - expiration).total_seconds()) < 5


def test_keys_are_unique_and_never_built_from_the_filename(alice: Client) -> None:
    keys = {
        start_jpeg(alice, b"x" * 10, filename="../../etc/passwd.jpg")["fields"]["key"]
        for _ in range(5)
    }
    assert len(keys) == 5
    assert all(".." not in key and "passwd" not in key for key in keys)
    assert Upload.objects.filter(filename="passwd.jpg").count() == 5


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"filename": "big.jpg", "content_type": "image/jpeg", "size": 10**12}, "too_large"),
        ({"filename": "page.html", "content_type": "text/html", "size": 10}, "type_not_allowed"),
        (
            {"filename": "x.exe", "content_type": "application/x-msdownload", "size": 10},
            "type_not_allowed",
        ),
        ({"filename": "///", "content_type": "image/jpeg", "size": 10}, "invalid_filename"),
        ({"filename": "\x00\x01", "content_type": "image/jpeg", "size": 10}, "invalid_filename"),
        (
            {"filename": "a" * 300 + ".jpg", "content_type": "image/jpeg", "size": 10},
            "invalid_filename",
        ),
        ({"filename": "a.jpg", "content_type": "image/jpeg", "size": -1}, "invalid"),
        ({"filename": "a.jpg", "content_type": "image/jpeg", "size": 0}, "invalid"),
        ({"filename": "a.jpg", "content_type": "image/jpeg"}, "invalid"),
        ({"filename": "a.jpg", "content_type": "image/jpeg", "size": "many"}, "invalid"),
        ({"content_type": "image/jpeg", "size": 10}, "invalid"),
    ],
)
def test_start_refuses_bad_input_with_a_code(
    alice: Client, body: dict[str, Any], code: str
) -> None:
    response = start(alice, **body)
    assert response.status_code == 400
    assert error_code(response) == code
    assert response.json()["error"]["message"]
    assert not Upload.objects.exists()


def test_start_refuses_malformed_json(alice: Client) -> None:
    for payload in ("{not json", "[1, 2]", ""):
        response = alice.post("/api/uploads/", payload, content_type="application/json")
        assert response.status_code == 400
        assert error_code(response) == "invalid"
    assert not Upload.objects.exists()


def test_filename_is_sanitized_for_display(alice: Client) -> None:
    body = start_jpeg(alice, b"x", filename="C:\\Users\\me\\  my\tphoto\u0007 .jpg")
    assert body["upload"]["filename"] == "my photo .jpg"


def test_anonymous_users_are_refused(client: Client) -> None:
    assert start(client, filename="a.jpg", content_type="image/jpeg", size=1).status_code == 401
    assert client.get("/api/uploads/").status_code == 401
    assert client.get("/api/notifications/").status_code == 401
    assert client.get("/").status_code == 302


def test_post_without_csrf_token_is_refused(user: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    response = start(client, filename="a.jpg", content_type="image/jpeg", size=1)
    assert response.status_code == 403
    assert error_code(response) == "csrf_failed"

    client.get("/")  # sets the csrftoken cookie, as the page does
    token = client.cookies["csrftoken"].value
    response = client.post(
        "/api/uploads/",
        json.dumps({"filename": "a.jpg", "content_type": "image/jpeg", "size": 1}),
        content_type="application/json",
        HTTP_X_CSRFTOKEN=token,
    )
    assert response.status_code == 201


def test_complete_without_csrf_token_is_refused_and_changes_nothing(user: Any) -> None:
    # The file is in S3, so an accepted call would move the upload on.
    upload = make_upload(user, Status.PENDING, jpeg_bytes())
    client, token = csrf_client(user)
    url = f"/api/uploads/{upload.pk}/complete"

    response = client.post(url)
    assert response.status_code == 403
    assert error_code(response) == "csrf_failed"
    upload.refresh_from_db()
    assert upload.status == Status.PENDING and upload.uploaded_at is None

    response = client.post(url, HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 200
    assert Upload.objects.get(pk=upload.pk).status == Status.PROCESSING


def test_delete_without_csrf_token_is_refused_and_keeps_the_upload(user: Any) -> None:
    upload = make_upload(user, Status.READY)
    client, token = csrf_client(user)
    url = f"/api/uploads/{upload.pk}/"

    response = client.delete(url)
    assert response.status_code == 403
    assert error_code(response) == "csrf_failed"
    assert Upload.objects.filter(pk=upload.pk).exists()

    assert client.delete(url, HTTP_X_CSRFTOKEN=token).status_code == 204
    assert not Upload.objects.filter(pk=upload.pk).exists()


def test_marking_read_without_csrf_token_is_refused_and_leaves_them_unread(user: Any) -> None:
    notification = notify(user)
    client, token = csrf_client(user)
    url = "/api/notifications/read"

    response = client.post(url, "{}", content_type="application/json")
    assert response.status_code == 403
    assert error_code(response) == "csrf_failed"
    notification.refresh_from_db()
    assert not notification.read

    response = client.post(url, "{}", content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert response.json() == {"marked": 1}
    notification.refresh_from_db()
    assert notification.read


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/uploads/{id}/"),
        ("DELETE", "/api/uploads/{id}/"),
        ("POST", "/api/uploads/{id}/complete"),
        ("GET", "/api/notifications/"),
        ("POST", "/api/notifications/read"),
    ],
)
def test_anonymous_users_are_refused_everywhere_and_change_nothing(
    client: Client, user: Any, method: str, path: str
) -> None:
    # Signed in, these calls would move the upload on, delete it, or mark all read.
    upload = make_upload(user, Status.PENDING, jpeg_bytes())
    notification = notify(user)

    response = client.generic(
        method, path.format(id=upload.pk), "{}", content_type="application/json"
    )

    assert response.status_code == 401
    assert set(response.json()) == {"error"}
    assert set(response.json()["error"]) == {"code", "message"}
    assert error_code(response) == "not_authenticated"
    assert response.json()["error"]["message"]
    upload.refresh_from_db()
    assert upload.status == Status.PENDING and upload.uploaded_at is None
    notification.refresh_from_db()
    assert not notification.read


def test_upload_straight_to_s3_then_complete(alice: Client) -> None:
    data = jpeg_bytes()
    body = start_jpeg(alice, data)

    assert post_to_s3(body, data).status_code == 204
    stored = s3.head(body["fields"]["key"])
    assert stored is not None and stored.content_type == "image/jpeg"
    response = alice.post(f"/api/uploads/{body['id']}/complete")

    assert response.status_code == 200
    assert response.json()["status"] == "processing"
    upload = Upload.objects.get(pk=body["id"])
    assert upload.verified_size == len(data)
    assert upload.etag
    # The second call (or the S3 event arriving later) changes nothing.
    again = alice.post(f"/api/uploads/{body['id']}/complete")
    assert again.json()["status"] == "processing"
    assert Upload.objects.get(pk=body["id"]).uploaded_at == upload.uploaded_at


def test_complete_before_the_file_arrives_is_a_conflict(alice: Client) -> None:
    body = start_jpeg(alice, b"12345")
    response = alice.post(f"/api/uploads/{body['id']}/complete")
    assert response.status_code == 409
    assert error_code(response) == "not_uploaded"
    assert Upload.objects.get(pk=body["id"]).status == Status.PENDING


# Objects go after the commit, so the transaction must really commit.
@pytest.mark.django_db(transaction=True)
def test_file_larger_than_declared_is_rejected_on_complete(alice: Client) -> None:
    # moto's server does not enforce the policy's content-length-range, so the
    # server must check the size itself.
    body = start_jpeg(alice, b"12345")
    assert post_to_s3(body, b"1234567890").status_code == 204

    response = alice.post(f"/api/uploads/{body['id']}/complete")

    assert response.json()["status"] == "rejected"
    assert "10 bytes" in response.json()["error"]
    # Deleted after commit, by this request or by a consumer that saw the event first.
    key = Upload.objects.get(pk=body["id"]).key
    wait_for(lambda: s3.head(key) is None, timeout=10)


def test_the_original_is_linked_by_a_short_lived_signed_url_once_ready(alice: Client) -> None:
    data = jpeg_bytes()
    body = start_jpeg(alice, data)
    post_to_s3(body, data)
    assert alice.post(f"/api/uploads/{body['id']}/complete").json()["url"] is None
    Upload.objects.filter(pk=body["id"]).update(status=Status.READY, detected_type="image/jpeg")

    detail = alice.get(f"/api/uploads/{body['id']}/").json()

    assert "X-Amz-Signature=" in detail["url"] and "X-Amz-Expires=300" in detail["url"]
    response = requests.get(detail["url"], timeout=10)
    assert response.content == data
    assert response.headers["Content-Type"] == "image/jpeg"
    assert response.headers["Content-Disposition"] == "inline; filename*=UTF-8''photo.jpg"


def test_list_is_newest_first_and_paginated(alice: Client, user: Any, settings: Any) -> None:
    settings.UPLOAD_PAGE_SIZE = 2
    ids = [start_jpeg(alice, b"x", filename=f"{n}.jpg")["id"] for n in range(5)]

    seen = []
    url = "/api/uploads/"
    while url:
        page = alice.get(url).json()
        assert len(page["results"]) <= 2
        seen += [item["id"] for item in page["results"]]
        url = page["next"]

    assert seen == list(reversed(ids))


def test_invalid_cursor_is_a_clear_error(alice: Client) -> None:
    response = alice.get("/api/uploads/?cursor=@@@")
    assert response.status_code == 400
    assert error_code(response) == "invalid"


def test_another_users_upload_is_not_found_everywhere(alice: Client, other_user: Any) -> None:
    data = jpeg_bytes()
    body = start_jpeg(alice, data)
    # The file is in S3, so a "complete" that got through would move the upload on.
    assert post_to_s3(body, data).status_code == 204
    bob = Client()
    bob.force_login(other_user)
    url = f"/api/uploads/{body['id']}/"
    missing = bob.get(f"/api/uploads/{uuid.uuid4()}/").json()

    for response in (bob.get(url), bob.delete(url), bob.post(url + "complete")):
        assert response.status_code == 404
        # Just like a missing upload: nothing tells bob that this one exists.
        assert response.json() == missing
    assert bob.get("/api/uploads/").json()["results"] == []
    upload = Upload.objects.get(pk=body["id"])
    assert upload.status == Status.PENDING
    assert upload.uploaded_at is None and upload.verified_size is None
    assert alice.get(url).json()["status"] == "pending"


# Objects go after the commit, so the transaction must really commit.
@pytest.mark.django_db(transaction=True)
def test_delete_removes_row_and_objects(alice: Client) -> None:
    data = jpeg_bytes()
    body = start_jpeg(alice, data)
    post_to_s3(body, data)
    key = body["fields"]["key"]
    assert s3.head(key) is not None

    assert alice.delete(f"/api/uploads/{body['id']}/").status_code == 204

    assert not Upload.objects.filter(pk=body["id"]).exists()
    assert s3.head(key) is None


def test_healthz_reports_each_part(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "storage": "ok", "queue": "ok"}


def test_healthz_names_what_is_down(client: Client, settings: Any) -> None:
    settings.AWS_STORAGE_BUCKET_NAME = "no-such-bucket-here"
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["storage"] == "down"
    assert response.json()["checks"]["database"] == "ok"


def test_upload_page_carries_the_limits(alice: Client) -> None:
    response = alice.get("/")
    assert response.status_code == 200
    assert b'id="upload-config"' in response.content
    assert str(settings.UPLOAD_MAX_BYTES).encode() in response.content


CAROL_SIGNS_UP = {
    "username": "carol",
    "email": "carol@example.com",
    "password1": "a-long-passphrase-42",
    "password2": "a-long-passphrase-42",
}


def test_signup_creates_an_account_and_signs_in(client: Client) -> None:
    response = client.post("/accounts/signup/", CAROL_SIGNS_UP)
    assert response.status_code == 302
    assert client.get("/").status_code == 200


def test_signup_works_while_the_broker_is_down_and_the_link_can_be_sent_later(
    client: Client, django_capture_on_commit_callbacks: Any
) -> None:
    from unittest import mock

    from kombu.exceptions import OperationalError

    from uploads.tasks import send_confirmation_email

    with (
        mock.patch.object(send_confirmation_email, "delay", side_effect=OperationalError),
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = client.post("/accounts/signup/", CAROL_SIGNS_UP)
        assert response.status_code == 302
        assert client.get("/").status_code == 200  # signed in

        # Asking again while it is still down says so, and keeps the way open.
        UnconfirmedEmail.objects.update(sent_at=timezone.now() - timedelta(minutes=3))
        again = client.post("/accounts/confirm-email/resend", follow=True)
    assert "could not be sent just now" in again.content.decode()
    assert UnconfirmedEmail.objects.get().sent_at < timezone.now() - timedelta(minutes=2)


def test_signups_from_one_address_are_capped_per_hour(
    client: Client, settings: Any, django_user_model: Any
) -> None:
    settings.SIGNUPS_PER_ADDRESS_PER_HOUR = 2
    for n in range(2):
        made = Client().post("/accounts/signup/", {**CAROL_SIGNS_UP, "username": f"carol{n}"})
        assert made.status_code == 302

    refused = client.post("/accounts/signup/", {**CAROL_SIGNS_UP, "username": "carol9"})

    assert refused.status_code == 429
    assert "Too many accounts" in refused.content.decode()
    assert not django_user_model.objects.filter(username="carol9").exists()
    from_elsewhere = Client(REMOTE_ADDR="198.51.100.7")
    signed_up = from_elsewhere.post("/accounts/signup/", {**CAROL_SIGNS_UP, "username": "carol9"})
    assert signed_up.status_code == 302


def test_signup_racing_another_for_the_same_username_shows_the_form_again(
    client: Client, django_user_model: Any
) -> None:
    from unittest import mock

    from uploads.forms import SignUpForm

    # The other sign-up commits between our uniqueness check and our insert.
    def checked_before_the_other_committed(form: SignUpForm) -> str:
        django_user_model.objects.create_user("carol", "first@example.com", "pw")
        return str(form.cleaned_data["username"])

    with mock.patch.object(SignUpForm, "clean_username", checked_before_the_other_committed):
        response = client.post("/accounts/signup/", CAROL_SIGNS_UP)

    assert response.status_code == 200
    assert "already exists" in response.content.decode()
    assert django_user_model.objects.get(username="carol").email == "first@example.com"
    assert "_auth_user_id" not in client.session


def test_sign_in_is_refused_after_repeated_wrong_passwords_until_the_lockout_ends(
    client: Client, user: Any, other_user: Any, settings: Any
) -> None:
    from axes.models import AccessAttempt

    def sign_in(username: str, password: str) -> Any:
        return client.post("/accounts/login/", {"username": username, "password": password})

    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert sign_in("alice", "a wrong guess").status_code == 200  # the form, with its error
    locked = sign_in("alice", "a wrong guess")
    assert locked.status_code == 429
    assert "Wait 15 minutes" in locked.content.decode()

    # The right password does not help while locked out...
    assert sign_in("alice", "pw-alice-1234").status_code == 429
    assert "_auth_user_id" not in client.session
    # ...but only this username from this address is refused.
    assert sign_in("bob", "pw-bob-1234").status_code == 302
    client.logout()

    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))
    assert sign_in("alice", "pw-alice-1234").status_code == 302


def test_behind_a_proxy_a_lockout_holds_one_client_address_not_the_proxys(
    client: Client, user: Any, settings: Any
) -> None:
    settings.BEHIND_HTTPS_PROXY = True

    def sign_in(client_address: str, password: str) -> Any:
        # The client may send an X-Forwarded-For of its own; the proxy appends.
        forwarded = f"203.0.113.9, {client_address}"
        return client.post(
            "/accounts/login/",
            {"username": "alice", "password": password},
            HTTP_X_FORWARDED_FOR=forwarded,
            REMOTE_ADDR="10.0.0.2",  # every request comes from the load balancer
        )

    for _ in range(settings.AXES_FAILURE_LIMIT):
        sign_in("198.51.100.7", "a wrong guess")
    locked = sign_in("198.51.100.7", "pw-alice-1234")
    assert locked.status_code == 429
    assert "Content-Security-Policy" in locked  # the lockout page has the policy too

    assert sign_in("192.0.2.44", "pw-alice-1234").status_code == 302  # alice, elsewhere


def test_pages_forbid_inline_script_and_allow_only_the_storage_origin(alice: Client) -> None:
    policy = alice.get("/")["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))

    storage = settings.AWS_ENDPOINT_URL
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["connect-src"] == f"'self' {storage}"
    assert storage in directives["img-src"]
    assert directives["frame-ancestors"] == "'none'"


def test_check_deploy_is_clean_with_production_settings() -> None:
    env = {
        **os.environ,
        "DEBUG": "false",
        "SECRET_KEY": "x" * 20 + "a-long-random-production-secret-key-0123456789",
        "ALLOWED_HOSTS": "uploads.example.com",
        "AWS_ENDPOINT_URL": "",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


PRODUCTION_PAGES = """
from django.test import Client
client = Client(HTTP_HOST="uploads.example.com")
print("healthz", client.get("/healthz").status_code)
print("login over http", client.get("/accounts/login/").status_code)
page = client.get("/accounts/login/", secure=True)
print("login over https", page.status_code, "/static/site." in page.content.decode())
"""


def test_production_serves_pages_after_collectstatic_and_probes_over_http(
    tmp_path: Path,
) -> None:
    env = {
        **os.environ,
        "DEBUG": "false",
        "SECRET_KEY": "x" * 20 + "a-long-random-production-secret-key-0123456789",
        "ALLOWED_HOSTS": "uploads.example.com",
        "VAR_DIR": str(tmp_path),
    }

    def manage(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    manage("collectstatic", "--no-input")
    lines = manage("shell", "--no-imports", "-c", PRODUCTION_PAGES).splitlines()

    # A load balancer's plain-HTTP probe gets the answer, not a redirect.
    assert lines[0] in ("healthz 200", "healthz 503")
    assert lines[1] == "login over http 301"
    assert lines[2] == "login over https 200 True"


def test_too_many_uploads_in_flight_is_refused_until_some_finish(
    alice: Client, settings: Any
) -> None:
    settings.UPLOAD_MAX_IN_FLIGHT = 2
    first = start_jpeg(alice, b"1")
    start_jpeg(alice, b"2")

    response = start(alice, filename="3.jpg", content_type="image/jpeg", size=1)
    assert response.status_code == 429
    assert error_code(response) == "too_many_uploads"

    Upload.objects.filter(pk=first["id"]).update(status=Status.READY)
    assert start(alice, filename="3.jpg", content_type="image/jpeg", size=1).status_code == 201


def test_a_file_past_the_users_storage_quota_is_refused_until_space_is_freed(
    alice: Client, user: Any, other_user: Any, settings: Any
) -> None:
    settings.UPLOAD_USER_QUOTA_BYTES = 1000
    kept = start_jpeg(alice, b"x" * 600)
    make_upload(user, Status.REJECTED, b"x" * 900)  # rejected and expired files take no space
    make_upload(user, Status.EXPIRED, b"x" * 900)
    make_upload(other_user, Status.READY, b"x" * 900)  # nor do other users'

    refused = start(alice, filename="big.jpg", content_type="image/jpeg", size=401)
    assert refused.status_code == 403
    assert error_code(refused) == "quota_exceeded"
    assert "600 bytes used" in refused.json()["error"]["message"]
    assert not Upload.objects.filter(filename="big.jpg").exists()
    assert start(alice, filename="fits.jpg", content_type="image/jpeg", size=400).status_code == 201

    assert alice.delete(f"/api/uploads/{kept['id']}/").status_code == 204
    assert start(alice, filename="big.jpg", content_type="image/jpeg", size=401).status_code == 201

    # A form nobody used, once expired, holds no space even before cleanup.
    abandoned = Upload.objects.filter(owner=user, status=Status.PENDING)
    abandoned.update(created_at=timezone.now() - timedelta(hours=1))
    assert (
        start(alice, filename="later.jpg", content_type="image/jpeg", size=999).status_code == 201
    )


def test_api_errors_keep_their_json_shape_for_wrong_methods_and_addresses(alice: Client) -> None:
    response = alice.put("/api/uploads/")
    assert response.status_code == 405
    assert response["Allow"] == "GET, POST"
    assert error_code(response) == "method_not_allowed"

    response = alice.get("/api/no-such-endpoint/")
    assert response.status_code == 404
    assert error_code(response) == "not_found"


def test_objects_stay_when_the_delete_is_rolled_back(alice: Client, user: Any) -> None:
    from django.db import transaction

    data = jpeg_bytes()
    body = start_jpeg(alice, data)
    post_to_s3(body, data)
    upload = Upload.objects.get(pk=body["id"])

    with pytest.raises(RuntimeError), transaction.atomic():
        upload.delete_with_objects()
        raise RuntimeError("something later in the same transaction failed")

    assert Upload.objects.filter(pk=body["id"]).exists()
    assert s3.head(body["fields"]["key"]) is not None


@pytest.mark.parametrize(
    "cursor",
    [
        "MjAyNi0wMS0wMVQwMDowMDowMCswMDowMHxub3QtYS11dWlk",  # "...+00:00|not-a-uuid"
        "MjAyNi0wMS0wMVQwMDowMDowMHwx",  # a naive datetime
        "bm8tc2VwYXJhdG9y",  # "no-separator"
    ],
)
def test_a_crafted_cursor_is_a_clear_error(alice: Client, cursor: str) -> None:
    for url in ("/api/uploads/", "/api/notifications/"):
        response = alice.get(f"{url}?cursor={cursor}")
        assert response.status_code == 400, url
        assert error_code(response) == "invalid"


@pytest.mark.parametrize(
    "text",
    [
        "0001-01-01T00:00:00+01:00|1",  # before year 1 in UTC
        "9999-12-31T23:59:59-01:00|1",  # after year 9999 in UTC
        f"2026-01-01T00:00:00+00:00|{2**70}",  # an id no column can hold
    ],
)
def test_a_cursor_out_of_range_is_a_clear_error(alice: Client, text: str) -> None:
    cursor = base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")
    for url in ("/api/uploads/", "/api/notifications/"):
        response = alice.get(f"{url}?cursor={cursor}")
        assert response.status_code == 400, url
        assert error_code(response) == "invalid"


@pytest.mark.parametrize("ids", [[2**70], [0], [-1], ["1"], [1.0], [True]])
def test_marking_read_refuses_ids_that_cannot_be_ids(alice: Client, ids: list[Any]) -> None:
    response = alice.post(
        "/api/notifications/read", json.dumps({"ids": ids}), content_type="application/json"
    )
    assert response.status_code == 400
    assert error_code(response) == "invalid"


def test_deeply_nested_json_is_a_clear_error(alice: Client) -> None:
    for url in ("/api/uploads/", "/api/notifications/read"):
        response = alice.post(url, b"[" * 100_000, content_type="application/json")
        assert response.status_code == 400, url
        assert error_code(response) == "invalid"


def test_a_body_over_the_size_limit_is_a_json_error(alice: Client) -> None:
    too_long = "a" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
    response = start(alice, filename=too_long, content_type="image/jpeg", size=1)

    assert response.status_code == 400
    assert error_code(response) == "invalid"
    assert not Upload.objects.exists()


def test_marking_read_refuses_too_many_ids(alice: Client) -> None:
    response = alice.post(
        "/api/notifications/read",
        json.dumps({"ids": list(range(1001))}),
        content_type="application/json",
    )
    assert response.status_code == 400
    assert error_code(response) == "invalid"


def test_complete_while_storage_is_down_is_a_503_and_changes_nothing(alice: Client) -> None:
    from unittest import mock

    from botocore.exceptions import EndpointConnectionError

    body = start_jpeg(alice, b"12345")
    outage = EndpointConnectionError(endpoint_url="http://s3")
    with mock.patch("uploads.s3.head", side_effect=outage):
        response = alice.post(f"/api/uploads/{body['id']}/complete")

    assert response.status_code == 503
    assert error_code(response) == "storage_unavailable"
    assert Upload.objects.get(pk=body["id"]).status == Status.PENDING


def test_anonymous_api_errors_name_their_code(client: Client) -> None:
    response = client.get("/api/uploads/")
    assert response.status_code == 401
    assert error_code(response) == "not_authenticated"


def test_naming_allowed_hosts_turns_debug_off_and_requires_a_secret_key() -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DEBUG", "SECRET_KEY", "ALLOWED_HOSTS")
    }
    env["ALLOWED_HOSTS"] = "uploads.example.com"
    show_debug = "from django.conf import settings; print(settings.DEBUG)"
    command = [sys.executable, "manage.py", "shell", "--no-imports", "-c", show_debug]

    without_key = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert without_key.returncode != 0
    assert "SECRET_KEY must be set" in without_key.stderr

    env["SECRET_KEY"] = "a-long-random-production-secret-key-0123456789"
    with_key = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert with_key.stdout.strip() == "False", with_key.stderr
