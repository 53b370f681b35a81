from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from uploads import provisioning, s3


class Command(BaseCommand):
    help = (
        "Create or update the S3 bucket (private, encrypted, CORS, lifecycle), the "
        "events queue with its dead-letter queue, and the bucket's event notifications. "
        "Safe to run again; --check only reports what differs."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--check", action="store_true", help="Report drift and exit non-zero if any."
        )

    def handle(self, *args: Any, check: bool = False, **options: Any) -> None:
        drift = []
        for piece in provisioning.pieces():
            try:
                current = piece.is_current()
            except (ClientError, BotoCoreError) as error:
                # Not drift: what is there could not be read at all.
                raise CommandError(f"could not read {piece.name}: {error}") from error
            if current:
                self.stdout.write(f"  ok       {piece.name}")
                continue
            drift.append(piece.name)
            if check:
                self.stdout.write(self.style.WARNING(f"  drift    {piece.name}"))
                continue
            try:
                piece.apply()
            except (ClientError, BotoCoreError) as error:
                raise CommandError(f"{piece.name}: {error}") from error
            self.stdout.write(self.style.SUCCESS(f"  applied  {piece.name}"))
        where = f"s3://{s3.bucket()}"
        if check and drift:
            raise CommandError(f"{len(drift)} piece(s) of {where} differ: {', '.join(drift)}")
        verb = "checked" if check else "ready"
        self.stdout.write(f"Storage {verb}: {where}, {len(drift)} change(s).")
