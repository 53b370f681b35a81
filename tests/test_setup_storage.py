"""`manage.py setup_storage` against the embedded endpoint, on a bucket of its own."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
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


# --- Drift of each piece: one real change, reported by --check, repaired by setup ---


def _our_notification(prefix: str) -> dict[str, Any]:
    arn = s3.client("sqs").get_queue_attributes(
        QueueUrl=s3.queue_url(django_settings.S3_EVENTS_QUEUE), AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    config: dict[str, Any] = {"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}
    if prefix:
        config["Filter"] = {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}}
    return config


def _put_notifications(*configs: dict[str, Any]) -> None:
    s3.client("s3").put_bucket_notification_configuration(
        Bucket=s3.bucket(), NotificationConfiguration={"QueueConfigurations": list(configs)}
    )


def _put_lifecycle(days: int, prefix: str = "") -> None:
    s3.client("s3").put_bucket_lifecycle_configuration(
        Bucket=s3.bucket(),
        LifecycleConfiguration={
            "Rules": [
                {
                    "ID": "abort-incomplete-multipart-uploads",
                    "Status": "Enabled",
                    "Filter": {"Prefix": prefix},
                    "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": days},
                }
            ]
        },
    )


def _set_queue_attribute(name: str, value: str) -> None:
    queue = django_settings.S3_EVENTS_QUEUE
    s3.client("sqs").set_queue_attributes(QueueUrl=s3.queue_url(queue), Attributes={name: value})


def _set_max_receives(count: int) -> None:
    dlq = s3.client("sqs").get_queue_attributes(
        QueueUrl=s3.queue_url(django_settings.S3_EVENTS_DLQ), AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    redrive = {"deadLetterTargetArn": dlq, "maxReceiveCount": count}
    _set_queue_attribute("RedrivePolicy", json.dumps(redrive))


DRIFT: dict[str, tuple[str, Callable[[], None]]] = {
    "lifecycle removed": (
        "lifecycle (abort incomplete multipart)",
        lambda: s3.client("s3").delete_bucket_lifecycle(Bucket=s3.bucket()),
    ),
    "lifecycle days changed": (
        "lifecycle (abort incomplete multipart)",
        lambda: _put_lifecycle(days=7),
    ),
    "lifecycle narrowed to a prefix": (
        "lifecycle (abort incomplete multipart)",
        lambda: _put_lifecycle(days=1, prefix="thumbs/"),
    ),
    "encryption removed": (
        "default encryption",
        lambda: s3.client("s3").delete_bucket_encryption(Bucket=s3.bucket()),
    ),
    "encryption changed to SSE-KMS": (
        "default encryption",
        lambda: s3.client("s3").put_bucket_encryption(
            Bucket=s3.bucket(),
            ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}]
            },
        ),
    ),
    "dead-letter max receives changed": ("queue {queue}", lambda: _set_max_receives(9)),
    # An empty value is how SQS removes an attribute.
    "queue policy removed": ("queue {queue}", lambda: _set_queue_attribute("Policy", "")),
    "notification prefix changed": (
        "event notifications",
        lambda: _put_notifications(_our_notification("thumbs/")),
    ),
    "notification for every key added": (
        "event notifications",
        lambda: _put_notifications(_our_notification("uploads/"), _our_notification("")),
    ),
    "notification event type added": (
        "event notifications",
        lambda: _put_notifications(
            {
                **_our_notification("uploads/"),
                "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
            }
        ),
    ),
    "notifications removed": ("event notifications", lambda: _put_notifications()),
}


@pytest.mark.parametrize("drift", DRIFT.values(), ids=DRIFT.keys())
def test_check_names_one_drifted_piece_and_setup_repairs_it(
    isolated_storage: str, settings: Any, drift: tuple[str, Callable[[], None]]
) -> None:
    piece = drift[0].format(queue=settings.S3_EVENTS_QUEUE)
    run()
    assert "0 change(s)" in run("--check")

    drift[1]()

    expected = f"1 piece(s) of s3://{settings.AWS_STORAGE_BUCKET_NAME} differ: {piece}"
    with pytest.raises(CommandError, match=re.escape(expected)):
        run("--check")
    assert f"applied  {piece}" in run()
    assert "0 change(s)" in run("--check")


def test_notifications_to_other_queues_are_kept_and_are_not_drift(
    isolated_storage: str, settings: Any
) -> None:
    run()
    sqs = s3.client("sqs")
    other_url = sqs.create_queue(QueueName=f"audit-{isolated_storage}")["QueueUrl"]
    other_arn = sqs.get_queue_attributes(QueueUrl=other_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    audit = {"Id": "audit", "QueueArn": other_arn, "Events": ["s3:ObjectRemoved:*"]}
    bucket = settings.AWS_STORAGE_BUCKET_NAME
    current = s3.client("s3").get_bucket_notification_configuration(Bucket=bucket)
    _put_notifications(*current["QueueConfigurations"], audit)

    assert "0 change(s)" in run("--check")
    _put_notifications(_our_notification("thumbs/"), audit)
    run()

    configs = s3.client("s3").get_bucket_notification_configuration(Bucket=bucket)
    assert sorted(c["QueueArn"] for c in configs["QueueConfigurations"]) == sorted(
        [other_arn, _our_notification("")["QueueArn"]]
    )
    assert "0 change(s)" in run("--check")


def test_check_reports_an_unreadable_account_as_an_error_not_drift(
    isolated_storage: str, settings: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings.AWS_ACCESS_KEY_ID = settings.AWS_SECRET_ACCESS_KEY = None
    # Nowhere else for boto3 to find credentials either.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    s3.client.cache_clear()
    try:
        expected = "could not read bucket: Unable to locate credentials"
        with pytest.raises(CommandError, match=expected):
            run("--check")
    finally:
        s3.client.cache_clear()
