from __future__ import annotations

import uuid
from argparse import ArgumentTypeError
from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from uploads import maintenance


def moment(value: str) -> datetime:
    """An ISO date or date-time; naive ones are in the current time zone."""
    parsed = parse_datetime(value)
    if parsed is None and (day := parse_date(value)) is not None:
        parsed = datetime(day.year, day.month, day.day)
    if parsed is None:
        raise ArgumentTypeError(f"{value!r} is not a date (2025-01-31) or a date-time")
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed)


class Command(BaseCommand):
    help = (
        "Make thumbnails again for ready images (only missing sizes unless --force), e.g. "
        "after THUMBNAIL_SIZES changed, and send failed uploads back to processing. Tasks "
        "are queued in chunks for the Celery workers."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--id",
            dest="ids",
            action="append",
            type=uuid.UUID,
            default=[],
            help="An upload id (repeatable).",
        )
        parser.add_argument(
            "--status",
            dest="statuses",
            action="append",
            default=[],
            choices=[str(status) for status in maintenance.REPROCESSABLE],
            help="Only uploads with this status (repeatable).",
        )
        parser.add_argument("--since", type=moment, help="Only uploads created since then.")
        parser.add_argument(
            "--all", dest="everything", action="store_true", help="Every ready or failed upload."
        )
        parser.add_argument(
            "--force", action="store_true", help="Remake every thumbnail, not only missing ones."
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Report what would be queued; change nothing."
        )

    def handle(
        self,
        *args: Any,
        ids: list[uuid.UUID],
        statuses: list[str],
        since: datetime | None,
        everything: bool,
        force: bool,
        dry_run: bool,
        **options: Any,
    ) -> None:
        chosen = bool(ids or statuses or since)
        if everything == chosen:
            raise CommandError("Choose uploads with --id, --status or --since, or else --all.")
        uploads = maintenance.select_for_reprocess(ids, statuses, since)
        try:
            result = maintenance.reprocess(
                uploads, force=force, dry_run=dry_run, progress=self.stdout.write
            )
        except Exception as error:
            raise CommandError(f"Queueing failed: {error}") from error
        verb = "Dry run: would queue" if dry_run else "Queued"
        self.stdout.write(
            f"{verb} thumbnails for {result.thumbnails:,} ready images and processing for "
            f"{result.retried:,} failed uploads and {result.restarted:,} stuck in processing."
        )
