"""The one door to AWS: every boto3 call of the project goes through here.

Clients are created once per process (creating them is slow) and are safe to
share between threads.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError, IncompleteReadError
from botocore.exceptions import ConnectionError as BotoConnectionError
from django.conf import settings

logger = logging.getLogger(__name__)

# S3 deletes at most this many keys per DeleteObjects call.
DELETE_BATCH = 1000


@functools.cache
def client(service: str, quick: bool = False) -> Any:
    """A client per service; `quick` ones give up within seconds (health checks)."""
    config = Config(
        signature_version="s3v4",
        retries={"max_attempts": 1 if quick else 3, "mode": "standard"},
        s3={"addressing_style": "path"} if settings.AWS_ENDPOINT_URL else {},
        connect_timeout=2 if quick else 5,
        read_timeout=3 if quick else 30,
    )
    return boto3.client(
        service,
        endpoint_url=settings.AWS_ENDPOINT_URL or None,
        region_name=settings.AWS_S3_REGION_NAME,
        aws_access_key_id=settings.AWS_ACCESS_KEY_ID,
        aws_secret_access_key=settings.AWS_SECRET_ACCESS_KEY,
        config=config,
    )


def bucket() -> str:
    return str(settings.AWS_STORAGE_BUCKET_NAME)


def is_transient(error: Exception) -> bool:
    """True for failures worth retrying: network trouble, throttling, 5xx."""
    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = error.response.get("Error", {}).get("Code", "")
        return status >= 500 or code in ("SlowDown", "Throttling", "RequestTimeout")
    # Network trouble only: a missing credential or a bad parameter (also
    # BotoCoreErrors) fails the same way every time.
    network = (ConnectionError, TimeoutError, BotoConnectionError, HTTPClientError)
    return isinstance(error, (*network, IncompleteReadError))


# --- Objects ---


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    etag: str
    content_type: str
    last_modified: datetime


def presigned_post(key: str, content_type: str, size: int, expires_in: int) -> dict[str, Any]:
    """A form the browser posts the file to, bound to this key, type and size."""
    post: dict[str, Any] = client("s3").generate_presigned_post(
        Bucket=bucket(),
        Key=key,
        Fields={"Content-Type": content_type},
        # boto3 adds the bucket and exact-key conditions itself.
        Conditions=[
            {"Content-Type": content_type},
            ["content-length-range", size, size],
        ],
        ExpiresIn=expires_in,
    )
    return post


def head(key: str) -> ObjectInfo | None:
    """The object's size, ETag and type, or None if there is no such object."""
    try:
        response = client("s3").head_object(Bucket=bucket(), Key=key)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    return ObjectInfo(
        size=int(response["ContentLength"]),
        etag=str(response.get("ETag", "")).strip('"'),
        content_type=str(response.get("ContentType", "")),
        last_modified=response["LastModified"],
    )


class ObjectChanged(Exception):
    """The object no longer has the ETag it was verified with."""


def download_to(key: str, fileobj: IO[bytes], etag: str = "") -> None:
    """Stream the object into a file, a megabyte at a time, never whole in memory.

    With `etag`, only that version of the object: S3 answers 412 if it has
    been replaced since, and ObjectChanged is raised.
    """
    conditions = {"IfMatch": etag} if etag else {}
    try:
        response = client("s3").get_object(Bucket=bucket(), Key=key, **conditions)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "PreconditionFailed":
            raise ObjectChanged(key) from None
        raise
    for chunk in response["Body"].iter_chunks(1024 * 1024):
        fileobj.write(chunk)


def put(key: str, body: bytes, content_type: str, cache_control: str) -> None:
    client("s3").put_object(
        Bucket=bucket(), Key=key, Body=body, ContentType=content_type, CacheControl=cache_control
    )


def delete_many(keys: list[str]) -> list[str]:
    """Delete keys in batches; returns the keys S3 reported it could not delete."""
    failed: list[str] = []
    for start in range(0, len(keys), DELETE_BATCH):
        batch = keys[start : start + DELETE_BATCH]
        if not batch:
            continue
        response = client("s3").delete_objects(
            Bucket=bucket(),
            Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
        )
        for error in response.get("Errors", []):
            logger.error("could not delete s3://%s/%s: %s", bucket(), error["Key"], error)
            failed.append(error["Key"])
    return failed


def iter_objects(prefix: str) -> Iterator[dict[str, Any]]:
    """Every object under a prefix, one page of 1,000 at a time."""
    paginator = client("s3").get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket(), Prefix=prefix):
        yield from page.get("Contents", [])


def check_bucket() -> None:
    client("s3", quick=True).head_bucket(Bucket=bucket())


def check_queue(name: str) -> None:
    client("sqs", quick=True).get_queue_url(QueueName=name)


# --- Queues ---


@functools.cache
def queue_url(name: str) -> str:
    return str(client("sqs").get_queue_url(QueueName=name)["QueueUrl"])


def receive(name: str, wait_seconds: int = 20, max_messages: int = 10) -> list[dict[str, Any]]:
    response = client("sqs").receive_message(
        QueueUrl=queue_url(name),
        MaxNumberOfMessages=max_messages,
        WaitTimeSeconds=wait_seconds,
        AttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
        MessageAttributeNames=["All"],
    )
    return list(response.get("Messages", []))


def delete_messages(name: str, receipt_handles: list[str]) -> list[str]:
    """Delete received messages; returns the handles SQS failed to delete."""
    failed: list[str] = []
    for start in range(0, len(receipt_handles), 10):
        batch = receipt_handles[start : start + 10]
        response = client("sqs").delete_message_batch(
            QueueUrl=queue_url(name),
            Entries=[{"Id": str(i), "ReceiptHandle": handle} for i, handle in enumerate(batch)],
        )
        for failure in response.get("Failed", []):
            logger.error("could not delete message from %s: %s", name, failure)
            failed.append(batch[int(failure["Id"])])
    return failed


def release_message(name: str, receipt_handle: str) -> None:
    """Make a message visible again at once (it counts as one more receive)."""
    client("sqs").change_message_visibility(
        QueueUrl=queue_url(name), ReceiptHandle=receipt_handle, VisibilityTimeout=0
    )


def send_message(name: str, body: str) -> None:
    client("sqs").send_message(QueueUrl=queue_url(name), MessageBody=body)


def queue_depth(name: str) -> dict[str, int]:
    attributes = client("sqs").get_queue_attributes(
        QueueUrl=queue_url(name),
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    return {
        "visible": int(attributes.get("ApproximateNumberOfMessages", 0)),
        "in_flight": int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
        "delayed": int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
    }


# --- Maintenance (cleanup_uploads, redrive_dead_letters) ---


def iter_multipart_uploads(prefix: str = "") -> Iterator[dict[str, Any]]:
    """Every multipart upload begun and neither completed nor aborted, page by page."""
    paginator = client("s3").get_paginator("list_multipart_uploads")
    for page in paginator.paginate(Bucket=bucket(), Prefix=prefix):
        yield from page.get("Uploads", [])


def abort_multipart_upload(key: str, upload_id: str) -> bool:
    """Abort one multipart upload; False if it was already gone."""
    try:
        client("s3").abort_multipart_upload(Bucket=bucket(), Key=key, UploadId=upload_id)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("NoSuchUpload", "404"):
            return False
        raise
    return True


def send_messages(name: str, bodies: list[str]) -> list[int]:
    """Send bodies in batches of 10; returns the indexes SQS failed to accept."""
    failed: list[int] = []
    for start in range(0, len(bodies), 10):
        batch = bodies[start : start + 10]
        response = client("sqs").send_message_batch(
            QueueUrl=queue_url(name),
            Entries=[{"Id": str(i), "MessageBody": body} for i, body in enumerate(batch)],
        )
        for failure in response.get("Failed", []):
            logger.error("could not send a message to %s: %s", name, failure)
            failed.append(start + int(failure["Id"]))
    return failed
