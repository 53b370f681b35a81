from __future__ import annotations

from argparse import ArgumentTypeError
from datetime import timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.template.defaultfilters import filesizeformat

from uploads import maintenance


def age(value: str) -> timedelta:
    try:
        return maintenance.parse_age(value)
    except ValueError as error:
        raise ArgumentTypeError(str(error)) from None


class Command(BaseCommand):
    help = (
        "Expire pending uploads whose file never came (deleting any that came late), delete "
        "S3 objects under uploads/ and thumbs/ that no upload needs, abort stale multipart "
        "uploads, and queue again work whose task was lost. Nothing younger than "
        "--older-than is touched."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            type=age,
            default="24h",
            help="Grace period for rows and objects: 90s, 30m, 24h (default) or 7d.",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Report what would be done; change nothing."
        )

    def handle(self, *args: Any, older_than: timedelta, dry_run: bool, **options: Any) -> None:
        lifetime = settings.UPLOAD_URL_EXPIRES
        if older_than.total_seconds() < lifetime:
            raise CommandError(
                f"--older-than must be at least UPLOAD_URL_EXPIRES ({lifetime} s): "
                "the file of a younger pending upload may still come."
            )
        try:
            result = maintenance.cleanup(older_than, dry_run=dry_run, progress=self.stdout.write)
        except (BotoCoreError, ClientError) as error:
            raise CommandError(f"S3 failed: {error}") from error
        would = "Would delete" if dry_run else "Deleted"
        for key in result.orphan_sample:
            self.stdout.write(f"  orphan  {key}")
        self.stdout.write(
            f"{'Dry run: would expire' if dry_run else 'Expired'} {result.expired:,} pending "
            f"uploads and {'would rescue' if dry_run else 'rescued'} {result.rescued:,}. "
            f"{would} {result.orphans:,} orphaned objects "
            f"({filesizeformat(result.orphan_bytes)}) of {result.scanned:,} scanned. "
            f"{'Would abort' if dry_run else 'Aborted'} {result.multipart_aborted:,} stale "
            "multipart uploads."
        )
        if result.restarted or result.emails_requeued:
            self.stdout.write(
                f"{'Would queue' if dry_run else 'Queued'} processing again for "
                f"{result.restarted:,} uploads whose task was lost, and "
                f"{result.emails_requeued:,} unsent emails."
            )
        if result.failed:
            sample = ", ".join(result.failed[:10])
            raise CommandError(f"S3 could not delete {len(result.failed):,} objects: {sample}")
