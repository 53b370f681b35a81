from __future__ import annotations

import logging
import signal
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections

from uploads import consumer, s3

logger = logging.getLogger(__name__)


class Stop(BaseException):
    """Raised from the signal handler; BaseException so botocore's retries let it through."""


class Command(BaseCommand):
    help = (
        "Long-poll the S3 events queue and verify each uploaded object. Run as many as "
        "needed; SIGTERM finishes the batch in hand and exits."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--wait", type=int, default=20, help="Long-poll seconds (max 20).")
        parser.add_argument(
            "--once", action="store_true", help="Handle one receive, then exit (for cron/tests)."
        )

    def handle(self, *args: Any, wait: int = 20, once: bool = False, **options: Any) -> None:
        self.stopping = False
        self.polling = False
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        queue = settings.S3_EVENTS_QUEUE
        self.stdout.write(f"Consuming S3 events from {queue}")
        total = consumer.BatchResult()
        while not self.stopping:
            try:
                self.polling = True
                messages = s3.receive(queue, wait_seconds=min(wait, 20))
            except Stop:
                break
            except Exception:
                logger.exception("receiving from %s failed; retrying shortly", queue)
                if once:
                    raise
                self.sleep(5)
                continue
            finally:
                self.polling = False
            if messages:
                close_old_connections()
                try:
                    result = consumer.handle_batch(queue, messages)
                except Exception:
                    # Messages not deleted come back after their visibility timeout.
                    logger.exception("handling a batch from %s failed; retrying shortly", queue)
                    if once:
                        raise
                    self.sleep(5)
                    continue
                for name in ("handled", "ignored", "malformed", "failed"):
                    setattr(total, name, getattr(total, name) + getattr(result, name))
                logger.info(
                    "batch of %s: %s handled, %s ignored, %s malformed, %s failed, %s not deleted",
                    len(messages),
                    result.handled,
                    result.ignored,
                    result.malformed,
                    result.failed,
                    len(result.not_deleted),
                )
            if once:
                break
        self.stdout.write(
            f"Stopped: {total.handled} handled, {total.ignored} ignored, "
            f"{total.malformed} malformed, {total.failed} failed."
        )

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        # Waiting on an empty long poll holds no message: stop now rather than in 20 s.
        if self.polling:
            raise Stop

    def sleep(self, seconds: float) -> None:
        import time

        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(0.2)
