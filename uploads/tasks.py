"""Celery tasks. Each takes a primary key and is safe to run twice."""

from __future__ import annotations

import logging
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from celery import shared_task
from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from uploads import filetypes, notifications, s3, thumbnails
from uploads.models import (
    OUTCOMES,
    Notification,
    Status,
    Thumbnail,
    UnconfirmedEmail,
    Upload,
    delete_objects_after_commit,
)

logger = logging.getLogger(__name__)

# Keys are never reused for other bytes; "private" keeps shared caches out,
# since the bucket is private and every link to it signed.
THUMBNAIL_CACHE_CONTROL = "private, max-age=31536000, immutable"
MAX_RETRIES = 5
# Runs of one upload that may die (out of memory, a crash in a decoder, the
# hard time limit) before it is failed instead of tried again.
MAX_UNFINISHED_RUNS = 3


class Rejected(Exception):
    """Bad input: the upload is rejected and never retried."""


@shared_task(bind=True, max_retries=MAX_RETRIES)
def process_upload(self, upload_id: str) -> None:  # type: ignore[no-untyped-def]
    """Verify what the bytes are, make thumbnails, settle the outcome."""
    upload = Upload.objects.filter(pk=upload_id).first()
    if upload is None:
        logger.info("upload %s is gone; nothing to process", upload_id)
        return
    if upload.status in OUTCOMES:
        # Already settled (a duplicate or a redelivery after a crash): make
        # sure the owner was told, then stop.
        for notification in upload.notifications.filter(emailed_at=None):
            send_notification_email.delay(notification.pk)
        return
    if upload.status != Status.PROCESSING:
        logger.warning("upload %s is %s, not processing; skipped", upload_id, upload.status)
        return
    if upload.unfinished_runs >= MAX_UNFINISHED_RUNS:
        logger.error("upload %s: %s runs died; failing it", upload_id, upload.unfinished_runs)
        upload.finish(Status.FAILED, "The file could not be processed: it stopped every attempt.")
        return
    Upload.objects.filter(pk=upload.pk).update(
        unfinished_runs=F("unfinished_runs") + 1, updated_at=timezone.now()
    )
    try:
        settle(self, upload)
    finally:
        # Only a run that dies outright skips this.
        Upload.objects.filter(pk=upload.pk).update(unfinished_runs=0)


def settle(task: Any, upload: Upload) -> None:
    """Process a claimed upload and move it to its outcome (or retry)."""
    logger.info("processing upload %s", upload.pk)
    try:
        fields = build(upload)
    except Rejected as error:
        upload.reject(str(error))
        return
    except Exception as error:
        if was_deleted(upload):
            return
        if s3.is_transient(error) and task.request.retries < MAX_RETRIES:
            raise task.retry(countdown=2**task.request.retries, exc=error) from error
        logger.exception("processing upload %s failed", upload.pk)
        upload.finish(Status.FAILED, "The file could not be processed; please try again later.")
        return
    if upload.finish(Status.READY, **fields) or was_deleted(upload):
        return
    # Rejected meanwhile (its file replaced): a rejected upload keeps nothing,
    # including the thumbnails this run wrote after the rejection deleted the
    # others.
    if Upload.objects.filter(pk=upload.pk, status=Status.REJECTED).exists():
        upload.discard_thumbnails()


def was_deleted(upload: Upload) -> bool:
    """True if the upload was deleted while it was being processed.

    Its thumbnails, written after the delete, then go too, rather than
    waiting for the orphan sweep.
    """
    if Upload.objects.filter(pk=upload.pk).exists():
        return False
    logger.info("upload %s was deleted while it was processed; removing its thumbnails", upload.pk)
    prefix = Thumbnail.key_for(upload.pk, "")[: -len(".webp")]
    s3.delete_many([obj["Key"] for obj in s3.iter_objects(prefix)])
    return True


@shared_task(bind=True, max_retries=MAX_RETRIES)
def regenerate_thumbnails(self, upload_id: str, force: bool = False) -> None:  # type: ignore[no-untyped-def]
    """Make missing thumbnails again (all of them when forced) for a ready image."""
    upload = Upload.objects.filter(pk=upload_id, status=Status.READY).first()
    if upload is None:
        return
    have = set(upload.thumbnails.values_list("name", flat=True))
    sizes = [size for size in settings.THUMBNAIL_SIZES if force or str(size) not in have]
    if not sizes:
        return
    try:
        build(upload, sizes)
    except Rejected as error:
        logger.warning("upload %s can no longer be thumbnailed: %s", upload_id, error)
    except Exception as error:
        if not s3.is_transient(error):
            raise
        raise self.retry(countdown=2**self.request.retries, exc=error) from error


def build(upload: Upload, sizes: list[int] | None = None) -> dict[str, Any]:
    """Download, sniff and thumbnail one upload; returns the fields to record.

    Makes thumbnails at `sizes`, by default every one of THUMBNAIL_SIZES.
    """
    sizes = sizes or settings.THUMBNAIL_SIZES
    description = filetypes.describe(upload.content_type)
    with tempfile.NamedTemporaryFile(suffix=".upload") as temp:
        try:
            s3.download_to(upload.key, temp, etag=upload.etag)
        except s3.ObjectChanged:
            raise Rejected("The file was replaced while it was being checked.") from None
        temp.flush()
        path = Path(temp.name)
        detected = filetypes.sniff(path)
        if not filetypes.matches(upload.content_type, detected):
            raise Rejected(f"The file is not a {description}.")
        if not upload.is_image:
            made = thumbnails.make_pdf_preview(path, sizes)
            save_thumbnails(upload, made)
            return {"detected_type": detected}
        try:
            info, made = thumbnails.make_thumbnails(
                path,
                sizes=sizes,
                max_pixels=settings.IMAGE_MAX_PIXELS,
                expected_type=upload.content_type,
                description=description,
            )
        except thumbnails.InvalidImage as error:
            raise Rejected(str(error)) from None
    save_thumbnails(upload, made)
    return {"detected_type": detected, "width": info.width, "height": info.height}


def save_thumbnails(upload: Upload, made: list[thumbnails.Thumbnail]) -> None:
    """Store each thumbnail at its deterministic key and record it."""
    for thumb in made:
        key = Thumbnail.key_for(upload.pk, thumb.name)
        s3.put(key, thumb.data, "image/webp", THUMBNAIL_CACHE_CONTROL)
        Thumbnail.objects.update_or_create(
            upload=upload,
            name=thumb.name,
            defaults={
                "file": key,
                "width": thumb.width,
                "height": thumb.height,
                "bytes": len(thumb.data),
                "created_at": timezone.now(),
            },
        )
    if made:
        # Sizes no longer in THUMBNAIL_SIZES go, with their objects.
        dropped = upload.thumbnails.exclude(name__in=[str(s) for s in settings.THUMBNAIL_SIZES])
        keys = [thumb.key for thumb in dropped]
        if keys:
            dropped.delete()
            delete_objects_after_commit(keys)


@shared_task(bind=True, max_retries=MAX_RETRIES)
def send_notification_email(self, notification_id: int) -> None:  # type: ignore[no-untyped-def]
    """Email one notification, once.

    A task claims the email with a conditional update before sending and
    marks it sent after. A claim older than the hard time limit belongs to a
    worker that died, so the task's redelivery takes it over: a crash costs
    a late email, never a lost one. Only a crash between the mail server's
    acceptance and the mark can send it twice, and then with the same
    Message-ID, which mail clients fold into one.
    """
    now = timezone.now()
    abandoned = now - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT)
    claimed = (
        Notification.objects.filter(pk=notification_id, emailed_at=None)
        .filter(Q(email_claimed_at=None) | Q(email_claimed_at__lt=abandoned))
        .update(email_claimed_at=now)
    )
    if not claimed:
        return
    notification = Notification.objects.select_related("owner").filter(pk=notification_id).first()
    if notification is None:
        logger.info("notification %s is gone; no email", notification_id)
        return
    try:
        notifications.email(notification)
    except Exception as error:
        # Give the claim back so the retry (or a later run) can send it.
        Notification.objects.filter(pk=notification_id).update(email_claimed_at=None)
        raise self.retry(countdown=2**self.request.retries * 5, exc=error) from error
    Notification.objects.filter(pk=notification_id).update(emailed_at=timezone.now())


@shared_task(bind=True, max_retries=MAX_RETRIES)
def send_confirmation_email(self, user_id: int) -> None:  # type: ignore[no-untyped-def]
    """Email the link that confirms a signed-up address, if it still needs confirming."""
    unconfirmed = UnconfirmedEmail.objects.select_related("user").filter(user_id=user_id).first()
    if unconfirmed is None:
        return
    try:
        notifications.send_confirmation(unconfirmed.user)
    except Exception as error:
        raise self.retry(countdown=2**self.request.retries * 5, exc=error) from error
