"""What every page's header shows."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from uploads.models import Notification


def unread_notifications(request: HttpRequest) -> dict[str, Any]:
    """The signed-in user's unread count, counted only if a template shows it."""
    user = request.user
    if not user.is_authenticated:
        return {}
    # Templates call callables: pages without the header (the admin) cost no query.
    return {
        "unread_notifications": lambda: Notification.objects.filter(owner=user, read=False).count()
    }
