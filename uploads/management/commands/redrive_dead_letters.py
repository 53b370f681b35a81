from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from uploads import maintenance


class Command(BaseCommand):
    help = (
        "Show what sits in the S3 events' dead-letter queue (counts and a sample with "
        "the likely reasons), then move it back to the events queue, or drop it with --purge."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--limit", type=int, help="Move (or drop) at most this many.")
        parser.add_argument("--purge", action="store_true", help="Drop the messages instead.")
        parser.add_argument(
            "--dry-run", action="store_true", help="Only show the queue; move or drop nothing."
        )
        parser.add_argument("--sample", type=int, default=5, help="Messages to show (default 5).")

    def handle(
        self,
        *args: Any,
        limit: int | None,
        purge: bool,
        dry_run: bool,
        sample: int,
        **options: Any,
    ) -> None:
        if limit is not None and limit < 1:
            raise CommandError("--limit must be at least 1.")
        dlq, queue = settings.S3_EVENTS_DLQ, settings.S3_EVENTS_QUEUE
        try:
            depth = maintenance.dead_letter_depth()
            self.stdout.write(
                f"{dlq}: {depth['visible']:,} messages waiting, {depth['in_flight']:,} in flight."
            )
            for letter in maintenance.peek_dead_letters(sample) if sample > 0 else []:
                sent = f"{letter.sent_at:%Y-%m-%d %H:%M:%S}" if letter.sent_at else "?"
                self.stdout.write(
                    f"  {letter.message_id}  sent {sent}, received {letter.receives}x: "
                    f"{letter.reason}"
                )
            verb = "drop" if purge else f"move to {queue}"
            if dry_run:
                most = depth["visible"] if limit is None else min(limit, depth["visible"])
                self.stdout.write(f"Dry run: would {verb} {most:,} messages.")
                return
            result = maintenance.redrive(limit, purge=purge, progress=self.stdout.write)
        except (BotoCoreError, ClientError) as error:
            raise CommandError(f"SQS failed: {error}") from error
        self.stdout.write(
            f"{'Dropped' if purge else f'Moved to {queue}'}: {result.done:,} messages."
        )
        if result.failed:
            raise CommandError(f"{result.failed:,} messages failed; they stay in {dlq}.")
