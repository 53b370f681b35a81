"""Turn S3 event messages from SQS into verified uploads.

The loop lives in `manage.py consume_s3_events`; this module handles one
batch, so tests and the command share the same code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from uploads import s3
from uploads.events import MalformedEvent, ObjectCreated, parse_s3_event
from uploads.models import KEY_PREFIX, Status, Upload

logger = logging.getLogger(__name__)


@dataclass
class BatchResult:
    handled: int = 0
    ignored: int = 0
    malformed: int = 0
    failed: int = 0
    not_deleted: list[str] = field(default_factory=list)


def handle_event(event: ObjectCreated) -> bool:
    """Act on one ObjectCreated record; True if it moved an upload on."""
    if event.bucket != s3.bucket() or not event.key.startswith(KEY_PREFIX):
        logger.info("ignoring event for s3://%s/%s: not ours", event.bucket, event.key)
        return False
    upload = Upload.objects.filter(file=event.key).first()
    if upload is None:
        # Forged, or deleted before its bytes arrived: cleanup_uploads removes it.
        logger.warning("no upload for s3://%s/%s; event dropped", event.bucket, event.key)
        return False
    if upload.status == Status.EXPIRED:
        logger.info("upload %s expired before its file arrived; deleting it", upload.pk)
        s3.delete_many([upload.key])
        return False
    if upload.status in (Status.PROCESSING, Status.READY) and event.etag.strip('"') != upload.etag:
        # A new version of an object already verified (or a stale event).
        return upload.reject_if_replaced()
    return upload.accept_arrival()


def handle_batch(queue: str, messages: list[dict[str, Any]]) -> BatchResult:
    """Handle received messages and delete those whose work is done.

    A message whose handling raised stays in the queue and comes back after
    its visibility timeout; after S3_EVENTS_MAX_RECEIVES receives SQS moves it
    to the dead-letter queue. A malformed one is released at once: it can
    never succeed, so it should reach the dead-letter queue quickly. A handled
    message SQS refuses to delete (`not_deleted`) comes back the same way and
    is handled again, which changes nothing.
    """
    result = BatchResult()
    done: list[str] = []
    for message in messages:
        handle = message["ReceiptHandle"]
        try:
            events = parse_s3_event(message.get("Body", ""))
        except MalformedEvent as error:
            logger.error("malformed message %s: %s", message.get("MessageId"), error)
            result.malformed += 1
            try:
                s3.release_message(queue, handle)
            except Exception:
                # It comes back after its visibility timeout all the same.
                logger.exception("could not release message %s", message.get("MessageId"))
            continue
        except Exception:
            # A bug in parsing must not hold up the rest of the batch; the
            # message ends in the dead-letter queue like any that keeps failing.
            logger.exception("could not parse message %s", message.get("MessageId"))
            result.failed += 1
            continue
        try:
            for event in events:
                if handle_event(event):
                    result.handled += 1
                else:
                    result.ignored += 1
        except Exception:
            logger.exception(
                "failed to handle message %s; it will be retried", message.get("MessageId")
            )
            result.failed += 1
            continue
        if not events:
            result.ignored += 1
        done.append(handle)
    result.not_deleted = s3.delete_messages(queue, done) if done else []
    if result.not_deleted:
        refused = set(result.not_deleted)
        ids = [m.get("MessageId", "?") for m in messages if m["ReceiptHandle"] in refused]
        # uploads.s3 has logged SQS's reason for each.
        logger.warning(
            "SQS did not delete handled message(s) %s from %s; they come back after the "
            "visibility timeout and are handled again",
            ", ".join(ids),
            queue,
        )
    return result
