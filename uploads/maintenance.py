"""Housekeeping of uploads, their S3 objects and the events' dead-letter queue.

The logic behind `cleanup_uploads`, `reprocess_uploads`, `redrive_dead_letters`
and the admin's actions, so that those stay thin. Work goes page by page (1,000
keys, one query per page), never holding a whole bucket or table in memory, and
every state change is a conditional update: a run racing the consumer, a worker
or another run changes nothing twice.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.db.models import Count, F, Q, QuerySet
from django.utils import timezone

from uploads import s3
from uploads.events import MalformedEvent, parse_s3_event
from uploads.models import (
    KEY_PREFIX,
    THUMBS_PREFIX,
    Notification,
    Status,
    Thumbnail,
    Upload,
    UploadQuerySet,
    delete_objects_after_commit,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")
Progress = Callable[[str], None]

# Keys per page: one S3 listing page, one DeleteObjects call, one query.
PAGE = s3.DELETE_BATCH
# Statuses whose original the system deletes: their objects are garbage too.
DISCARDED = (Status.EXPIRED, Status.REJECTED)
# Statuses reprocess_uploads knows what to do with.
REPROCESSABLE = (Status.READY, Status.FAILED, Status.PROCESSING)
NEVER_ARRIVED = "The file never arrived."
# An email still unsent this long after its notification was never queued.
UNSENT_EMAIL_GRACE = timedelta(minutes=15)
# How far S3's clock and ours may disagree.
CLOCK_SKEW = timedelta(minutes=5)

_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _quiet(message: str) -> None:
    pass


def parse_age(value: str) -> timedelta:
    """'90s', '30m', '24h' or '7d'; a bare number is seconds."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", value)
    if match is None:
        raise ValueError(f"{value!r} is not an age like 90s, 30m, 24h or 7d")
    return timedelta(seconds=int(match[1]) * _AGE_UNITS[match[2] or "s"])


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def pk_chunks(queryset: QuerySet[Any], size: int = PAGE) -> Iterator[list[Any]]:
    """The primary keys of a queryset, `size` at a time, in key order.

    Keyset pagination: rows leaving the queryset as they are updated (or
    new ones arriving) neither stop it nor make it repeat itself.
    """
    ordered = queryset.order_by("pk")
    last = None
    while True:
        page = ordered if last is None else ordered.filter(pk__gt=last)
        pks = list(page.values_list("pk", flat=True)[:size])
        if not pks:
            return
        yield pks
        last = pks[-1]


# --- cleanup_uploads ---


@dataclass
class CleanupResult:
    expired: int = 0
    rescued: int = 0
    restarted: int = 0
    emails_requeued: int = 0
    scanned: int = 0
    orphans: int = 0
    orphan_bytes: int = 0
    orphan_sample: list[str] = field(default_factory=list)
    multipart_aborted: int = 0
    # Keys of stale pending uploads rescued (or, in a dry run, that would be):
    # their objects are needed, not orphans.
    rescued_keys: set[str] = field(default_factory=set)
    # Keys S3 reported it could not delete.
    failed: list[str] = field(default_factory=list)


def cleanup(
    older_than: timedelta, dry_run: bool = False, progress: Progress = _quiet
) -> CleanupResult:
    """Expire stale pending uploads, delete objects nothing needs, abort stale multipart uploads.

    Nothing younger than `older_than` is touched, neither rows nor objects
    without a row, so uploads in progress are safe.
    """
    cutoff = timezone.now() - older_than
    result = CleanupResult()
    progress("Settling stale pending uploads...")
    result.expired, result.rescued = expire_stale(cutoff, dry_run, result.rescued_keys, progress)
    progress(
        f"{'Would expire' if dry_run else 'Expired'} {result.expired:,} pending uploads; "
        f"{'would rescue' if dry_run else 'rescued'} {result.rescued:,} whose file came unnoticed."
    )
    for prefix in (KEY_PREFIX, THUMBS_PREFIX):
        progress(f"Looking for orphans under {prefix}...")
        delete_orphans(prefix, cutoff, dry_run, result, progress)
    progress("Looking for stale multipart uploads...")
    abort_stale_multipart_uploads(cutoff, dry_run, result, progress)
    progress("Looking for lost processing tasks and unsent emails...")
    result.restarted = restart_stuck(dry_run)
    result.emails_requeued = requeue_unsent_emails(dry_run)
    return result


def restart_stuck(dry_run: bool = False, uploads: UploadQuerySet | None = None) -> int:
    """Queue processing again for uploads (of `uploads`) whose task was lost; returns how many.

    The touch of updated_at is the claim: two cleanups at once queue it once.
    """
    from uploads.tasks import process_upload

    stuck = (Upload.objects.all() if uploads is None else uploads).stuck()
    restarted = 0
    for pks in pk_chunks(stuck):
        for pk in pks:
            if dry_run or Upload.objects.stuck().filter(pk=pk).update(updated_at=timezone.now()):
                if not dry_run:
                    process_upload.delay(str(pk))
                restarted += 1
    return restarted


def requeue_unsent_emails(dry_run: bool = False) -> int:
    """Queue again the emails whose task was never queued (the broker was down)."""
    from uploads.tasks import send_notification_email

    unsent = Notification.objects.filter(
        emailed_at=None, created_at__lt=timezone.now() - UNSENT_EMAIL_GRACE
    )
    requeued = 0
    for pks in pk_chunks(unsent):
        for pk in pks:
            if not dry_run:
                send_notification_email.delay(pk)
            requeued += 1
    return requeued


def expire_stale(
    cutoff: datetime,
    dry_run: bool = False,
    rescued_keys: set[str] | None = None,
    progress: Progress = _quiet,
) -> tuple[int, int]:
    """Settle pending uploads created before `cutoff`; returns (expired, rescued).

    Their form expired long ago. If the file came while the form was valid,
    its event and the page's "complete" call were both lost: the upload is
    rescued (checked and processed as the event would have), and its key
    added to `rescued_keys`. Otherwise it expires, and a file that came late
    is deleted by delete_orphans.
    """
    expired = rescued = checked = 0
    form_lifetime = timedelta(seconds=settings.UPLOAD_URL_EXPIRES) + CLOCK_SKEW
    for pks in pk_chunks(Upload.objects.stale(cutoff)):
        checked += len(pks)
        for upload in Upload.objects.filter(pk__in=pks, status=Status.PENDING):
            info = s3.head(upload.key)
            if info is not None and info.last_modified <= upload.created_at + form_lifetime:
                if dry_run or upload.accept_arrival():
                    rescued += 1
                    if rescued_keys is not None:
                        rescued_keys.add(upload.key)
            elif dry_run or Upload.objects.filter(pk=upload.pk, status=Status.PENDING).update(
                status=Status.EXPIRED, error=NEVER_ARRIVED, updated_at=timezone.now()
            ):
                expired += 1
        progress(f"Checked {checked:,} stale pending uploads so far.")
    return expired, rescued


def orphans_in(
    prefix: str,
    page: list[dict[str, Any]],
    cutoff: datetime,
    rescued: AbstractSet[str] = frozenset(),
) -> list[str]:
    """The keys of one listing page under `prefix` that nothing needs, in one query.

    Under uploads/: an object whose row is expired or rejected (or pending
    and stale, so expired by this run), or with no row at all; under thumbs/,
    one with no Thumbnail row. An object with no row is left alone while
    younger than `cutoff`: its row may not be visible yet, or be written just
    after it (as thumbnails are).
    """
    keys = [obj["Key"] for obj in page]
    if prefix == THUMBS_PREFIX:
        needed = set(Thumbnail.objects.filter(file__in=keys).values_list("file", flat=True))
        discarded: set[str] = set()
    else:
        rows = Upload.objects.filter(file__in=keys)
        needed = set(
            rows.exclude(status__in=DISCARDED)
            .exclude(status=Status.PENDING, created_at__lt=cutoff)
            .values_list("file", flat=True)
        )
        discarded = set(rows.values_list("file", flat=True)) - needed - rescued
    return [
        obj["Key"]
        for obj in page
        if obj["Key"] in discarded or (obj["Key"] not in needed and obj["LastModified"] < cutoff)
    ]


def delete_orphans(
    prefix: str, cutoff: datetime, dry_run: bool, result: CleanupResult, progress: Progress
) -> None:
    """Delete the objects under `prefix` that nothing needs, a listing page at a time."""
    for number, page in enumerate(chunked(s3.iter_objects(prefix), PAGE), start=1):
        result.scanned += len(page)
        orphans = orphans_in(prefix, page, cutoff, result.rescued_keys)
        sizes = {obj["Key"]: int(obj.get("Size", 0)) for obj in page}
        result.orphans += len(orphans)
        result.orphan_bytes += sum(sizes[key] for key in orphans)
        result.orphan_sample += orphans[: max(0, 10 - len(result.orphan_sample))]
        if orphans and not dry_run:
            result.failed += s3.delete_many(orphans)
        if number % 10 == 0:
            progress(f"Scanned {result.scanned:,} objects, {result.orphans:,} orphans so far.")


def abort_stale_multipart_uploads(
    cutoff: datetime, dry_run: bool, result: CleanupResult, progress: Progress = _quiet
) -> None:
    """Abort multipart uploads begun before `cutoff` and never finished.

    The bucket's lifecycle rule does this after a day too; this catches
    buckets without it and lets the grace period be shorter.
    """
    for upload in s3.iter_multipart_uploads():
        if upload["Initiated"] >= cutoff:
            continue
        if dry_run or s3.abort_multipart_upload(upload["Key"], upload["UploadId"]):
            result.multipart_aborted += 1
            if result.multipart_aborted % PAGE == 0:
                progress(f"Aborted {result.multipart_aborted:,} multipart uploads so far.")


# --- reprocess_uploads and the admin's actions ---


def select_for_reprocess(
    ids: Iterable[Any] = (), statuses: Iterable[str] = (), since: datetime | None = None
) -> QuerySet[Upload]:
    uploads = Upload.objects.all()
    if ids:
        uploads = uploads.filter(pk__in=list(ids))
    if statuses:
        uploads = uploads.filter(status__in=list(statuses))
    if since is not None:
        uploads = uploads.filter(created_at__gte=since)
    return uploads


def missing_thumbnails(uploads: QuerySet[Upload]) -> QuerySet[Upload]:
    """Those of `uploads` lacking a thumbnail of one of the THUMBNAIL_SIZES."""
    names = [str(size) for size in settings.THUMBNAIL_SIZES]
    return uploads.annotate(
        current_thumbnails=Count("thumbnails", filter=Q(thumbnails__name__in=names))
    ).filter(current_thumbnails__lt=len(names))


@dataclass
class ReprocessResult:
    # Ready images queued to have their thumbnails made again.
    thumbnails: int = 0
    # Failed uploads sent back to processing.
    retried: int = 0
    # Uploads stuck in processing (their task lost) queued again.
    restarted: int = 0


def reprocess(
    uploads: QuerySet[Upload],
    force: bool = False,
    dry_run: bool = False,
    progress: Progress = _quiet,
    chunk_size: int = 500,
) -> ReprocessResult:
    """Make thumbnails again for the ready images among `uploads`, retry the failed ones
    and queue again those stuck in processing.

    Without `force`, only images lacking a current thumbnail size are queued,
    and only the missing sizes are made. Other statuses are skipped.
    """
    from uploads.tasks import regenerate_thumbnails

    result = ReprocessResult()
    # Images, and PDFs for their first-page preview.
    images = uploads.filter(status=Status.READY)
    if not force:
        images = missing_thumbnails(images)
    for pks in pk_chunks(images, chunk_size):
        if not dry_run:
            for pk in pks:
                regenerate_thumbnails.delay(str(pk), force)
        result.thumbnails += len(pks)
        queued = "Would queue" if dry_run else "Queued"
        progress(f"{queued} thumbnails for {result.thumbnails:,} ready images.")
    for pks in pk_chunks(uploads.filter(status=Status.FAILED), chunk_size):
        result.retried += (
            len(pks) if dry_run else sum(u.retry() for u in Upload.objects.filter(pk__in=pks))
        )
        sent = "Would send" if dry_run else "Sent"
        progress(f"{sent} {result.retried:,} failed uploads back to processing.")
    processing = uploads.filter(status=Status.PROCESSING).values("pk")
    result.restarted = restart_stuck(dry_run, Upload.objects.filter(pk__in=processing))
    return result


def outcome_notifications(uploads: QuerySet[Upload]) -> QuerySet[Notification]:
    """The notification of each upload's current outcome, where there is one."""
    return Notification.objects.filter(upload__in=uploads.values("pk"), kind=F("upload__status"))


def resend_notifications(notifications: QuerySet[Notification]) -> int:
    """Email these notifications again (once, after commit); returns how many."""
    from uploads.tasks import send_notification_email

    pks = list(notifications.values_list("pk", flat=True))
    for chunk in chunked(pks, PAGE):
        Notification.objects.filter(pk__in=chunk).update(emailed_at=None, email_claimed_at=None)
    for pk in pks:
        send_notification_email.delay_on_commit(pk)
    return len(pks)


def delete_uploads(
    uploads: QuerySet[Upload], report: Callable[[list[str]], None] | None = None
) -> int:
    """Delete uploads, a page at a time, then (after commit) their S3 objects.

    Returns how many uploads were deleted; `report` hears of keys S3 could
    not delete (cleanup_uploads removes those later, as orphans).
    """
    deleted = 0
    for pks in pk_chunks(uploads):
        keys = [
            *Upload.objects.filter(pk__in=pks).values_list("file", flat=True),
            *Thumbnail.objects.filter(upload__in=pks).values_list("file", flat=True),
        ]
        Upload.objects.filter(pk__in=pks).delete()
        delete_objects_after_commit(keys, report)
        deleted += len(pks)
    return deleted


# --- redrive_dead_letters ---


@dataclass(frozen=True)
class DeadLetter:
    message_id: str
    sent_at: datetime | None
    receives: int
    reason: str


def explain(body: str) -> str:
    """What the consumer would make of this event now: why it likely died."""
    try:
        events = parse_s3_event(body)
    except MalformedEvent as error:
        return f"malformed: {error}"
    if not events:
        return "no ObjectCreated record"
    reasons = []
    for event in events:
        if event.bucket != s3.bucket():
            reasons.append(f"{event.key}: bucket {event.bucket} is not ours")
            continue
        status = Upload.objects.filter(file=event.key).values_list("status", flat=True).first()
        reasons.append(f"{event.key}: upload {status}" if status else f"{event.key}: no upload")
    return "; ".join(reasons)


def _dead_letter(message: dict[str, Any]) -> DeadLetter:
    attributes = message.get("Attributes", {})
    sent = attributes.get("SentTimestamp")
    return DeadLetter(
        message_id=str(message.get("MessageId", "")),
        sent_at=datetime.fromtimestamp(int(sent) / 1000, tz=UTC) if sent else None,
        receives=int(attributes.get("ApproximateReceiveCount", 0)),
        reason=explain(message.get("Body", "")),
    )


def dead_letter_depth() -> dict[str, int]:
    return s3.queue_depth(settings.S3_EVENTS_DLQ)


def peek_dead_letters(limit: int) -> list[DeadLetter]:
    """Up to `limit` dead letters, explained, and left in the queue (visible again at once)."""
    queue = settings.S3_EVENTS_DLQ
    available = dead_letter_depth()["visible"]
    seen: dict[str, dict[str, Any]] = {}
    try:
        while len(seen) < min(limit, available):
            messages = s3.receive(queue, wait_seconds=1, max_messages=min(10, limit - len(seen)))
            if not messages:
                break
            # The latest receipt handle of each: only that one can release it.
            seen |= {message["MessageId"]: message for message in messages}
    finally:
        for message in seen.values():
            s3.release_message(queue, message["ReceiptHandle"])
    return [_dead_letter(message) for message in seen.values()]


@dataclass
class RedriveResult:
    done: int = 0
    # Messages SQS refused to take (moving) or to delete; they stay dead letters.
    failed: int = 0


def redrive(
    limit: int | None = None, purge: bool = False, progress: Progress = _quiet
) -> RedriveResult:
    """Move dead letters back to the events queue, or with `purge` drop them.

    At most `limit` messages, and never more than the queue held when it began:
    a message failing again quickly must not come round in an endless loop. A
    message leaves the dead-letter queue only once the events queue has it, so
    a crash may duplicate an event (handled idempotently) but never lose one.
    """
    dlq, queue = settings.S3_EVENTS_DLQ, settings.S3_EVENTS_QUEUE
    held = dead_letter_depth()["visible"]
    limit = held if limit is None else min(limit, held)
    result = RedriveResult()
    while result.done + result.failed < limit:
        want = min(10, limit - result.done - result.failed)
        messages = s3.receive(dlq, wait_seconds=1, max_messages=want)
        if not messages:
            break
        refused = set() if purge else set(s3.send_messages(queue, [m["Body"] for m in messages]))
        handles = [m["ReceiptHandle"] for i, m in enumerate(messages) if i not in refused]
        not_deleted = s3.delete_messages(dlq, handles)
        before = result.done
        result.done += len(handles) - len(not_deleted)
        result.failed += len(refused) + len(not_deleted)
        if result.done // 100 > before // 100:
            progress(f"{'Dropped' if purge else 'Moved'} {result.done:,} messages.")
    return result
