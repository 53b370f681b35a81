"""What the owner is told about each outcome, in the app and by email."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import EmailMessage
from django.urls import reverse

if TYPE_CHECKING:
    from uploads.models import Notification, Upload


def message_for(upload: Upload, kind: str, error: str = "") -> str:
    if kind == "ready":
        return f"“{upload.filename}” is uploaded and ready."
    if kind == "rejected":
        return f"“{upload.filename}” was not accepted: {error}"
    return f"“{upload.filename}” could not be processed: {error}"


# The subject is ours alone: the filename, which the uploader chose, stays
# in the body.
SUBJECTS = {
    "ready": "Your upload is ready",
    "rejected": "Your upload was not accepted",
    "failed": "Your upload could not be processed",
}


def message_id(notification: Notification) -> str:
    """The same Message-ID for every sending of one notification.

    Should an email go out twice (a worker dying just after the mail server
    accepted it), mail clients show it once.
    """
    domain = urlsplit(settings.SITE_URL).hostname or "localhost"
    return f"<notification-{notification.pk}-{notification.upload_id}@{domain}>"


def email(notification: Notification) -> None:
    user = notification.owner
    if not user.email:
        return
    EmailMessage(
        subject=SUBJECTS.get(notification.kind, "About your upload"),
        body=(
            f"Hello {user.get_username()},\n\n{notification.message}\n\n"
            f"See your uploads at {settings.SITE_URL}{reverse('upload_page')}\n"
        ),
        to=[user.email],
        headers={"Message-ID": message_id(notification)},
    ).send()
