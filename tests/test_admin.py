"""The admin: lists, detail pages, actions and the summary, against the embedded S3/SQS."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.conftest import add_thumbnail, exists, jpeg_bytes, make_stuck, make_upload
from uploads.admin import CappedCountPaginator
from uploads.models import Notification, Status, UnconfirmedEmail, Upload

pytestmark = pytest.mark.django_db

UPLOADS = "/admin/uploads/upload/"
SUMMARY = "/admin/uploads/upload/summary/"
NOTIFICATIONS = "/admin/uploads/notification/"


def act(
    client: Client, action: str, *rows: Any, url: str = UPLOADS, follow: bool = False, **extra: str
) -> Any:
    """Run an admin action on rows, as the list's action form does."""
    data = {"action": action, "_selected_action": [str(row.pk) for row in rows], "index": "0"}
    return client.post(url, {**data, **extra}, follow=follow)


def results(response: Any) -> set[str]:
    return {upload.filename for upload in response.context["cl"].result_list}


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]


# --- access ---


def test_non_staff_users_get_no_access(alice: Client, user: Any) -> None:
    upload = make_upload(user, Status.READY, b"x")
    pages = [UPLOADS, f"{UPLOADS}{upload.pk}/change/", SUMMARY, NOTIFICATIONS, "/admin/"]
    for url in pages:
        response = alice.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/admin/login/"), url

    act(alice, "delete_selected", upload, post="yes")

    assert Upload.objects.filter(pk=upload.pk).exists()
    assert exists(upload.key)


def test_staff_without_permissions_are_refused(client: Client, django_user_model: Any) -> None:
    staff = django_user_model.objects.create_user("carol", "carol@example.com", "pw", is_staff=True)
    client.force_login(staff)
    assert client.get(UPLOADS).status_code == 403
    assert client.get(SUMMARY).status_code == 403


# --- the list ---


def test_list_shows_preview_owner_status_size_type_and_times(
    admin_client: Client, user: Any
) -> None:
    upload = make_upload(user, Status.READY, jpeg_bytes(), detected_type="image/jpeg")
    add_thumbnail(upload, "256")
    now = timezone.now()
    Upload.objects.filter(pk=upload.pk).update(
        size=2_500_000, uploaded_at=now - timedelta(seconds=3), processed_at=now
    )

    response = admin_client.get(UPLOADS)

    html = response.content.decode()
    assert response.status_code == 200
    assert "ready.jpg" in html and "alice" in html and "image/jpeg" in html
    assert "2.4\xa0MB" in html
    assert "3.0 s" in html
    assert "thumbs/" in html and "X-Amz-Signature=" in html
    # No COUNT(*) of the whole table on top of the page's own.
    assert response.context["cl"].show_full_result_count is False


def test_list_queries_do_not_grow_with_the_page(admin_client: Client, user: Any) -> None:
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get(UPLOADS).status_code == 200
        return len(captured)

    upload = make_upload(user, Status.READY)
    add_thumbnail(upload, "256")
    few = queries()
    for _ in range(20):
        add_thumbnail(make_upload(user, Status.READY), "256")

    assert queries() == few


def test_list_filters_by_status_type_and_date(admin_client: Client, user: Any) -> None:
    make_upload(user, Status.READY)
    make_upload(user, Status.FAILED)
    old = make_upload(user, Status.REJECTED)
    Upload.objects.filter(pk=old.pk).update(
        content_type="application/pdf", created_at=timezone.now() - timedelta(days=400)
    )

    assert results(admin_client.get(UPLOADS, {"status__exact": "failed"})) == {"failed.jpg"}
    assert results(admin_client.get(UPLOADS, {"type": "application/pdf"})) == {"rejected.jpg"}
    since = (timezone.now() - timedelta(days=7)).isoformat()
    recent = admin_client.get(UPLOADS, {"created_at__gte": since})
    assert results(recent) == {"ready.jpg", "failed.jpg"}


def test_list_searches_filename_owner_key_and_id(
    admin_client: Client, user: Any, other_user: Any
) -> None:
    mine = make_upload(user, Status.READY)
    theirs = make_upload(other_user, Status.FAILED)

    def search(term: str) -> set[str]:
        return results(admin_client.get(UPLOADS, {"q": term}))

    assert search("eady") == {"ready.jpg"}
    assert search("bob") == {"failed.jpg"}
    assert search("alice@example.com") == {"ready.jpg"}
    assert search(theirs.key) == {"failed.jpg"}
    assert search(f"thumbs/{mine.pk}/256.webp") == {"ready.jpg"}
    assert search(str(mine.pk)) == {"ready.jpg"}
    assert search("nobody@example.com") == set()
    assert search("nothing-like-it") == set()


def test_a_search_matching_too_many_owners_says_so(
    admin_client: Client, django_user_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("uploads.admin.MAX_OWNERS", 2)
    crowd = [
        django_user_model.objects.create_user(f"crowd{n}", f"crowd{n}@example.com", "pw")
        for n in range(3)
    ]
    for member in crowd:
        make_upload(member, Status.READY)

    broad = admin_client.get(UPLOADS, {"q": "crowd"})
    narrow = admin_client.get(UPLOADS, {"q": "crowd1"})

    assert len(broad.context["cl"].result_list) == 2
    assert any("More than 2 users match 'crowd'" in text for text in messages_of(broad))
    assert len(narrow.context["cl"].result_list) == 1
    assert messages_of(narrow) == []


def test_list_counts_no_further_than_its_cap(
    admin_client: Client, user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(CappedCountPaginator, "cap", 3)
    for _ in range(5):
        make_upload(user, Status.READY)
    make_upload(user, Status.FAILED)
    make_upload(user, Status.FAILED)

    response = admin_client.get(UPLOADS, {"status__exact": "ready"})

    html = response.content.decode()
    assert "more than 3" in html
    assert "Select all matching uploads" in html
    assert len(response.context["cl"].result_list) == 5
    under_the_cap = admin_client.get(UPLOADS, {"status__exact": "failed"}).content.decode()
    assert re.search(r"\b2\s+uploads", under_the_cap) and "more than" not in under_the_cap


# --- the detail page ---


def test_detail_shows_thumbnails_original_error_and_times(admin_client: Client, user: Any) -> None:
    upload = make_upload(user, Status.FAILED, jpeg_bytes(), error="The worker ran out of time.")
    thumbnails = [add_thumbnail(upload, size) for size in ("256", "1024")]

    response = admin_client.get(f"{UPLOADS}{upload.pk}/change/")

    html = response.content.decode()
    assert response.status_code == 200
    assert "The worker ran out of time." in html
    assert all(thumbnail.key in html for thumbnail in thumbnails)
    assert f"/{upload.key}?" in html and "X-Amz-Signature=" in html
    assert "Uploaded at" in html and "Processed at" in html


def test_detail_is_read_only(admin_client: Client, user: Any) -> None:
    upload = make_upload(user, Status.READY)
    url = f"{UPLOADS}{upload.pk}/change/"

    html = admin_client.get(url).content.decode()
    assert 'name="status"' not in html and 'name="file"' not in html and 'name="_save"' not in html

    response = admin_client.post(url, {"status": "failed", "file": "uploads/other.jpg", "size": 1})
    assert response.status_code == 403
    assert Upload.objects.get(pk=upload.pk).status == Status.READY
    assert admin_client.get(f"{UPLOADS}add/").status_code == 403


# --- actions ---


# Objects go after the commit, so the transaction must really commit.
@pytest.mark.django_db(transaction=True)
def test_delete_action_asks_first_then_deletes_rows_and_objects(
    admin_client: Client, user: Any
) -> None:
    upload = make_upload(user, Status.READY, jpeg_bytes())
    thumbnail = add_thumbnail(upload, "256")
    other = make_upload(user, Status.READY, jpeg_bytes())

    confirmation = act(admin_client, "delete_selected", upload)

    assert confirmation.status_code == 200
    assert "are deleted too" in confirmation.content.decode()
    assert Upload.objects.filter(pk=upload.pk).exists() and exists(upload.key)

    response = act(admin_client, "delete_selected", upload, post="yes")

    assert response.status_code == 302
    assert not Upload.objects.filter(pk=upload.pk).exists()
    assert not exists(upload.key) and not exists(thumbnail.key)
    assert exists(other.key)


def test_a_large_delete_still_needs_permission_for_what_it_cascades_to(
    client: Client, django_user_model: Any, user: Any, monkeypatch: Any
) -> None:
    from django.contrib.auth.models import Permission

    monkeypatch.setattr("uploads.admin.SUMMARIZE_DELETES_OVER", 1)
    staff = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
    staff.user_permissions.set(
        Permission.objects.filter(codename__in=["view_upload", "delete_upload"])
    )
    client.force_login(staff)
    uploads = [make_upload(user, Status.READY, jpeg_bytes()) for _ in range(2)]
    for upload in uploads:
        Notification.record(upload, Status.READY)

    confirmation = act(client, "delete_selected", *uploads)
    refused = act(client, "delete_selected", *uploads, post="yes")

    assert confirmation.status_code == 200
    assert "notification" in str(confirmation.context["perms_lacking"])
    assert refused.status_code == 403
    assert Upload.objects.filter(pk__in=[u.pk for u in uploads]).count() == 2


# Objects go after the commit, so the transaction must really commit.
@pytest.mark.django_db(transaction=True)
def test_delete_page_deletes_the_objects_too(admin_client: Client, user: Any) -> None:
    upload = make_upload(user, Status.READY, jpeg_bytes())
    thumbnail = add_thumbnail(upload, "256")
    url = f"{UPLOADS}{upload.pk}/delete/"

    assert "deleted too" in admin_client.get(url).content.decode()
    assert admin_client.post(url, {"post": "yes"}).status_code == 302

    assert not Upload.objects.filter(pk=upload.pk).exists()
    assert not exists(upload.key) and not exists(thumbnail.key)


def test_reprocess_action_regenerates_thumbnails(
    admin_client: Client, user: Any, eager_tasks: None, settings: Any
) -> None:
    settings.THUMBNAIL_SIZES = [64]
    upload = make_upload(user, Status.READY, jpeg_bytes())
    placeholder = add_thumbnail(upload, "64")
    pending = make_upload(user, Status.PENDING)

    response = act(admin_client, "reprocess", upload, pending, follow=True)

    remade = upload.thumbnails.get(name="64")
    assert remade.bytes != placeholder.bytes and max(remade.width, remade.height) == 64
    assert "Queued thumbnails for 1 ready images" in messages_of(response)[0]
    assert "1 skipped" in messages_of(response)[0]


def test_staff_fix_failed_and_stuck_uploads_with_the_reprocess_action(
    admin_client: Client,
    user: Any,
    eager_tasks: None,
    settings: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.THUMBNAIL_SIZES = [64]
    failed = make_upload(user, Status.FAILED, jpeg_bytes(), error="Storage was down.")
    stuck = make_stuck(user)

    detail = admin_client.get(f"{UPLOADS}{failed.pk}/change/").content.decode()
    assert "Storage was down." in detail  # why it failed
    with django_capture_on_commit_callbacks(execute=True):
        response = act(admin_client, "reprocess", failed, stuck, follow=True)

    assert "processing for 1 failed uploads and 1 stuck in processing" in messages_of(response)[0]
    for upload in (failed, stuck):
        upload.refresh_from_db()
        assert upload.status == Status.READY, upload.error
        assert upload.thumbnails.get().name == "64"


def test_resend_action_emails_the_outcome_again(
    admin_client: Client,
    user: Any,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    upload = make_upload(user, Status.READY)
    Notification.objects.create(
        owner=user, upload=upload, kind="failed", message="failed", emailed_at=timezone.now()
    )
    Notification.objects.create(
        owner=user, upload=upload, kind="ready", message="ready now", emailed_at=timezone.now()
    )

    with django_capture_on_commit_callbacks(execute=True):
        act(admin_client, "resend_notification", upload)

    # Only the current outcome (ready), not the earlier failure.
    assert [message.subject for message in mail.outbox] == ["Your upload is ready"]
    assert "ready now" in mail.outbox[0].body


def test_notifications_are_listed_and_can_be_resent(
    admin_client: Client,
    user: Any,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    upload = make_upload(user, Status.READY)
    notification = Notification.objects.create(
        owner=user, upload=upload, kind="ready", message="ready.jpg is ready", emailed_at=None
    )

    listing = admin_client.get(NOTIFICATIONS, {"q": str(upload.pk)})
    assert "ready.jpg is ready" in listing.content.decode()
    detail = admin_client.get(f"{NOTIFICATIONS}{notification.pk}/change/").content.decode()
    assert 'name="_save"' not in detail
    with django_capture_on_commit_callbacks(execute=True):
        act(admin_client, "resend", notification, url=NOTIFICATIONS)

    assert len(mail.outbox) == 1


# --- the summary ---


def test_summary_counts_statuses_recent_problems_and_queues(
    admin_client: Client, user: Any
) -> None:
    now = timezone.now()
    make_upload(user, Status.READY)
    make_upload(user, Status.READY)
    make_upload(user, Status.FAILED, error="Worker crashed.", processed_at=now)
    make_upload(user, Status.REJECTED, error="The file is not a JPEG image.", processed_at=now)
    make_upload(user, Status.REJECTED, error="Long ago.", processed_at=now - timedelta(days=2))

    response = admin_client.get(SUMMARY)

    assert response.status_code == 200
    counts = {label: count for label, count, _ in response.context["statuses"]}
    assert counts["Ready"] == 2 and counts["Rejected"] == 2 and counts["Pending"] == 0
    reasons = {(row["status"], row["error"]) for row in response.context["reasons"]}
    assert reasons == {("failed", "Worker crashed."), ("rejected", "The file is not a JPEG image.")}
    queues = response.context["queues"]
    assert [queue["name"] for queue in queues] == ["upload-events", "upload-events-dlq"]
    assert all(isinstance(queue["visible"], int) for queue in queues)
    assert "Long ago." not in response.content.decode()


def test_summary_is_linked_from_the_admin_index_and_the_list(admin_client: Client) -> None:
    assert SUMMARY in admin_client.get("/admin/").content.decode()
    assert SUMMARY in admin_client.get(UPLOADS).content.decode()


def test_actions_refuse_selections_too_large_for_one_request(
    admin_client: Client, user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uploads.admin

    monkeypatch.setattr(uploads.admin, "MAX_ACTION_ROWS", 1)
    first = make_upload(user, Status.READY, jpeg_bytes())
    second = make_upload(user, Status.READY, jpeg_bytes())

    response = act(admin_client, "delete_selected", first, second, post="yes", follow=True)

    assert "too many for one request" in messages_of(response)[0]
    assert Upload.objects.filter(pk__in=[first.pk, second.pk]).count() == 2

    for upload in (first, second):
        Notification.objects.create(owner=user, upload=upload, kind="ready", message="ready")
    response = act(
        admin_client, "resend", *Notification.objects.all(), url=NOTIFICATIONS, follow=True
    )
    assert "too many for one request" in messages_of(response)[0]
    assert Notification.objects.filter(email_claimed_at__isnull=False).count() == 0
    assert mail.outbox == []


# --- unconfirmed addresses ---


def test_staff_see_unconfirmed_addresses_and_trust_one_by_deleting_its_row(
    admin_client: Client, user: Any
) -> None:
    unconfirmed = UnconfirmedEmail.objects.create(user=user)
    url = "/admin/uploads/unconfirmedemail/"

    listing = admin_client.get(url)
    assert listing.status_code == 200
    assert user.email in listing.content.decode()
    assert admin_client.get(f"{url}add/").status_code == 403

    act(admin_client, "delete_selected", unconfirmed, url=url, post="yes")
    assert not UnconfirmedEmail.is_unconfirmed(user)
