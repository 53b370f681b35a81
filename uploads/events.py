"""Parse the S3 event notifications that arrive through SQS.

Pure: strings in, frozen dataclasses out; no boto3, no ORM. The format is
documented at https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import unquote_plus


class MalformedEvent(ValueError):
    """The message is not an S3 event notification we can read."""


@dataclass(frozen=True)
class ObjectCreated:
    bucket: str
    key: str
    size: int | None
    etag: str
    event_name: str
    event_time: str


def parse_s3_event(body: str) -> list[ObjectCreated]:
    """The ObjectCreated records of one SQS message body.

    A test event (sent when notifications are configured) and records of
    other event types give an empty list; anything unreadable raises
    MalformedEvent.
    """
    try:
        message = json.loads(body)
    except (TypeError, ValueError, RecursionError) as error:
        # RecursionError: nesting deeper than json can read.
        raise MalformedEvent(f"not JSON: {error}") from None
    if not isinstance(message, dict):
        raise MalformedEvent("not a JSON object")
    # S3 events relayed through SNS arrive wrapped in an SNS envelope.
    if message.get("Type") == "Notification" and isinstance(message.get("Message"), str):
        return parse_s3_event(message["Message"])
    if message.get("Event") == "s3:TestEvent":
        return []
    records = message.get("Records")
    if not isinstance(records, list):
        raise MalformedEvent("no Records list")
    return [event for record in records if (event := _parse_record(record)) is not None]


def _parse_record(record: object) -> ObjectCreated | None:
    if not isinstance(record, dict):
        raise MalformedEvent("a record is not an object")
    if record.get("eventSource") != "aws:s3":
        return None
    event_name = str(record.get("eventName", ""))
    if not event_name.startswith("ObjectCreated:"):
        return None
    try:
        bucket = record["s3"]["bucket"]["name"]
        raw_key = record["s3"]["object"]["key"]
    except (KeyError, TypeError):
        raise MalformedEvent("record has no s3.bucket.name or s3.object.key") from None
    if not isinstance(bucket, str) or not isinstance(raw_key, str) or not raw_key:
        raise MalformedEvent("bucket name or object key is not a string")
    obj = record["s3"]["object"]
    size = obj.get("size")
    return ObjectCreated(
        bucket=bucket,
        # Keys are URL-encoded with "+" for spaces.
        key=unquote_plus(raw_key),
        size=size if isinstance(size, int) else None,
        etag=str(obj.get("eTag", "")),
        event_name=event_name,
        event_time=str(record.get("eventTime", "")),
    )
