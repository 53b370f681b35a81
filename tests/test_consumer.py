"""The S3 event consumer against the embedded SQS, on queues of its own."""

from __future__ import annotations

import http.client
import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

from tests.conftest import ROOT, TEST_ENV, Processes, _database_url, wait_for
from uploads import consumer, s3
from uploads.models import Status, Upload

# Committed transactions: claims enqueue their task on commit, as in production.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def own_queues(isolated_storage: str, settings: Any) -> str:
    """The events queue of a provisioned bucket that no running consumer reads."""
    call_command("setup_storage", stdout=io.StringIO())
    s3.client("sqs").purge_queue(QueueUrl=s3.queue_url(settings.S3_EVENTS_QUEUE))
    return str(settings.S3_EVENTS_QUEUE)


def event_for(key: str, size: int = 5) -> str:
    return json.dumps(
        {
            "Records": [
                {
                    "eventSource": "aws:s3",
                    "eventName": "ObjectCreated:Post",
                    "s3": {
                        "bucket": {"name": settings.AWS_STORAGE_BUCKET_NAME},
                        "object": {"key": key.replace(" ", "+"), "size": size},
                    },
                }
            ]
        }
    )


def pending_upload(user: Any, data: bytes = b"hello") -> Upload:
    upload = Upload.start(user, "a.jpg", "image/jpeg", len(data))
    s3.put(upload.key, data, "image/jpeg", "no-cache")
    return upload


def receive_all(queue: str) -> list[dict[str, Any]]:
    return s3.receive(queue, wait_seconds=1)


def test_handled_messages_are_deleted(own_queues: str, user: Any) -> None:
    upload = pending_upload(user)
    messages = receive_all(own_queues)  # the object's own ObjectCreated event
    assert len(messages) == 1

    with mock.patch("uploads.tasks.process_upload.delay") as enqueue:
        result = consumer.handle_batch(own_queues, messages)

    assert (result.handled, result.failed, result.not_deleted) == (1, 0, [])
    enqueue.assert_called_once_with(str(upload.pk))
    upload.refresh_from_db()
    assert upload.status == Status.PROCESSING
    assert s3.queue_depth(own_queues) == {"visible": 0, "in_flight": 0, "delayed": 0}


def test_a_failure_leaves_the_message_for_redelivery(own_queues: str, user: Any) -> None:
    pending_upload(user)
    messages = receive_all(own_queues)

    # A database or network fault in the middle of handling.
    with mock.patch.object(Upload, "accept_arrival", side_effect=RuntimeError("db went away")):
        result = consumer.handle_batch(own_queues, messages)

    assert result.failed == 1
    assert s3.queue_depth(own_queues)["in_flight"] == 1
    redelivered = wait_for(lambda: receive_all(own_queues), timeout=15)
    assert redelivered[0]["MessageId"] == messages[0]["MessageId"]


def test_a_lost_enqueue_gives_the_claim_back(own_queues: str, user: Any) -> None:
    upload = pending_upload(user)
    messages = receive_all(own_queues)

    with mock.patch("uploads.tasks.process_upload.delay", side_effect=ConnectionError("broker")):
        result = consumer.handle_batch(own_queues, messages)

    assert result.failed == 1
    upload.refresh_from_db()
    # Still pending, so the redelivered event will claim it again.
    assert upload.status == Status.PENDING


def test_a_redelivered_event_requeues_a_claim_whose_task_was_never_queued(
    own_queues: str, user: Any
) -> None:
    upload = pending_upload(user)
    messages = receive_all(own_queues)
    # The consumer committed its claim, then died before queueing the task;
    # the event comes back one visibility timeout later.
    long_ago = timezone.now() - timedelta(seconds=settings.S3_EVENTS_VISIBILITY_TIMEOUT + 1)
    with mock.patch("uploads.tasks.process_upload.delay"):  # never reaches the broker
        upload.accept_arrival()
    Upload.objects.filter(pk=upload.pk).update(updated_at=long_ago)

    with mock.patch("uploads.tasks.process_upload.delay") as enqueue:
        result = consumer.handle_batch(own_queues, messages)

    assert result.failed == 0
    enqueue.assert_called_once_with(str(upload.pk))
    assert Upload.objects.get(pk=upload.pk).status == Status.PROCESSING


def test_a_duplicate_event_leaves_a_fresh_or_running_claim_alone(
    own_queues: str, user: Any
) -> None:
    fresh = pending_upload(user)
    running = pending_upload(user)
    messages = receive_all(own_queues)
    long_ago = timezone.now() - timedelta(seconds=settings.S3_EVENTS_VISIBILITY_TIMEOUT + 1)
    with mock.patch("uploads.tasks.process_upload.delay"):
        fresh.accept_arrival()
        running.accept_arrival()
    # A run has started on this one (and is slow).
    Upload.objects.filter(pk=running.pk).update(unfinished_runs=1, updated_at=long_ago)

    with mock.patch("uploads.tasks.process_upload.delay") as enqueue:
        result = consumer.handle_batch(own_queues, messages)

    assert (result.handled, result.failed) == (0, 0)
    enqueue.assert_not_called()


def test_a_late_object_for_an_expired_upload_is_deleted(own_queues: str, user: Any) -> None:
    upload = pending_upload(user)
    Upload.objects.filter(pk=upload.pk).update(status=Status.EXPIRED)

    result = consumer.handle_batch(own_queues, receive_all(own_queues))

    assert result.ignored == 1
    assert s3.head(upload.key) is None


def test_events_for_other_buckets_and_prefixes_are_dropped(own_queues: str, user: Any) -> None:
    upload = pending_upload(user)
    receive_all(own_queues)  # discard the real event
    other_bucket = json.loads(event_for(upload.key))
    other_bucket["Records"][0]["s3"]["bucket"]["name"] = "someone-elses-bucket"
    s3.send_message(own_queues, json.dumps(other_bucket))
    s3.send_message(own_queues, event_for("thumbs/x/256.webp"))
    s3.send_message(own_queues, event_for("uploads/no such upload.jpg"))

    messages = wait_for(lambda: receive_all(own_queues))
    while len(messages) < 3:
        messages += receive_all(own_queues)
    result = consumer.handle_batch(own_queues, messages)

    assert (result.handled, result.ignored, result.failed) == (0, 3, 0)
    assert Upload.objects.get(pk=upload.pk).status == Status.PENDING
    assert s3.queue_depth(own_queues)["visible"] == 0


def test_sigterm_stops_the_consumer_promptly(own_queues: str) -> None:
    env = {**os.environ, **TEST_ENV, "S3_EVENTS_QUEUE": own_queues}
    process = subprocess.Popen(
        [sys.executable, "manage.py", "consume_s3_events"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert process.stdout is not None
        assert b"Consuming" in process.stdout.readline()
        time.sleep(1)  # now inside a 20-second long poll
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert time.monotonic() - started < 5
        assert b"Stopped" in process.stdout.read()
    finally:
        process.kill()


class SlowStorage:
    """The embedded endpoint behind a proxy that holds up S3 HEAD requests.

    The consumer runs unchanged; only its network is slow, so that a batch
    lasts long enough to be signalled in the middle of it. The first HEAD
    waits until `release()`.
    """

    def __init__(self, upstream: str, delay: float) -> None:
        self.first_head = threading.Event()
        self.released = threading.Event()
        target = urlsplit(upstream)
        host, port = str(target.hostname), target.port
        proxy = self

        class Forward(BaseHTTPRequestHandler):
            def forward(self) -> None:
                if self.command == "HEAD":
                    proxy.first_head.set()
                    proxy.released.wait(timeout=120)
                    time.sleep(delay)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                upstream = http.client.HTTPConnection(host, port, timeout=60)
                upstream.request(self.command, self.path, body, dict(self.headers))
                response = upstream.getresponse()
                data = response.read()
                upstream.close()
                self.send_response_only(response.status, response.reason)
                for name, value in response.getheaders():
                    if name.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(name, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                elif response.getheader("Content-Length"):
                    self.send_header("Content-Length", str(response.getheader("Content-Length")))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = forward

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Forward)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slow_storage() -> Iterator[SlowStorage]:
    proxy = SlowStorage(TEST_ENV["AWS_ENDPOINT_URL"], delay=0.3)
    yield proxy
    proxy.close()


def test_sigterm_finishes_the_batch_in_hand_then_exits(
    own_queues: str, user: Any, slow_storage: SlowStorage, tmp_path: Path, settings: Any
) -> None:
    uploads = [pending_upload(user) for _ in range(5)]
    wait_for(lambda: s3.queue_depth(own_queues)["visible"] == len(uploads))
    processes = Processes(
        {
            **os.environ,
            **TEST_ENV,
            "AWS_ENDPOINT_URL": slow_storage.url,
            "AWS_STORAGE_BUCKET_NAME": settings.AWS_STORAGE_BUCKET_NAME,
            "S3_EVENTS_QUEUE": own_queues,
            "S3_EVENTS_DLQ": settings.S3_EVENTS_DLQ,
            "DATABASE_URL": _database_url(),
            # Tasks go to a queue of their own, which no worker reads.
            "CELERY_QUEUE_PREFIX": f"sigterm-{tmp_path.name}-",
            "PYTHONUNBUFFERED": "1",
        },
        tmp_path,
    )
    consumer_process = processes.start(
        "consumer", [sys.executable, "manage.py", "consume_s3_events", "--wait", "1"]
    )
    try:
        # The batch is in hand: its first HEAD is held at the proxy.
        assert slow_storage.first_head.wait(timeout=120), processes.log("consumer")
        consumer_process.send_signal(signal.SIGTERM)
        slow_storage.release()

        assert consumer_process.wait(timeout=120) == 0, processes.log("consumer")
    finally:
        processes.stop_all()

    log = processes.log("consumer")
    assert "Stopped: 5 handled, 0 ignored, 0 malformed, 0 failed." in log, log
    for upload in uploads:
        upload.refresh_from_db()
        assert upload.status == Status.PROCESSING
    assert s3.queue_depth(own_queues) == {"visible": 0, "in_flight": 0, "delayed": 0}


def test_a_handled_message_sqs_refuses_to_delete_is_handled_again(
    own_queues: str, user: Any, caplog: pytest.LogCaptureFixture
) -> None:
    upload = pending_upload(user)
    [message] = receive_all(own_queues)
    # moto refuses a receipt handle it never issued with a per-entry
    # ReceiptHandleIsInvalid, as SQS does an expired one (moto accepts those).
    refused = {**message, "ReceiptHandle": "x" + message["ReceiptHandle"][1:]}

    with (
        caplog.at_level(logging.WARNING),
        mock.patch("uploads.tasks.process_upload.delay") as enqueue,
    ):
        result = consumer.handle_batch(own_queues, [refused])

    assert (result.handled, result.failed) == (1, 0)
    assert result.not_deleted == [refused["ReceiptHandle"]]
    enqueue.assert_called_once_with(str(upload.pk))
    assert "ReceiptHandleIsInvalid" in caplog.text
    warning = [r for r in caplog.records if r.name == "uploads.consumer"][-1]
    assert warning.levelno == logging.WARNING
    assert message["MessageId"] in warning.getMessage()

    # Still in flight, so it comes back after the visibility timeout...
    redelivered = wait_for(lambda: receive_all(own_queues), timeout=30)
    assert [m["MessageId"] for m in redelivered] == [message["MessageId"]]
    with mock.patch("uploads.tasks.process_upload.delay"):
        again = consumer.handle_batch(own_queues, redelivered)

    # ...and handling it again changes nothing; this time it is deleted.
    assert (again.handled, again.failed, again.not_deleted) == (0, 0, [])
    assert Upload.objects.get(pk=upload.pk).status == Status.PROCESSING
    assert s3.queue_depth(own_queues) == {"visible": 0, "in_flight": 0, "delayed": 0}


def test_a_stale_event_for_a_verified_upload_changes_nothing(own_queues: str, user: Any) -> None:
    upload = pending_upload(user)
    with mock.patch("uploads.tasks.process_upload.delay"):
        consumer.handle_batch(own_queues, receive_all(own_queues))
    upload.refresh_from_db()
    assert upload.status == Status.PROCESSING

    # An event for an earlier version of the object, arriving late.
    s3.send_message(
        own_queues, event_for(upload.key).replace('"size": 5', '"size": 5, "eTag": "0ld"')
    )
    result = consumer.handle_batch(own_queues, wait_for(lambda: receive_all(own_queues)))

    assert (result.handled, result.failed) == (0, 0)
    upload.refresh_from_db()
    assert upload.status == Status.PROCESSING


def test_of_two_racing_arrivals_only_the_first_claims(own_queues: str, user: Any) -> None:
    upload = pending_upload(user)
    # The event and the page's "complete" each loaded the row while pending.
    from_event = Upload.objects.get(pk=upload.pk)
    from_page = Upload.objects.get(pk=upload.pk)

    with mock.patch("uploads.tasks.process_upload.delay") as enqueue:
        assert from_event.accept_arrival() is True
        assert from_page.accept_arrival() is False

    enqueue.assert_called_once_with(str(upload.pk))
