"""The bucket and queues this product needs, and how to make them so.

Each piece is a pair: read what is there, and put what should be. `setup_storage`
applies every piece that differs; `setup_storage --check` only reports them.
Works the same against AWS and against the embedded endpoint.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError
from django.conf import settings

from uploads import s3
from uploads.models import KEY_PREFIX

MESSAGE_RETENTION_SECONDS = 14 * 24 * 3600


@dataclass(frozen=True)
class Piece:
    name: str
    is_current: Callable[[], bool]
    apply: Callable[[], None]


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _read(call: Callable[[], Any], missing: tuple[str, ...] = ()) -> Any:
    """The result of a read call, or None when the thing is not configured.

    A missing bucket counts as missing configuration, so that `--check` on a new
    account reports every piece; any other error (access denied, no credentials)
    is raised.
    """
    try:
        return call()
    except ClientError as error:
        if _error_code(error) in (*missing, "NoSuchBucket"):
            return None
        raise


def _s3() -> Any:
    return s3.client("s3")


def _sqs() -> Any:
    return s3.client("sqs")


def bucket_arn() -> str:
    return f"arn:aws:s3:::{s3.bucket()}"


# --- Bucket ---


def bucket_exists() -> bool:
    return _read(lambda: _s3().head_bucket(Bucket=s3.bucket()), ("404", "NoSuchBucket")) is not None


def create_bucket() -> None:
    kwargs: dict[str, Any] = {"Bucket": s3.bucket()}
    if settings.AWS_S3_REGION_NAME != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": settings.AWS_S3_REGION_NAME}
    try:
        _s3().create_bucket(**kwargs)
    except ClientError as error:
        if _error_code(error) != "BucketAlreadyOwnedByYou":
            raise


PUBLIC_ACCESS_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}


def public_access_blocked() -> bool:
    current = _read(
        lambda: _s3().get_public_access_block(Bucket=s3.bucket()),
        ("NoSuchPublicAccessBlockConfiguration",),
    )
    return bool(current) and current["PublicAccessBlockConfiguration"] == PUBLIC_ACCESS_BLOCK


def block_public_access() -> None:
    _s3().put_public_access_block(
        Bucket=s3.bucket(), PublicAccessBlockConfiguration=PUBLIC_ACCESS_BLOCK
    )


DEFAULT_ENCRYPTION = {"SSEAlgorithm": "AES256"}


def encrypted() -> bool:
    """True when objects are encrypted by default with S3-managed keys (SSE-S3).

    SSE-KMS counts as drift: every presigned upload and every worker read would
    then need permissions on a key this product neither creates nor knows.
    """
    current = _read(
        lambda: _s3().get_bucket_encryption(Bucket=s3.bucket()),
        ("ServerSideEncryptionConfigurationNotFoundError",),
    )
    rules = (current or {}).get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
    return any(
        rule.get("ApplyServerSideEncryptionByDefault") == DEFAULT_ENCRYPTION for rule in rules
    )


def encrypt() -> None:
    _s3().put_bucket_encryption(
        Bucket=s3.bucket(),
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": DEFAULT_ENCRYPTION}]
        },
    )


def desired_cors() -> list[dict[str, Any]]:
    return [
        {
            "AllowedOrigins": sorted(settings.UPLOAD_CORS_ORIGINS),
            "AllowedMethods": ["GET", "POST"],
            "AllowedHeaders": ["*"],
            "ExposeHeaders": ["ETag"],
            "MaxAgeSeconds": 3600,
        }
    ]


def cors_current() -> bool:
    current = _read(lambda: _s3().get_bucket_cors(Bucket=s3.bucket()), ("NoSuchCORSConfiguration",))
    if not current:
        return False
    rules = [{k: v for k, v in rule.items() if k != "ID"} for rule in current["CORSRules"]]
    for rule in rules:
        for key in ("AllowedOrigins", "AllowedMethods"):
            rule[key] = sorted(rule.get(key, []))
    want = desired_cors()
    want[0]["AllowedMethods"] = sorted(want[0]["AllowedMethods"])
    return rules == want


def put_cors() -> None:
    _s3().put_bucket_cors(Bucket=s3.bucket(), CORSConfiguration={"CORSRules": desired_cors()})


LIFECYCLE_RULE_ID = "abort-incomplete-multipart-uploads"
ABORT_MULTIPART_AFTER_DAYS = 1


def _matches_every_object(rule: dict[str, Any]) -> bool:
    # S3 spells "the whole bucket" as no filter, an empty one, an empty prefix,
    # or (in old rules) an empty top-level Prefix.
    return rule.get("Filter", {}) in ({}, {"Prefix": ""}) and rule.get("Prefix", "") == ""


def lifecycle_current() -> bool:
    """True when our rule aborts every incomplete multipart upload after a day.

    Other rules are the operator's and are not checked.
    """
    current = _read(
        lambda: _s3().get_bucket_lifecycle_configuration(Bucket=s3.bucket()),
        ("NoSuchLifecycleConfiguration",),
    )
    return bool(current) and any(
        rule.get("ID") == LIFECYCLE_RULE_ID
        and rule.get("Status") == "Enabled"
        and rule.get("AbortIncompleteMultipartUpload")
        == {"DaysAfterInitiation": ABORT_MULTIPART_AFTER_DAYS}
        and _matches_every_object(rule)
        for rule in current["Rules"]
    )


def put_lifecycle() -> None:
    """Add (or replace) our rule, keeping any other rules the bucket has."""
    current = _read(
        lambda: _s3().get_bucket_lifecycle_configuration(Bucket=s3.bucket()),
        ("NoSuchLifecycleConfiguration",),
    )
    others = [r for r in (current or {}).get("Rules", []) if r.get("ID") != LIFECYCLE_RULE_ID]
    _s3().put_bucket_lifecycle_configuration(
        Bucket=s3.bucket(),
        LifecycleConfiguration={
            "Rules": [
                *others,
                {
                    "ID": LIFECYCLE_RULE_ID,
                    "Status": "Enabled",
                    "Filter": {"Prefix": ""},
                    "AbortIncompleteMultipartUpload": {
                        "DaysAfterInitiation": ABORT_MULTIPART_AFTER_DAYS
                    },
                },
            ]
        },
    )


# --- Queues ---


def _queue_attributes(name: str) -> dict[str, str] | None:
    try:
        url = _sqs().get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as error:
        if "NonExistentQueue" in _error_code(error):
            return None
        raise
    return dict(_sqs().get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"])


def desired_queue_attributes(name: str, queue_arn: str) -> dict[str, str]:
    attributes = {"MessageRetentionPeriod": str(MESSAGE_RETENTION_SECONDS)}
    if name == settings.S3_EVENTS_QUEUE:
        dlq = _queue_attributes(settings.S3_EVENTS_DLQ) or {}
        attributes |= {
            "VisibilityTimeout": str(settings.S3_EVENTS_VISIBILITY_TIMEOUT),
            "ReceiveMessageWaitTimeSeconds": "20",
            "RedrivePolicy": json.dumps(
                {
                    "deadLetterTargetArn": dlq.get("QueueArn", ""),
                    "maxReceiveCount": settings.S3_EVENTS_MAX_RECEIVES,
                }
            ),
            "Policy": json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "AllowBucketToSendEvents",
                            "Effect": "Allow",
                            "Principal": {"Service": "s3.amazonaws.com"},
                            "Action": "sqs:SendMessage",
                            "Resource": queue_arn,
                            "Condition": {"ArnLike": {"aws:SourceArn": bucket_arn()}},
                        }
                    ],
                }
            ),
        }
    return attributes


def _same_attribute(key: str, have: str | None, want: str) -> bool:
    if have is None:
        return False
    if key in ("RedrivePolicy", "Policy"):
        try:
            have_json = json.loads(have)
        except ValueError:
            return False
        if key == "RedrivePolicy":
            return bool(
                have_json.get("deadLetterTargetArn") == json.loads(want)["deadLetterTargetArn"]
                and int(have_json.get("maxReceiveCount", 0)) == json.loads(want)["maxReceiveCount"]
            )
        return bool(have_json == json.loads(want))
    return have == want


def queue_current(name: str) -> bool:
    have = _queue_attributes(name)
    if have is None:
        return False
    want = desired_queue_attributes(name, have["QueueArn"])
    return all(_same_attribute(key, have.get(key), value) for key, value in want.items())


def put_queue(name: str) -> None:
    if _queue_attributes(name) is None:
        _sqs().create_queue(QueueName=name)
    url = _sqs().get_queue_url(QueueName=name)["QueueUrl"]
    arn = _sqs().get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    _sqs().set_queue_attributes(
        QueueUrl=url, Attributes=desired_queue_attributes(name, arn["QueueArn"])
    )


def _events_queue_arn() -> str:
    attributes = _queue_attributes(settings.S3_EVENTS_QUEUE) or {}
    return attributes.get("QueueArn", "")


NOTIFICATION_ID = "uploads-object-created"
NOTIFICATION_EVENTS = ["s3:ObjectCreated:*"]


def _key_filter(config: dict[str, Any]) -> list[tuple[str, str]]:
    rules = config.get("Filter", {}).get("Key", {}).get("FilterRules", [])
    return sorted((rule["Name"].lower(), rule["Value"]) for rule in rules)


def notifications_current() -> bool:
    """True when our events queue gets exactly one notification, and it is ours.

    Only configurations that send to our events queue are checked: one more
    (no prefix: thumbnails would come back as events; other event types: the
    consumer would get events it does not expect) or a different prefix or
    event list is drift. Configurations for other queues, topics or functions
    are the operator's: they cannot make our consumer misbehave, whatever
    prefix they watch, so they are kept and not checked.
    """
    current = _read(lambda: _s3().get_bucket_notification_configuration(Bucket=s3.bucket()))
    arn = _events_queue_arn()
    ours = [c for c in (current or {}).get("QueueConfigurations", []) if c["QueueArn"] == arn]
    return (
        len(ours) == 1
        and sorted(ours[0]["Events"]) == NOTIFICATION_EVENTS
        and _key_filter(ours[0]) == [("prefix", KEY_PREFIX)]
    )


def put_notifications() -> None:
    """Make ours the only notification to our queue, keeping the bucket's others."""
    current = _s3().get_bucket_notification_configuration(Bucket=s3.bucket())
    current.pop("ResponseMetadata", None)
    arn = _events_queue_arn()
    others = [
        c
        for c in current.pop("QueueConfigurations", [])
        if c.get("Id") != NOTIFICATION_ID and c["QueueArn"] != arn
    ]
    _s3().put_bucket_notification_configuration(
        Bucket=s3.bucket(),
        NotificationConfiguration={
            **current,
            "QueueConfigurations": [
                *others,
                {
                    "Id": NOTIFICATION_ID,
                    "QueueArn": arn,
                    "Events": NOTIFICATION_EVENTS,
                    # Only originals: thumbnails written under thumbs/ must not
                    # come back as events.
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": KEY_PREFIX}]}},
                },
            ],
        },
    )


def pieces() -> list[Piece]:
    """In order: later pieces depend on earlier ones existing."""
    dlq, queue = settings.S3_EVENTS_DLQ, settings.S3_EVENTS_QUEUE
    return [
        Piece("bucket", bucket_exists, create_bucket),
        Piece("public access block", public_access_blocked, block_public_access),
        Piece("default encryption", encrypted, encrypt),
        Piece("CORS", cors_current, put_cors),
        Piece("lifecycle (abort incomplete multipart)", lifecycle_current, put_lifecycle),
        Piece(f"queue {dlq}", lambda: queue_current(dlq), lambda: put_queue(dlq)),
        Piece(f"queue {queue}", lambda: queue_current(queue), lambda: put_queue(queue)),
        Piece("event notifications", notifications_current, put_notifications),
    ]
