"""The maintenance commands against the embedded S3 and SQS, with real objects and messages."""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.core import mail
from django.core.management import CommandError, call_command
from django.utils import timezone

from tests.conftest import add_thumbnail, exists, jpeg_bytes, make_stuck, make_upload
from uploads import maintenance, s3
from uploads.models import Notification, Status, Upload

pytestmark = pytest.mark.django_db

DATA = settings.BASE_DIR / "tests" / "data"


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.fixture
def empty_bucket(isolated_storage: str) -> None:
    """A bucket of the test's own, so that counts below are about its objects alone."""
    call_command("setup_storage", stdout=io.StringIO())


# --- cleanup_uploads ---


@pytest.fixture
def short_forms(settings: Any) -> None:
    """Upload forms valid for a second, so that a grace period of seconds is allowed."""
    settings.UPLOAD_URL_EXPIRES = 1


@pytest.fixture
def bucket_with_garbage(user: Any, empty_bucket: None, short_forms: None) -> dict[str, Any]:
    """Objects of every kind, some older than a 2-second grace period and some not."""
    ready = make_upload(user, Status.READY, jpeg_bytes())
    thumbnail = add_thumbnail(ready, "256")
    failed = make_upload(user, Status.FAILED, jpeg_bytes())
    rejected = make_upload(user, Status.REJECTED, b"not really a jpeg")
    stale = make_upload(user, Status.PENDING, b"arrived late")
    Upload.objects.filter(pk=stale.pk).update(created_at=timezone.now() - timedelta(days=2))
    orphan = f"uploads/{uuid.uuid4()}.png"
    orphan_thumb = f"thumbs/{uuid.uuid4()}/256.webp"
    s3.put(orphan, b"no row", "image/png", "private")
    s3.put(orphan_thumb, b"no row", "image/webp", "private")
    # An old object whose pending row is young: the upload is still in progress.
    young_key = f"uploads/{uuid.uuid4()}.jpg"
    s3.put(young_key, b"in progress", "image/jpeg", "private")
    multipart = s3.client("s3").create_multipart_upload(
        Bucket=s3.bucket(), Key=f"uploads/{uuid.uuid4()}.jpg"
    )["UploadId"]
    time.sleep(3)
    young = Upload.objects.create(
        owner=user, filename="young.jpg", file=young_key, content_type="image/jpeg", size=11
    )
    fresh_orphan = f"uploads/{uuid.uuid4()}.gif"
    s3.put(fresh_orphan, b"too young to judge", "image/gif", "private")
    return {
        "kept": [ready.key, thumbnail.key, failed.key, young_key, fresh_orphan],
        "deleted": [orphan, orphan_thumb, rejected.key, stale.key],
        "stale": stale,
        "young": young,
        "multipart": multipart,
    }


def multipart_ids() -> set[str]:
    return {pending["UploadId"] for pending in s3.iter_multipart_uploads()}


def test_cleanup_deletes_orphans_and_nothing_else(bucket_with_garbage: dict[str, Any]) -> None:
    output = run("cleanup_uploads", "--older-than", "2s")

    assert [key for key in bucket_with_garbage["deleted"] if exists(key)] == []
    assert [key for key in bucket_with_garbage["kept"] if not exists(key)] == []
    assert bucket_with_garbage["multipart"] not in multipart_ids()
    assert "Deleted 4 orphaned objects" in output
    assert "Aborted 1 stale multipart uploads" in output


def test_cleanup_expires_stale_pending_uploads_and_their_late_files(
    bucket_with_garbage: dict[str, Any],
) -> None:
    stale, young = bucket_with_garbage["stale"], bucket_with_garbage["young"]

    output = run("cleanup_uploads", "--older-than", "2s")

    stale.refresh_from_db()
    assert stale.status == Status.EXPIRED
    assert stale.error
    assert not exists(stale.key)
    young.refresh_from_db()
    assert young.status == Status.PENDING
    assert exists(young.key)
    assert "Expired 1 pending uploads" in output


def test_cleanup_rescues_a_stale_upload_whose_file_came_in_time(
    user: Any, empty_bucket: None, settings: Any
) -> None:
    # Its event and the page's "complete" call were both lost. (moto cannot
    # backdate an object, so the form's lifetime is stretched instead.)
    settings.UPLOAD_URL_EXPIRES = 3 * 24 * 3600
    unnoticed = make_upload(user, Status.PENDING, jpeg_bytes())
    Upload.objects.filter(pk=unnoticed.pk).update(created_at=timezone.now() - timedelta(days=2))

    assert maintenance.expire_stale(cutoff=timezone.now()) == (0, 1)

    unnoticed.refresh_from_db()
    assert unnoticed.status == Status.PROCESSING
    assert exists(unnoticed.key)


def test_cleanup_dry_run_counts_a_rescuable_upload_as_kept_not_orphaned(
    user: Any, empty_bucket: None, settings: Any
) -> None:
    settings.UPLOAD_URL_EXPIRES = 3 * 24 * 3600
    unnoticed = make_upload(user, Status.PENDING, jpeg_bytes())
    created = timezone.now() - timedelta(days=3, minutes=1)
    Upload.objects.filter(pk=unnoticed.pk).update(created_at=created)

    output = run("cleanup_uploads", "--older-than", "3d", "--dry-run")

    assert "would rescue 1 whose file came unnoticed" in output
    assert "Would delete 0 orphaned objects" in output
    assert Upload.objects.get(pk=unnoticed.pk).status == Status.PENDING
    assert exists(unnoticed.key)


def test_cleanup_dry_run_leaves_lost_tasks_and_unsent_emails_alone(
    user: Any, empty_bucket: None, short_forms: None, eager_tasks: None, settings: Any
) -> None:
    lost = make_stuck(user)
    notification = Notification.objects.create(
        owner=user, upload=lost, kind="ready", message="lost.jpg is ready."
    )
    Notification.objects.filter(pk=notification.pk).update(
        created_at=timezone.now() - timedelta(hours=1)
    )

    output = run("cleanup_uploads", "--older-than", "2s", "--dry-run")

    assert Upload.objects.get(pk=lost.pk).status == Status.PROCESSING
    assert Upload.objects.get(pk=lost.pk).updated_at == lost.updated_at
    assert mail.outbox == []
    assert Notification.objects.get(pk=notification.pk).emailed_at is None
    assert "processing again for 1 uploads" in output
    assert "1 unsent emails" in output


def test_cleanup_dry_run_changes_nothing(bucket_with_garbage: dict[str, Any]) -> None:
    output = run("cleanup_uploads", "--older-than", "2s", "--dry-run")

    every_key = bucket_with_garbage["kept"] + bucket_with_garbage["deleted"]
    assert [key for key in every_key if not exists(key)] == []
    assert bucket_with_garbage["multipart"] in multipart_ids()
    assert Upload.objects.get(pk=bucket_with_garbage["stale"].pk).status == Status.PENDING
    assert "Dry run: would expire 1 pending uploads" in output
    assert "Would delete 4 orphaned objects" in output
    assert "Would abort 1 stale multipart uploads" in output


def test_cleanup_default_grace_period_spares_todays_objects(
    bucket_with_garbage: dict[str, Any],
) -> None:
    run("cleanup_uploads")

    # Only rows say for sure: the rejected upload's and the 2-day-old pending one's files go.
    gone = {bucket_with_garbage["deleted"][2], bucket_with_garbage["stale"].key}
    every_key = bucket_with_garbage["kept"] + bucket_with_garbage["deleted"]
    assert {key for key in every_key if not exists(key)} == gone


def test_cleanup_pages_through_more_than_one_listing_page(
    user: Any, empty_bucket: None, short_forms: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(maintenance, "PAGE", 3)
    keep = [make_upload(user, Status.READY, b"x").key for _ in range(4)]
    orphans = [f"uploads/{uuid.uuid4()}.jpg" for _ in range(5)]
    for key in orphans:
        s3.put(key, b"x", "image/jpeg", "private")
    time.sleep(2)

    output = run("cleanup_uploads", "--older-than", "1s")

    assert "Deleted 5 orphaned objects" in output
    assert "of 9 scanned" in output
    assert all(exists(key) for key in keep)
    assert not any(exists(key) for key in orphans)


def test_cleanup_refuses_a_bad_age() -> None:
    with pytest.raises(CommandError, match="not an age"):
        call_command("cleanup_uploads", "--older-than", "yesterday")
    # Shorter than an upload form lives: uploads in progress would be expired.
    with pytest.raises(CommandError, match="UPLOAD_URL_EXPIRES"):
        call_command("cleanup_uploads", "--older-than", "5m")


# --- reprocess_uploads ---


def test_reprocess_makes_missing_thumbnails_only(
    user: Any, eager_tasks: None, settings: Any
) -> None:
    settings.THUMBNAIL_SIZES = [64, 128]
    missing = make_upload(user, Status.READY, jpeg_bytes())
    add_thumbnail(missing, "64")
    complete = make_upload(user, Status.READY, jpeg_bytes())
    old = {name: add_thumbnail(complete, name).created_at for name in ("64", "128")}

    output = run("reprocess_uploads", "--status", "ready")

    assert set(missing.thumbnails.values_list("name", flat=True)) == {"64", "128"}
    made = missing.thumbnails.get(name="128")
    assert max(made.width, made.height) == 128
    assert exists(made.key)
    assert {t.name: t.created_at for t in complete.thumbnails.all()} == old
    assert "Queued thumbnails for 1 ready images" in output


def test_reprocess_force_remakes_every_thumbnail(
    user: Any, eager_tasks: None, settings: Any
) -> None:
    settings.THUMBNAIL_SIZES = [64]
    upload = make_upload(user, Status.READY, jpeg_bytes())
    placeholder = add_thumbnail(upload, "64")

    run("reprocess_uploads", "--id", str(upload.pk), "--force")

    remade = upload.thumbnails.get(name="64")
    assert remade.bytes != placeholder.bytes
    assert max(remade.width, remade.height) == 64


def test_reprocess_sends_failed_uploads_back_through_processing(
    user: Any, eager_tasks: None, django_capture_on_commit_callbacks: Any
) -> None:
    failed = make_upload(user, Status.FAILED, jpeg_bytes(), error="Worker crashed.")
    pending = make_upload(user, Status.PENDING)

    with django_capture_on_commit_callbacks(execute=True):
        output = run("reprocess_uploads", "--all")

    failed.refresh_from_db()
    assert failed.status == Status.READY
    assert failed.error == ""
    assert failed.detected_type == "image/jpeg"
    assert failed.thumbnails.count() == len(settings.THUMBNAIL_SIZES)
    assert Upload.objects.get(pk=pending.pk).status == Status.PENDING
    assert Notification.objects.filter(upload=failed, kind=Status.READY).exists()
    assert "processing for 1 failed uploads" in output


def test_reprocess_queues_again_an_upload_stuck_in_processing(
    user: Any, eager_tasks: None, settings: Any
) -> None:
    settings.THUMBNAIL_SIZES = [64]
    stuck = make_stuck(user)
    on_time = make_upload(user, Status.PROCESSING, jpeg_bytes())

    output = run("reprocess_uploads", "--status", "processing")

    assert Upload.objects.get(pk=stuck.pk).status == Status.READY
    assert Upload.objects.get(pk=on_time.pk).status == Status.PROCESSING  # its task may still run
    assert "and 1 stuck in processing" in output


def test_reprocess_dry_run_changes_nothing(
    user: Any, django_capture_on_commit_callbacks: Any
) -> None:
    failed = make_upload(user, Status.FAILED, jpeg_bytes())
    ready = make_upload(user, Status.READY, jpeg_bytes())

    with django_capture_on_commit_callbacks() as callbacks:
        output = run("reprocess_uploads", "--all", "--dry-run")

    assert callbacks == []
    assert Upload.objects.get(pk=failed.pk).status == Status.FAILED
    assert not ready.thumbnails.exists()
    assert "Dry run: would queue thumbnails for 1 ready images and processing for 1" in output
    assert "Would queue thumbnails for 1 ready images." in output
    assert "Queued" not in output and "Sent" not in output


def test_reprocess_selects_by_date(user: Any) -> None:
    old = make_upload(user, Status.FAILED, jpeg_bytes())
    Upload.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=10))
    make_upload(user, Status.FAILED, jpeg_bytes())
    since = (timezone.now() - timedelta(days=1)).date().isoformat()

    output = run("reprocess_uploads", "--since", since, "--dry-run")

    assert "processing for 1 failed uploads" in output


def test_reprocess_needs_a_selection() -> None:
    with pytest.raises(CommandError, match="--all"):
        call_command("reprocess_uploads")
    with pytest.raises(CommandError, match="--all"):
        call_command("reprocess_uploads", "--all", "--status", "ready")


def test_resending_a_notification_emails_it_again(
    user: Any, eager_tasks: None, django_capture_on_commit_callbacks: Any
) -> None:
    upload = make_upload(user, Status.READY)
    notification = Notification.objects.create(
        owner=user, upload=upload, kind=Status.READY, message="ready", emailed_at=timezone.now()
    )

    with django_capture_on_commit_callbacks(execute=True):
        count = maintenance.resend_notifications(
            maintenance.outcome_notifications(Upload.objects.all())
        )

    assert count == 1
    assert [message.to for message in mail.outbox] == [[user.email]]
    notification.refresh_from_db()
    assert notification.emailed_at is not None


# --- redrive_dead_letters ---


@pytest.fixture
def queues(settings: Any) -> Iterator[tuple[str, str]]:
    """An events queue and its dead-letter queue of this test's own.

    Not the session's: a consumer started by the pipeline tests may be
    reading those, and would take the messages this test looks for.
    """
    suffix = uuid.uuid4().hex[:8]
    settings.S3_EVENTS_QUEUE = f"redrive-events-{suffix}"
    settings.S3_EVENTS_DLQ = f"redrive-events-{suffix}-dlq"
    sqs = s3.client("sqs")
    urls = [
        sqs.create_queue(QueueName=name)["QueueUrl"]
        for name in (settings.S3_EVENTS_QUEUE, settings.S3_EVENTS_DLQ)
    ]
    yield settings.S3_EVENTS_QUEUE, settings.S3_EVENTS_DLQ
    for url in urls:
        sqs.delete_queue(QueueUrl=url)


def event_for(key: str) -> str:
    event = json.loads((DATA / "s3-put-event.json").read_text())
    event["Records"][0]["s3"]["bucket"]["name"] = s3.bucket()
    event["Records"][0]["s3"]["object"]["key"] = key
    return json.dumps(event)


def drain(queue: str) -> list[str]:
    bodies = []
    while messages := s3.receive(queue, wait_seconds=0):
        bodies += [message["Body"] for message in messages]
        s3.delete_messages(queue, [message["ReceiptHandle"] for message in messages])
    return bodies


@pytest.fixture
def dead_letters(queues: tuple[str, str], user: Any) -> list[str]:
    ready = make_upload(user, Status.READY)
    bodies = [
        event_for(ready.key),
        event_for("uploads/gone.jpg"),
        "{not json",
        *(event_for(f"uploads/{n}.jpg") for n in range(4)),
    ]
    for body in bodies:
        s3.send_message(queues[1], body)
    return bodies


def test_redrive_dry_run_lists_with_reasons_and_moves_nothing(
    queues: tuple[str, str], dead_letters: list[str]
) -> None:
    output = run("redrive_dead_letters", "--dry-run", "--sample", "10")

    assert f"{queues[1]}: 7 messages waiting" in output
    assert "upload ready" in output
    assert "uploads/gone.jpg: no upload" in output
    assert "malformed: not JSON" in output
    assert "Dry run: would move" in output
    assert s3.queue_depth(queues[1])["visible"] == 7
    assert s3.queue_depth(queues[0])["visible"] == 0


def test_redrive_moves_messages_back_to_the_events_queue(
    queues: tuple[str, str], dead_letters: list[str]
) -> None:
    events, dlq = queues

    output = run("redrive_dead_letters", "--limit", "3")

    assert "Moved to" in output and ": 3 messages" in output
    assert s3.queue_depth(dlq)["visible"] == 4

    run("redrive_dead_letters")

    assert sorted(drain(events)) == sorted(dead_letters)
    assert drain(dlq) == []


def test_redrive_purge_drops_messages_and_its_dry_run_does_not(
    queues: tuple[str, str], dead_letters: list[str]
) -> None:
    events, dlq = queues

    run("redrive_dead_letters", "--purge", "--dry-run")
    assert s3.queue_depth(dlq)["visible"] == 7

    output = run("redrive_dead_letters", "--purge")

    assert "Dropped: 7 messages" in output
    assert drain(dlq) == []
    assert drain(events) == []


def test_cleanup_restarts_uploads_whose_task_was_lost(
    user: Any, empty_bucket: None, short_forms: None, eager_tasks: None, settings: Any
) -> None:
    settings.THUMBNAIL_SIZES = [64]
    lost = make_stuck(user)
    busy = make_upload(user, Status.PROCESSING, jpeg_bytes())

    output = run("cleanup_uploads", "--older-than", "2s")

    lost.refresh_from_db()
    assert lost.status == Status.READY, lost.error
    assert Upload.objects.get(pk=busy.pk).status == Status.PROCESSING  # still within its time
    assert "processing again for 1 uploads" in output


def test_cleanup_queues_emails_that_were_never_queued(
    user: Any, empty_bucket: None, short_forms: None, eager_tasks: None
) -> None:
    upload = make_upload(user, Status.READY, jpeg_bytes())
    notification = Notification.objects.create(
        owner=user, upload=upload, kind="ready", message="ready.jpg is ready."
    )
    Notification.objects.filter(pk=notification.pk).update(
        created_at=timezone.now() - timedelta(hours=1)
    )

    output = run("cleanup_uploads", "--older-than", "2s")

    assert "1 unsent emails" in output
    assert len(mail.outbox) == 1
    notification.refresh_from_db()
    assert notification.emailed_at is not None


def test_redriven_events_are_then_handled_by_the_consumer(
    queues: tuple[str, str], user: Any
) -> None:
    from uploads import consumer

    events, dlq = queues
    upload = make_upload(user, Status.PENDING, jpeg_bytes())
    s3.send_message(dlq, event_for(upload.key))  # gave up on while storage was down, say

    run("redrive_dead_letters")
    result = consumer.handle_batch(events, s3.receive(events, wait_seconds=1))

    assert result.handled == 1
    upload.refresh_from_db()
    assert upload.status == Status.PROCESSING
    assert s3.queue_depth(events)["visible"] == 0 and s3.queue_depth(dlq)["visible"] == 0


def test_cleanup_fails_loudly_when_s3_keeps_objects(
    bucket_with_garbage: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # S3 reports per-key errors in a 200 response; moto never does.
    monkeypatch.setattr(s3, "delete_many", lambda keys: list(keys))

    with pytest.raises(CommandError, match="could not delete 4 objects"):
        run("cleanup_uploads", "--older-than", "2s")
