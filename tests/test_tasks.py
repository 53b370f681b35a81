"""Task behaviour under faults that moto cannot produce on demand (storage outages)."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)

from tests import images
from uploads import s3
from uploads.models import Notification, Status, Upload
from uploads.tasks import MAX_UNFINISHED_RUNS, process_upload, regenerate_thumbnails

pytestmark = pytest.mark.django_db


def processing_jpeg(user: Any) -> Upload:
    data = images.jpeg((640, 480))
    upload = Upload.start(user, "a.jpg", "image/jpeg", len(data))
    s3.put(upload.key, data, "image/jpeg", "no-cache")
    # Claimed as arrival claims it, with the verified ETag, so that a consumer
    # seeing this object's event takes it for the version already checked.
    etag = s3.head(upload.key).etag  # type: ignore[union-attr]
    Upload.objects.filter(pk=upload.pk).update(status=Status.PROCESSING, etag=etag)
    upload.refresh_from_db()
    return upload


def test_transient_storage_errors_are_retried_then_fail(user: Any) -> None:
    upload = processing_jpeg(user)
    outage = EndpointConnectionError(endpoint_url="http://s3")

    with mock.patch("uploads.s3.download_to", side_effect=outage) as download:
        process_upload.apply(args=[str(upload.pk)])

    upload.refresh_from_db()
    assert upload.status == Status.FAILED
    assert "try again later" in upload.error
    assert download.call_count == 6  # the first try and 5 retries
    assert Notification.objects.get(upload=upload).kind == "failed"


def test_a_transient_error_that_clears_ends_ready(user: Any) -> None:
    upload = processing_jpeg(user)
    real_download = s3.download_to
    calls = []

    def flaky(key: str, fileobj: Any, etag: str = "") -> None:
        calls.append(key)
        if len(calls) < 3:
            raise EndpointConnectionError(endpoint_url="http://s3")
        real_download(key, fileobj, etag)

    with mock.patch("uploads.s3.download_to", side_effect=flaky):
        process_upload.apply(args=[str(upload.pk)])

    upload.refresh_from_db()
    assert upload.status == Status.READY
    assert len(calls) == 3


def test_an_unexpected_error_fails_at_once_without_retrying(user: Any) -> None:
    upload = processing_jpeg(user)

    with mock.patch("uploads.s3.download_to", side_effect=KeyError("bug")) as download:
        process_upload.apply(args=[str(upload.pk)])

    upload.refresh_from_db()
    assert upload.status == Status.FAILED
    assert download.call_count == 1


def test_an_upload_whose_runs_keep_dying_ends_failed_and_its_owner_is_told(user: Any) -> None:
    upload = processing_jpeg(user)
    # Three runs started and never returned (the worker was killed each time).
    Upload.objects.filter(pk=upload.pk).update(unfinished_runs=MAX_UNFINISHED_RUNS)

    process_upload.apply(args=[str(upload.pk)])

    upload.refresh_from_db()
    assert upload.status == Status.FAILED
    assert "stopped every attempt" in upload.error
    assert Notification.objects.get(upload=upload).kind == "failed"


def test_a_run_that_returns_clears_the_count_of_runs_that_died(user: Any) -> None:
    upload = processing_jpeg(user)
    Upload.objects.filter(pk=upload.pk).update(unfinished_runs=MAX_UNFINISHED_RUNS - 1)

    process_upload.apply(args=[str(upload.pk)])

    upload.refresh_from_db()
    assert upload.status == Status.READY
    assert upload.unfinished_runs == 0


@pytest.mark.django_db(transaction=True)  # foreign keys are checked as in production
def test_an_upload_deleted_while_it_is_processed_leaves_no_thumbnails(user: Any) -> None:
    upload = processing_jpeg(user)
    real_download = s3.download_to

    def deleted_meanwhile(key: str, fileobj: Any, etag: str = "") -> None:
        real_download(key, fileobj, etag)
        Upload.objects.filter(pk=upload.pk).delete()  # the owner deletes it now

    with mock.patch("uploads.s3.download_to", side_effect=deleted_meanwhile):
        process_upload.apply(args=[str(upload.pk)]).get()

    assert list(s3.iter_objects(f"thumbs/{upload.pk}/")) == []
    assert not Notification.objects.filter(upload_id=upload.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_an_upload_replaced_and_rejected_while_it_is_processed_keeps_no_thumbnails(
    user: Any,
) -> None:
    upload = processing_jpeg(user)
    real_download = s3.download_to

    def replaced_meanwhile(key: str, fileobj: Any, etag: str = "") -> None:
        real_download(key, fileobj, etag)
        # Other bytes posted with the still-valid form; their event arrives now.
        s3.put(upload.key, images.html_as_jpeg(), "image/jpeg", "no-cache")
        assert Upload.objects.get(pk=upload.pk).reject_if_replaced()

    with mock.patch("uploads.s3.download_to", side_effect=replaced_meanwhile):
        process_upload.apply(args=[str(upload.pk)]).get()

    upload.refresh_from_db()
    assert upload.status == Status.REJECTED
    assert "replaced" in upload.error
    assert not upload.thumbnails.exists()
    assert list(s3.iter_objects(f"thumbs/{upload.pk}/")) == []


def test_a_deleted_upload_is_skipped(user: Any) -> None:
    upload = processing_jpeg(user)
    upload.delete()
    process_upload.apply(args=[str(upload.pk)])  # logs and returns
    assert not Upload.objects.filter(pk=upload.pk).exists()


def test_regenerate_makes_only_missing_thumbnails_unless_forced(user: Any) -> None:
    upload = processing_jpeg(user)
    process_upload.apply(args=[str(upload.pk)])
    upload.refresh_from_db()
    assert upload.status == Status.READY
    first = {t.name: t.created_at for t in upload.thumbnails.all()}

    regenerate_thumbnails.apply(args=[str(upload.pk)])
    assert {t.name: t.created_at for t in upload.thumbnails.all()} == first

    upload.thumbnails.filter(name="256").delete()
    regenerate_thumbnails.apply(args=[str(upload.pk)])
    assert set(upload.thumbnails.values_list("name", flat=True)) == {"256", "1024"}
    assert upload.thumbnails.get(name="1024").created_at == first["1024"]  # only the missing one

    regenerate_thumbnails.apply(args=[str(upload.pk)], kwargs={"force": True})
    assert upload.thumbnails.get(name="256").created_at > first["256"]


def test_an_object_replaced_after_its_claim_is_rejected(user: Any) -> None:
    upload = processing_jpeg(user)
    s3.put(upload.key, images.html_as_jpeg(), "image/jpeg", "no-cache")

    process_upload.apply(args=[str(upload.pk)])

    upload.refresh_from_db()
    assert upload.status == Status.REJECTED
    assert "replaced" in upload.error


def test_a_replacement_is_rejected_even_if_the_upload_became_ready_meanwhile(
    user: Any, django_capture_on_commit_callbacks: Any
) -> None:
    upload = processing_jpeg(user)
    seen_by_consumer = Upload.objects.get(pk=upload.pk)  # read while processing
    process_upload.apply(args=[str(upload.pk)])  # ...which then ends ready
    s3.put(upload.key, images.html_as_jpeg(), "image/jpeg", "no-cache")

    with django_capture_on_commit_callbacks(execute=True):
        assert seen_by_consumer.reject_if_replaced()

    upload.refresh_from_db()
    assert upload.status == Status.REJECTED
    assert not upload.thumbnails.exists()
    assert s3.head(upload.key) is None


def test_a_size_dropped_from_the_settings_goes_with_its_object(
    user: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    upload = processing_jpeg(user)
    process_upload.apply(args=[str(upload.pk)])
    old_key = upload.thumbnails.get(name="1024").key

    settings.THUMBNAIL_SIZES = [256, 512]
    with django_capture_on_commit_callbacks(execute=True):
        regenerate_thumbnails.apply(args=[str(upload.pk)])

    assert sorted(upload.thumbnails.values_list("name", flat=True)) == ["256", "512"]
    assert s3.head(old_key) is None


def test_image_work_and_emails_go_to_separate_queues() -> None:
    from project import celery_app

    router = celery_app.amqp.router
    assert router.route({}, "uploads.tasks.process_upload")["queue"].name == "images"
    assert router.route({}, "uploads.tasks.regenerate_thumbnails")["queue"].name == "images"
    route = router.route({}, "uploads.tasks.send_notification_email")
    assert route["queue"].name == "notifications"


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (EndpointConnectionError(endpoint_url="http://s3"), True),
        (ReadTimeoutError(endpoint_url="http://s3"), True),
        (ConnectionResetError(), True),
        (ClientError({"Error": {"Code": "SlowDown"}}, "GetObject"), True),
        (
            ClientError(
                {"Error": {"Code": "InternalError"}, "ResponseMetadata": {"HTTPStatusCode": 500}},
                "GetObject",
            ),
            True,
        ),
        (ClientError({"Error": {"Code": "AccessDenied"}}, "GetObject"), False),
        (NoCredentialsError(), False),
        (ParamValidationError(report="bad key"), False),
        (ValueError("a bug"), False),
    ],
)
def test_only_network_trouble_throttling_and_5xx_are_retried(
    error: Exception, transient: bool
) -> None:
    assert s3.is_transient(error) is transient
