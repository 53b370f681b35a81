"""`manage.py setup_storage` against the embedded endpoint, on a bucket of its own."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from uploads import s3
from uploads.events import parse_s3_event


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("setup_storage", *args, stdout=out)
    return out.getvalue()


def test_check_reports_everything_missing_on_a_new_account(isolated_storage: str) -> None:
    with pytest.raises(CommandError, match="8 piece"):
        run("--check")


def test_setup_provisions_every_piece_and_is_idempotent(
    isolated_storage: str, settings: Any
) -> None:
    first = run()
    assert "applied  bucket" in first

    assert "0 change(s)" in run()
    assert "0 change(s)" in run("--check")

    client = s3.client("s3")
    bucket = settings.AWS_STORAGE_BUCKET_NAME
    block = client.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values())
    rules = client.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    assert rules["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    cors = client.get_bucket_cors(Bucket=bucket)["CORSRules"][0]
    assert set(cors["AllowedMethods"]) == {"GET", "POST"}
    assert cors["ExposeHeaders"] == ["ETag"]
    lifecycle = client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"][0]
    assert lifecycle["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}

    queue = s3.client("sqs").get_queue_attributes(
        QueueUrl=s3.queue_url(settings.S3_EVENTS_QUEUE), AttributeNames=["All"]
    )["Attributes"]
    redrive = json.loads(queue["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"].endswith(f":{settings.S3_EVENTS_DLQ}")
    assert int(redrive["maxReceiveCount"]) == 5
    policy = json.loads(queue["Policy"])["Statement"][0]
    assert policy["Principal"] == {"Service": "s3.amazonaws.com"}
    assert policy["Condition"]["ArnLike"]["aws:SourceArn"] == f"arn:aws:s3:::{bucket}"

    notification = client.get_bucket_notification_configuration(Bucket=bucket)
    [config] = notification["QueueConfigurations"]
    assert config["Events"] == ["s3:ObjectCreated:*"]
    assert config["Filter"]["Key"]["FilterRules"] == [{"Name": "prefix", "Value": "uploads/"}]


def test_only_originals_raise_events(isolated_storage: str, settings: Any) -> None:
    run()
    queue = settings.S3_EVENTS_QUEUE
    s3.client("sqs").purge_queue(QueueUrl=s3.queue_url(queue))

    s3.put("thumbs/x/256.webp", b"thumb", "image/webp", "max-age=1")
    s3.put("uploads/x.jpg", b"original", "image/jpeg", "max-age=1")

    bodies = [m["Body"] for m in s3.receive(queue, wait_seconds=1)]
    keys = [event.key for body in bodies for event in parse_s3_event(body)]
    assert keys == ["uploads/x.jpg"]


def test_check_names_drift_and_setup_repairs_it(isolated_storage: str, settings: Any) -> None:
    run()
    s3.client("s3").delete_bucket_cors(Bucket=settings.AWS_STORAGE_BUCKET_NAME)
    s3.client("s3").delete_public_access_block(Bucket=settings.AWS_STORAGE_BUCKET_NAME)

    with pytest.raises(CommandError, match="CORS") as caught:
        run("--check")
    assert "public access block" in str(caught.value)

    repaired = run()
    assert "applied  CORS" in repaired and "applied  public access block" in repaired
    assert "0 change(s)" in run("--check")
