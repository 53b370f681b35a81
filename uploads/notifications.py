"""What the owner is told about each outcome, in the app and by email."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.core.mail import send_mail
from django.urls import reverse

if TYPE_CHECKING:
    from uploads.models import Notification, Upload


def message_for(upload: Upload, kind: str, error: str = "") -> str:
    if kind == "ready":
        return f"“{upload.filename}” is uploaded and ready."
    if kind == "rejected":
        return f"“{upload.filename}” was not accepted: {error}"
    return f"“{upload.filename}” could not be processed: {error}"


def email(notification: Notification) -> None:
    user = notification.owner
    if not user.email:
        return
    send_mail(
        subject=notification.message[:120],
        message=(
            f"Hello {user.get_username()},\n\n{notification.message}\n\n"
            f"See your uploads at {settings.SITE_URL}{reverse('upload_page')}\n"
        ),
        from_email=None,
        recipient_list=[user.email],
    )
