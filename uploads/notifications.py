"""What the owner is told about each outcome, in the app and by email."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from django.conf import settings
from django.core import signing
from django.core.mail import EmailMessage
from django.urls import reverse

if TYPE_CHECKING:
    from django.contrib.auth.models import User

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
    from uploads.models import UnconfirmedEmail

    user = notification.owner
    if not user.email or UnconfirmedEmail.is_unconfirmed(user):
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


# --- confirming a signed-up address ---

CONFIRM_SALT = "uploads.confirm-email"


def confirmation_token(user: User) -> str:
    """Signed user id and address: a changed address makes old links useless."""
    return signing.dumps([user.pk, user.email], salt=CONFIRM_SALT)


def user_for_token(token: str) -> User | None:
    """The user a valid, unexpired token names, while their address is still the same."""
    from django.contrib.auth import get_user_model

    try:
        user_id, address = signing.loads(
            token, salt=CONFIRM_SALT, max_age=settings.CONFIRM_EMAIL_MAX_AGE
        )
    except (signing.BadSignature, ValueError, TypeError):
        return None
    user = get_user_model().objects.filter(pk=user_id).first()
    if user is None or not address or user.email != address:
        return None
    return user


def send_confirmation(user: User) -> None:
    link = settings.SITE_URL + reverse("confirm_email", args=[confirmation_token(user)])
    hours = settings.CONFIRM_EMAIL_MAX_AGE // 3600
    EmailMessage(
        subject="Confirm your email address",
        body=(
            f"Hello {user.get_username()},\n\n"
            "Someone, probably you, signed up for Uploads with this address. To get\n"
            f"emails about your uploads here, confirm it within {hours} hours:\n\n{link}\n\n"
            "If it was not you, ignore this email: nothing more will be sent.\n"
        ),
        to=[user.email],
    ).send()
