from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest
from celery.exceptions import Retry
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.test import Client
from django.utils import timezone

from tests.devstack_runner import free_port
from uploads.models import Notification, Status, UnconfirmedEmail, Upload
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


def test_every_page_header_shows_the_owners_unread_count(
    alice: Client, user: Any, other_user: Any
) -> None:
    processing_upload(user, "mine.jpg").finish(Status.READY)
    processing_upload(other_user, "bobs.jpg").finish(Status.READY)
    processing_upload(other_user, "bobs2.jpg").finish(Status.READY)

    for url in ("/", "/accounts/confirm-email/not-a-token/"):
        page = alice.get(url).content.decode()
        assert ">1 new notification<" in page, url

    Notification.objects.filter(owner=user).update(read=True)
    assert ">No new notifications<" in alice.get("/").content.decode()


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


# --- confirming a signed-up address ---


def sign_up(client: Client, username: str = "carol") -> Any:
    return client.post(
        "/accounts/signup/",
        {
            "username": username,
            "email": f"{username}@example.com",
            "password1": "a-long-passphrase-42",
            "password2": "a-long-passphrase-42",
        },
    )


def link_in(message: Any) -> str:
    match = re.search(r"https?://[^/\s]+(/accounts/confirm-email/\S+/)", message.body)
    assert match, message.body
    return match.group(1)


def test_sign_up_sends_a_confirmation_link_and_no_upload_email_until_it_is_followed(
    client: Client,
    mailoutbox: list[Any],
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        assert sign_up(client).status_code == 302
    carol = User.objects.get(username="carol")
    assert [m.subject for m in mailoutbox] == ["Confirm your email address"]
    assert mailoutbox[0].to == ["carol@example.com"]
    assert "We sent a link to" in client.get("/").content.decode()

    upload = processing_upload(carol)
    upload.finish(Status.READY)
    send_notification_email(Notification.objects.get(upload=upload).pk)

    # In the app, not by email: the address is anyone's until confirmed.
    assert len(mailoutbox) == 1
    assert Notification.objects.get(upload=upload).emailed_at is not None


@pytest.fixture
def carols_link(
    client: Client,
    mailoutbox: list[Any],
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> str:
    """Carol signs up with `client`; the path of the link emailed to her."""
    with django_capture_on_commit_callbacks(execute=True):
        sign_up(client)
    return link_in(mailoutbox[0])


def test_following_the_link_asks_first_then_confirms(
    client: Client, mailoutbox: list[Any], carols_link: str
) -> None:
    link = carols_link
    anonymous = Client()  # the link may be opened anywhere, signed in or not

    shown = anonymous.get(link)
    assert shown.status_code == 200
    assert "Confirm carol@example.com" in shown.content.decode()
    assert UnconfirmedEmail.objects.filter(user__username="carol").exists()

    confirmed = anonymous.post(link)
    assert "is confirmed" in confirmed.content.decode()
    assert not UnconfirmedEmail.objects.exists()
    assert "We sent a link to" not in client.get("/").content.decode()

    upload = processing_upload(User.objects.get(username="carol"))
    upload.finish(Status.READY)
    send_notification_email(Notification.objects.get(upload=upload).pk)
    assert [m.subject for m in mailoutbox][-1] == "Your upload is ready"


@pytest.mark.parametrize("case", ["tampered", "address changed", "expired"])
def test_a_link_that_is_not_valid_confirms_nothing(
    client: Client, carols_link: str, settings: Any, case: str
) -> None:
    link = carols_link
    if case == "tampered":
        link = link.replace("/confirm-email/", "/confirm-email/x")
    elif case == "address changed":
        User.objects.filter(username="carol").update(email="someone-else@example.com")
    else:
        settings.CONFIRM_EMAIL_MAX_AGE = -1

    for response in (client.get(link), client.post(link)):
        assert response.status_code == 400
        assert "not valid" in response.content.decode()
    assert UnconfirmedEmail.objects.filter(user__username="carol").exists()


def test_the_link_can_be_sent_again_but_not_in_a_burst(
    client: Client, mailoutbox: list[Any], eager_tasks: None, carols_link: str
) -> None:
    client.post("/accounts/confirm-email/resend")  # at once: refused
    assert len(mailoutbox) == 1
    UnconfirmedEmail.objects.update(sent_at=timezone.now() - timedelta(minutes=3))
    followed = client.post("/accounts/confirm-email/resend", follow=True)

    assert len(mailoutbox) == 2
    assert "We sent a new link to carol@example.com" in followed.content.decode()
    assert Client().post("/accounts/confirm-email/resend").status_code == 302  # to sign in


def test_the_link_is_sent_again_a_few_times_at_most(
    client: Client, mailoutbox: list[Any], eager_tasks: None, carols_link: str
) -> None:
    for _ in range(UnconfirmedEmail.MAX_RESENDS + 2):
        UnconfirmedEmail.objects.update(sent_at=timezone.now() - timedelta(minutes=3))
        last = client.post("/accounts/confirm-email/resend", follow=True)

    assert len(mailoutbox) == 1 + UnconfirmedEmail.MAX_RESENDS
    assert "sent several times already" in last.content.decode()


def test_password_resets_reach_confirmed_addresses_only(
    client: Client, mailoutbox: list[Any], carols_link: str, user: Any
) -> None:
    mailoutbox.clear()
    anonymous = Client()

    anonymous.post("/accounts/password_reset/", {"email": "carol@example.com"})
    assert mailoutbox == []  # carol's address is not confirmed yet

    anonymous.post(carols_link)
    anonymous.post("/accounts/password_reset/", {"email": "carol@example.com"})
    anonymous.post("/accounts/password_reset/", {"email": user.email})  # made by staff: trusted
    assert sorted(m.to[0] for m in mailoutbox) == ["alice@example.com", "carol@example.com"]
