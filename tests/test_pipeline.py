"""The whole pipeline against real parts.

moto's server over HTTP plays S3 and SQS, `manage.py consume_s3_events` and a
Celery worker run as separate processes, and files go up through real
pre-signed POSTs: nothing here calls the pipeline's functions directly.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import uuid
from pathlib import Path
from typing import Any, cast

import pytest
import requests
from django.conf import settings
from django.test import Client
from PIL import Image

from tests import images
from tests.conftest import Processes, post_to_s3, wait_for
from uploads import s3
from uploads.models import Notification, Status, Upload

pytestmark = [pytest.mark.pipeline, pytest.mark.django_db(transaction=True)]


def jpeg(size: tuple[int, int] = (1600, 1200)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def upload_file(
    client: Client, data: bytes, content_type: str, filename: str, declared_size: int | None = None
) -> str:
    """Start an upload and post the bytes straight to S3, as the page does."""
    response = client.post(
        "/api/uploads/",
        json.dumps(
            {"filename": filename, "content_type": content_type, "size": declared_size or len(data)}
        ),
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    start = response.json()
    assert post_to_s3(start, data, filename).status_code == 204
    return str(start["id"])


@pytest.fixture(autouse=True)
def _show_process_logs_on_failure(request: pytest.FixtureRequest) -> Any:
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed and "pipeline" in request.fixturenames:
        processes: Processes = request.getfixturevalue("pipeline")
        for name in ("consumer", "worker"):
            process = processes.running.get(name)
            state = "not running" if process is None else f"exit code {process.poll()}"
            print(f"----- {name} ({state}) log tail -----\n{processes.log(name)[-6000:]}")


def settled(upload_id: str, timeout: float = 30) -> Upload:
    """Wait for the pipeline (not this process) to reach an outcome."""

    def outcome() -> Upload | None:
        upload = Upload.objects.get(pk=upload_id)
        return upload if upload.status not in (Status.PENDING, Status.PROCESSING) else None

    return wait_for(outcome, timeout=timeout, interval=0.1)  # type: ignore[no-any-return]


def mails_to(processes: Processes, address: str) -> list[str]:
    mail_dir: Path = processes.mail_dir  # type: ignore[attr-defined]
    return [
        text
        for path in sorted(mail_dir.iterdir())
        for text in [path.read_text(errors="replace")]
        if f"To: {address}" in text
    ]


def test_a_jpeg_becomes_ready_with_thumbnails_and_one_notification(
    pipeline: Processes, alice: Client
) -> None:
    upload_id = upload_file(alice, jpeg(), "image/jpeg", "sunset.jpg")

    upload = settled(upload_id)

    assert upload.status == Status.READY, upload.error
    assert upload.detected_type == "image/jpeg"
    assert (upload.width, upload.height) == (1600, 1200)
    thumbs = {t.name: (t.width, t.height) for t in upload.thumbnails.all()}
    assert thumbs == {"256": (256, 192), "1024": (1024, 768)}
    for thumb in upload.thumbnails.all():
        response = requests.get(thumb.file.url, timeout=10)
        assert response.headers["Content-Type"] == "image/webp"
        assert "immutable" in response.headers["Cache-Control"]
        assert Image.open(io.BytesIO(response.content)).size == (thumb.width, thumb.height)
    wait_for(lambda: Notification.objects.filter(upload_id=upload_id, emailed_at__isnull=False))
    assert Notification.objects.get(upload_id=upload_id).kind == "ready"
    wait_for(lambda: mails_to(pipeline, "alice@example.com"))
    assert len([m for m in mails_to(pipeline, "alice@example.com") if "sunset.jpg" in m]) == 1


def test_the_same_event_delivered_twice_changes_nothing(pipeline: Processes, alice: Client) -> None:
    upload_id = upload_file(alice, jpeg((800, 600)), "image/jpeg", "twice.jpg")
    upload = settled(upload_id)
    thumbnails_before = list(upload.thumbnails.values_list("pk", "file", "created_at"))
    key = upload.key
    event = {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": "2026-11-30T12:05:41.123Z",
                "eventName": "ObjectCreated:Post",
                "s3": {
                    "bucket": {"name": settings.AWS_STORAGE_BUCKET_NAME},
                    "object": {"key": key, "size": upload.size, "eTag": upload.etag},
                },
            }
        ]
    }
    # S3 delivers at least once: send the event again, twice over.
    s3.send_message(settings.S3_EVENTS_QUEUE, json.dumps(event))
    s3.send_message(settings.S3_EVENTS_QUEUE, json.dumps(event))
    alice.post(f"/api/uploads/{upload_id}/complete")
    wait_for(lambda: s3.queue_depth(settings.S3_EVENTS_QUEUE)["visible"] == 0, timeout=15)
    wait_for(lambda: s3.queue_depth(settings.S3_EVENTS_QUEUE)["in_flight"] == 0, timeout=15)

    upload.refresh_from_db()
    assert upload.status == Status.READY
    assert list(upload.thumbnails.values_list("pk", "file", "created_at")) == thumbnails_before
    assert Notification.objects.filter(upload_id=upload_id).count() == 1
    assert len([m for m in mails_to(pipeline, "alice@example.com") if "twice.jpg" in m]) == 1


def send(queue: str, body: str) -> str:
    """Put a message on a queue, as S3 would; returns its MessageId."""
    sent = s3.client("sqs").send_message(QueueUrl=s3.queue_url(queue), MessageBody=body)
    return str(sent["MessageId"])


def drained(queue: str) -> bool:
    return s3.queue_depth(queue) == {"visible": 0, "in_flight": 0, "delayed": 0}


def dead_letters() -> dict[str, dict[str, Any]]:
    """The messages now visible in the dead-letter queue, by body.

    Receiving hides them for the queue's visibility timeout; other tests'
    messages may be among them.
    """
    found: dict[str, dict[str, Any]] = {}
    while batch := s3.receive(settings.S3_EVENTS_DLQ, wait_seconds=1):
        found.update((message["Body"], message) for message in batch)
    return found


def bucket_keys() -> set[str]:
    return {str(obj["Key"]) for obj in s3.iter_objects("")}


def celery_queues_drained() -> bool:
    prefix = settings.CELERY_BROKER_TRANSPORT_OPTIONS["queue_name_prefix"]
    return all(drained(f"{prefix}{name}") for name in ("images", "notifications"))


def test_an_event_delivered_twice_while_pending_gives_one_result(
    pipeline: Processes, alice: Client
) -> None:
    queue = settings.S3_EVENTS_QUEUE
    pipeline.stop("consumer")
    try:
        upload_id = upload_file(alice, jpeg((640, 480)), "image/jpeg", "back-to-back.jpg")
        received: list[dict[str, Any]] = []

        def its_event() -> dict[str, Any] | None:
            received.extend(s3.receive(queue, wait_seconds=1))
            return next((message for message in received if upload_id in message["Body"]), None)

        # Within a visibility timeout: the stopped consumer's abandoned long poll
        # may have taken it.
        event = wait_for(its_event, timeout=30)
        # S3 delivers at least once: the event and its copy wait side by side.
        for message in received:
            s3.release_message(queue, message["ReceiptHandle"])
        s3.send_message(queue, event["Body"])
        wait_for(lambda: s3.queue_depth(queue)["visible"] >= 2)
    finally:
        consuming = pipeline.log("consumer").count("Consuming S3 events")
        pipeline.start_consumer()
    wait_for(lambda: pipeline.log("consumer").count("Consuming S3 events") > consuming, 60)
    # The page's "complete" call races the two deliveries.
    assert alice.post(f"/api/uploads/{upload_id}/complete").status_code == 200

    upload = settled(upload_id)

    assert upload.status == Status.READY, upload.error
    wait_for(lambda: drained(queue), timeout=30)
    wait_for(lambda: mails_to(pipeline, "alice@example.com"), timeout=30)
    wait_for(celery_queues_drained, timeout=60, interval=0.5)
    thumbs = {str(obj["Key"]) for obj in s3.iter_objects(f"thumbs/{upload_id}/")}
    assert thumbs == {f"thumbs/{upload_id}/256.webp", f"thumbs/{upload_id}/1024.webp"}
    assert sorted(upload.thumbnails.values_list("file", flat=True)) == sorted(thumbs)
    assert Notification.objects.filter(upload_id=upload_id).count() == 1
    assert len([m for m in mails_to(pipeline, "alice@example.com") if "back-to-back" in m]) == 1
    assert pipeline.log("worker").count(f"processing upload {upload_id}") == 1


def test_unknown_keys_test_events_and_garbage_leave_nothing_and_consumer_lives(
    pipeline: Processes, alice: Client
) -> None:
    queue, bucket = settings.S3_EVENTS_QUEUE, settings.AWS_STORAGE_BUCKET_NAME
    tag = uuid.uuid4().hex
    forged_key = f"uploads/forged-{tag}.jpg"
    forged = json.dumps(
        {
            "Records": [
                {
                    "eventSource": "aws:s3",
                    "eventName": "ObjectCreated:Put",
                    "s3": {"bucket": {"name": bucket}, "object": {"key": forged_key, "size": 3}},
                }
            ]
        }
    )
    test_event = json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "RequestId": tag})
    garbage = f"{{this is not json {tag}"
    keys_before = bucket_keys()

    forged_id = send(queue, forged)
    send(queue, test_event)
    garbage_id = send(queue, garbage)

    # The unknown key and the test event are deleted at once; the malformed
    # message is released at each receive until SQS moves it to the DLQ.
    wait_for(lambda: drained(queue), timeout=90, interval=0.5)
    log = pipeline.log("consumer")
    assert log.count(f"no upload for s3://{bucket}/{forged_key}; event dropped") == 1, log
    assert f"message {forged_id}" not in log
    assert log.count(f"malformed message {garbage_id}") == settings.S3_EVENTS_MAX_RECEIVES, log
    dead = dead_letters()
    assert dead[garbage]["MessageId"] == garbage_id
    assert forged not in dead and test_event not in dead
    s3.delete_messages(settings.S3_EVENTS_DLQ, [dead[garbage]["ReceiptHandle"]])
    assert pipeline.running["consumer"].poll() is None

    # The consumer goes on: a real upload after the garbage still completes.
    upload_id = upload_file(alice, jpeg((300, 200)), "image/jpeg", "after-garbage.jpg")
    upload = settled(upload_id)
    assert upload.status == Status.READY
    assert Upload.objects.count() == 1
    assert Notification.objects.count() == 1
    # Of all that, S3 keeps only the real upload and its thumbnails.
    expected = {upload.key, *(t.key for t in upload.thumbnails.all())}
    wait_for(lambda: bucket_keys() - keys_before == expected, timeout=10)


def test_a_poison_message_ends_in_the_dead_letter_queue(pipeline: Processes, alice: Client) -> None:
    poison = f"poison: never valid JSON {uuid.uuid4().hex}"
    poison_id = send(settings.S3_EVENTS_QUEUE, poison)

    message = wait_for(lambda: dead_letters().get(poison), timeout=90, interval=0.5)

    assert message["MessageId"] == poison_id
    s3.delete_messages(settings.S3_EVENTS_DLQ, [message["ReceiptHandle"]])
    assert pipeline.running["consumer"].poll() is None


def test_a_worker_killed_mid_task_leaves_the_upload_to_finish_on_redelivery(
    pipeline: Processes, alice: Client
) -> None:
    pipeline.stop("worker")
    # Large enough (49 megapixels) that processing takes a while.
    buffer = io.BytesIO()
    Image.new("RGB", (7000, 7000), (90, 160, 60)).save(buffer, "PNG")
    upload_id = upload_file(alice, buffer.getvalue(), "image/png", "crash.png")
    wait_for(lambda: Upload.objects.get(pk=upload_id).status == Status.PROCESSING)

    # A worker takes the task, then dies without acknowledging it.
    worker = pipeline.start_worker()
    wait_for(
        lambda: f"processing upload {upload_id}" in pipeline.log("worker"),
        timeout=60,
        interval=0.02,
    )
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    pipeline.running.pop("worker")
    assert Upload.objects.get(pk=upload_id).status == Status.PROCESSING

    pipeline.start_worker()
    upload = settled(upload_id, timeout=60)
    assert upload.status == Status.READY
    assert upload.thumbnails.count() == 2
    assert Notification.objects.filter(upload_id=upload_id).count() == 1


def thumbnail_image(url: str) -> Image.Image:
    response = requests.get(url, timeout=10)
    assert response.status_code == 200
    return Image.open(io.BytesIO(response.content))


def with_gps(format: str, size: tuple[int, int]) -> bytes:
    """A photo in `format` carrying EXIF with a GPS position, which must not survive."""
    data = images.save(images.photo(size), format, exif=images.exif_with_gps())
    assert Image.open(io.BytesIO(data)).getexif().get_ifd(0x8825), "no GPS in the source"
    return data


@pytest.mark.parametrize(
    ("make", "content_type", "filename", "size"),
    [
        (lambda: images.jpeg((1200, 900)), "image/jpeg", "photo.jpg", (1200, 900)),
        (lambda: with_gps("PNG", (600, 400)), "image/png", "logo.png", (600, 400)),
        (lambda: with_gps("WEBP", (640, 480)), "image/webp", "pic.webp", (640, 480)),
        (lambda: images.animated_gif((320, 240)), "image/gif", "anim.gif", (320, 240)),
        (lambda: with_gps("HEIF", (640, 480)), "image/heic", "iphone.heic", (640, 480)),
        (lambda: with_gps("AVIF", (640, 480)), "image/avif", "modern.avif", (640, 480)),
    ],
)
def test_each_image_type_ends_ready_with_clean_thumbnails(
    pipeline: Processes, alice: Client, make: Any, content_type: str, filename: str, size: Any
) -> None:
    upload_id = upload_file(alice, make(), content_type, filename)

    upload = settled(upload_id)

    assert upload.status == Status.READY, upload.error
    assert (upload.width, upload.height) == size
    longest = max(size)
    expected = {name: min(int(name), longest) for name in ("256", "1024")}
    for thumb in upload.thumbnails.all():
        image = thumbnail_image(thumb.file.url)
        assert image.format == "WEBP"
        assert max(image.size) == expected[thumb.name]
        assert "exif" not in image.info and not image.getexif()
    assert sorted(upload.thumbnails.values_list("name", flat=True)) == ["1024", "256"]


def test_an_exif_rotated_photo_gives_an_upright_thumbnail(
    pipeline: Processes, alice: Client
) -> None:
    upload_id = upload_file(alice, images.rotated_photo(), "image/jpeg", "portrait.jpg")

    upload = settled(upload_id)

    assert upload.status == Status.READY, upload.error
    assert (upload.width, upload.height) == (300, 400)
    image = thumbnail_image(upload.thumbnails.get(name="256").file.url).convert("RGB")
    assert image.size == (192, 256)
    top = cast(tuple[int, int, int], image.getpixel((96, 20)))
    bottom = cast(tuple[int, int, int], image.getpixel((96, 236)))
    assert top[0] > 200 and top[2] < 60, top  # red on top
    assert bottom[2] > 200 and bottom[0] < 60, bottom  # blue below


def test_a_pdf_ends_ready_with_a_preview_of_its_first_page(
    pipeline: Processes, alice: Client
) -> None:
    upload = settled(upload_file(alice, images.pdf(), "application/pdf", "invoice.pdf"))
    assert upload.status == Status.READY, upload.error
    assert upload.detected_type == "application/pdf"
    preview = thumbnail_image(upload.thumbnails.get(name="256").file.url)
    assert preview.format == "WEBP" and max(preview.size) == 256


@pytest.mark.parametrize(
    ("make", "content_type", "reason"),
    [
        (images.html_as_jpeg, "image/jpeg", "not a JPEG image"),
        (images.truncated_jpeg, "image/jpeg", "truncated or corrupt"),
        (lambda: images.png_bomb(), "image/png", "megapixels"),
        (images.pdf, "image/png", "not a PNG image"),
    ],
)
def test_bad_files_end_rejected_with_a_reason_and_are_removed(
    pipeline: Processes, alice: Client, make: Any, content_type: str, reason: str
) -> None:
    upload_id = upload_file(alice, make(), content_type, "bad-file")

    upload = settled(upload_id)

    assert upload.status == Status.REJECTED
    assert reason in upload.error
    assert upload.thumbnails.count() == 0
    wait_for(lambda: s3.head(upload.key) is None, timeout=10)
    notification = wait_for(lambda: Notification.objects.filter(upload_id=upload_id).first())
    assert notification.kind == "rejected" and reason in notification.message


def test_a_file_larger_than_declared_is_rejected_from_the_event(
    pipeline: Processes, alice: Client
) -> None:
    # moto's server ignores the policy's content-length-range; the consumer
    # checks the real size itself, without the page's "complete" call.
    data = images.jpeg((400, 300))
    upload_id = upload_file(
        alice, data + b"\0" * 1000, "image/jpeg", "big.jpg", declared_size=len(data)
    )

    upload = settled(upload_id)

    assert upload.status == Status.REJECTED
    assert "bytes were announced" in upload.error
    wait_for(lambda: s3.head(upload.key) is None, timeout=10)


def test_a_worker_on_a_redis_broker_processes_uploads_too(
    pipeline: Processes, alice: Client, tmp_path: Path
) -> None:
    from kombu import Connection

    from uploads.tasks import process_upload

    redis_url = "redis://127.0.0.1:6379/13"
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=2).close()
    except OSError:
        if os.environ.get("CI"):
            raise
        pytest.skip("no Redis on 127.0.0.1:6379 (CI has one, and fails without it)")
    upload_id = upload_file(alice, jpeg((640, 480)), "image/jpeg", "redis.jpg")
    # Claimed by the SQS-based pipeline; process it again through Redis.
    settled(upload_id)
    Upload.objects.filter(pk=upload_id).update(status=Status.PROCESSING)
    Notification.objects.filter(upload_id=upload_id).delete()
    redis_worker = Processes({**pipeline.env, "CELERY_BROKER_URL": redis_url}, tmp_path)
    redis_worker.start_worker()
    try:
        with Connection(redis_url) as connection:
            process_upload.apply_async((upload_id,), connection=connection)
        upload = settled(upload_id)
        assert upload.status == Status.READY
        assert Notification.objects.filter(upload_id=upload_id).count() == 1
        assert "Connected to redis://" in redis_worker.log("worker")
    finally:
        redis_worker.stop_all()


def test_bytes_posted_again_after_verification_are_refused(
    pipeline: Processes, alice: Client
) -> None:
    data = jpeg((500, 400))
    response = alice.post(
        "/api/uploads/",
        json.dumps({"filename": "swap.jpg", "content_type": "image/jpeg", "size": len(data)}),
        content_type="application/json",
    )
    start = response.json()
    post_to_s3(start, data)
    assert settled(start["id"]).status == Status.READY

    # The form is still valid: other bytes of the same size, never checked.
    swapped = b"<html>" + data[6:]
    assert post_to_s3(start, swapped).status_code == 204

    upload = settled(start["id"])
    wait_for(lambda: Upload.objects.get(pk=start["id"]).status == Status.REJECTED, timeout=30)
    upload.refresh_from_db()
    assert "replaced" in upload.error
    # Nothing of it is kept: no thumbnail rows, no objects.
    assert not upload.thumbnails.exists()
    wait_for(lambda: s3.head(upload.key) is None, timeout=10)
    wait_for(lambda: not list(s3.iter_objects(f"thumbs/{upload.pk}/")), timeout=10)
