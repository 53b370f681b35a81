from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from celery.exceptions import Retry
from django.db import IntegrityError, transaction
from django.test import Client
from django.utils import timezone

from tests.devstack_runner import free_port
from uploads.models import Notification, Status, Upload
from uploads.tasks import send_notification_email

pytestmark = pytest.mark.django_db


def processing_upload(owner: Any, name: str = "a.jpg") -> Upload:
    upload = Upload.start(owner, name, "image/jpeg", 10)
    Upload.objects.filter(pk=upload.pk).update(status=Status.PROCESSING)
    upload.refresh_from_db()
    return upload


def test_an_outcome_is_recorded_once_however_often_it_is_reached(user: Any) -> None:
    upload = processing_upload(user)

    assert upload.finish(Status.READY)
    assert not upload.finish(Status.READY)
    Notification.record(upload, Status.READY)

    assert Notification.objects.filter(upload=upload).count() == 1


def test_the_database_refuses_a_second_notification_for_one_outcome(user: Any) -> None:
    upload = processing_upload(user)
    Notification.objects.create(owner=user, upload=upload, kind="ready", message="one")
    with pytest.raises(IntegrityError), transaction.atomic():
        Notification.objects.create(owner=user, upload=upload, kind="ready", message="two")


def test_the_email_is_sent_once(user: Any, mailoutbox: list[Any]) -> None:
    upload = processing_upload(user, "beach.jpg")
    upload.finish(Status.READY)
    notification = Notification.objects.get(upload=upload)

    send_notification_email(notification.pk)
    send_notification_email(notification.pk)

    assert len(mailoutbox) == 1
    assert mailoutbox[0].to == ["alice@example.com"]
    assert "beach.jpg" in mailoutbox[0].body
    notification.refresh_from_db()
    assert notification.emailed_at is not None


def test_the_subject_never_carries_the_uploaders_filename(user: Any, mailoutbox: list[Any]) -> None:
    upload = processing_upload(user, "URGENT verify your bank account.jpg")
    upload.finish(Status.REJECTED, "The file is not a JPEG image.")

    send_notification_email(Notification.objects.get(upload=upload).pk)

    assert mailoutbox[0].subject == "Your upload was not accepted"
    assert "URGENT verify your bank account.jpg" in mailoutbox[0].body


def test_every_sending_of_one_email_has_the_same_message_id(
    user: Any, mailoutbox: list[Any]
) -> None:
    upload = processing_upload(user)
    upload.finish(Status.READY)
    notification = Notification.objects.get(upload=upload)

    send_notification_email(notification.pk)
    Notification.objects.filter(pk=notification.pk).update(emailed_at=None, email_claimed_at=None)
    send_notification_email(notification.pk)

    first, second = (message.extra_headers["Message-ID"] for message in mailoutbox)
    assert first == second == f"<notification-{notification.pk}-{upload.pk}@127.0.0.1>"


def test_an_email_claimed_by_a_worker_that_died_is_sent_by_the_next(
    user: Any, mailoutbox: list[Any], settings: Any
) -> None:
    upload = processing_upload(user)
    upload.finish(Status.READY)
    notification = Notification.objects.get(upload=upload)
    # A worker claimed it, then died before sending: its claim is older than
    # any task may run.
    long_ago = timezone.now() - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 1)
    Notification.objects.filter(pk=notification.pk).update(email_claimed_at=long_ago)

    send_notification_email(notification.pk)

    assert len(mailoutbox) == 1


def test_an_email_another_worker_is_sending_is_left_to_it(user: Any, mailoutbox: list[Any]) -> None:
    upload = processing_upload(user)
    upload.finish(Status.READY)
    notification = Notification.objects.get(upload=upload)
    Notification.objects.filter(pk=notification.pk).update(email_claimed_at=timezone.now())

    send_notification_email(notification.pk)

    assert mailoutbox == []


def test_a_failed_email_gives_its_claim_back_for_the_retry(user: Any, settings: Any) -> None:
    upload = processing_upload(user)
    upload.finish(Status.REJECTED, "The file is not a JPEG image.")
    notification = Notification.objects.get(upload=upload)
    # A mail server that refuses connections: nothing listens on this port.
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()

    with pytest.raises((Retry, OSError)):  # called directly, retry re-raises
        send_notification_email(notification.pk)

    notification.refresh_from_db()
    assert (notification.emailed_at, notification.email_claimed_at) == (None, None)


def test_list_is_the_owners_newest_first_with_an_unread_count(
    alice: Client, user: Any, other_user: Any
) -> None:
    first = processing_upload(user, "first.jpg")
    second = processing_upload(user, "second.jpg")
    first.finish(Status.READY)
    second.finish(Status.REJECTED, "The file is not a JPEG image.")
    processing_upload(other_user, "bobs.jpg").finish(Status.READY)

    body = alice.get("/api/notifications/").json()

    assert [n["upload_id"] for n in body["results"]] == [str(second.pk), str(first.pk)]
    assert body["results"][0]["kind"] == "rejected"
    assert "not a JPEG image" in body["results"][0]["message"]
    assert body["unread"] == 2
    assert set(body["results"][0]) == {"id", "upload_id", "kind", "message", "read", "created_at"}


def test_marking_read_touches_only_the_owners_notifications(
    alice: Client, user: Any, other_user: Any
) -> None:
    mine = processing_upload(user)
    mine.finish(Status.READY)
    theirs = processing_upload(other_user)
    theirs.finish(Status.READY)
    their_id = Notification.objects.get(upload=theirs).pk

    response = alice.post(
        "/api/notifications/read", json.dumps({"ids": [their_id]}), content_type="application/json"
    )
    assert response.json() == {"marked": 0}
    response = alice.post("/api/notifications/read", "{}", content_type="application/json")
    assert response.json() == {"marked": 1}

    assert alice.get("/api/notifications/").json()["unread"] == 0
    assert not Notification.objects.get(pk=their_id).read


def test_marking_read_refuses_bad_ids(alice: Client) -> None:
    response = alice.post(
        "/api/notifications/read", json.dumps({"ids": "all"}), content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"
