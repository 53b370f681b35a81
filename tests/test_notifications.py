from __future__ import annotations

import json
from typing import Any
from unittest import mock

import pytest
from celery.exceptions import Retry
from django.db import IntegrityError, transaction
from django.test import Client

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
    assert "beach.jpg" in mailoutbox[0].subject


def test_a_failed_email_gives_its_claim_back_for_the_retry(user: Any) -> None:
    upload = processing_upload(user)
    upload.finish(Status.REJECTED, "The file is not a JPEG image.")
    notification = Notification.objects.get(upload=upload)

    with (
        mock.patch("uploads.notifications.send_mail", side_effect=OSError("smtp down")),
        pytest.raises((Retry, OSError)),  # called directly, retry re-raises
    ):
        send_notification_email(notification.pk)

    notification.refresh_from_db()
    assert notification.emailed_at is None


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
