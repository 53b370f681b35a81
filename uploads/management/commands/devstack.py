"""Run the whole system on one machine: the embedded stack behind `make dev`.

moto's server plays S3 and SQS (in this process), and child processes run the
Celery worker, the S3 event consumer and Django's development server. moto
keeps everything in memory, so the bucket is saved under var/aws/ as it
changes and on the way out, and restored on the way in; a reconciliation pass
then makes sure no row points at an object that is not there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from uploads import s3
from uploads.models import Notification, Status, Thumbnail, Upload

logger = logging.getLogger(__name__)

SNAPSHOT_EVERY_SECONDS = 15
# What cron does in production: expire abandoned uploads, sweep orphans,
# queue lost work again. At start, then hourly.
CLEANUP_EVERY_SECONDS = 3600


def worker_command(concurrency: int) -> list[str]:
    """A Celery worker for both queues, as `make dev` (and the tests) run it."""
    return [
        sys.executable, "-m", "celery", "-A", "project", "worker", "--loglevel", "INFO",
        "-Q", "images,notifications", "--concurrency", str(concurrency),
        "--without-gossip", "--without-mingle",
    ]  # fmt: skip


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        # As servers do: connections lingering in TIME_WAIT do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class Command(BaseCommand):
    help = "Start moto (S3 + SQS), a Celery worker, the S3 event consumer and the web server."

    def add_arguments(self, parser: CommandParser) -> None:
        # The port comes from PORT only, so that settings (CORS origins, links
        # in emails) and the server agree on it.
        parser.add_argument("--workers", type=int, default=2, help="Celery worker processes.")

    def handle(self, *args: Any, workers: int, **options: Any) -> None:
        port = int(os.environ.get("PORT", 8000))
        if not settings.EMBEDDED_AWS:
            raise CommandError(
                "devstack runs moto on this machine: set AWS_ENDPOINT_URL to an address "
                "on 127.0.0.1 (`make dev` does)."
            )
        endpoint = urlsplit(settings.AWS_ENDPOINT_URL)
        self.snapshot_dir = Path(settings.VAR_DIR) / "aws"
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.cleanup: subprocess.Popen[bytes] | None = None
        self.stopping = False
        signal.signal(signal.SIGINT, self.on_signal)
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGHUP, self.on_signal)

        for host, number in (
            (endpoint.hostname or "127.0.0.1", endpoint.port or 80),
            ("127.0.0.1", port),
        ):
            if not port_is_free(host, number):
                raise CommandError(
                    f"Port {number} is already in use (another `make dev`?). "
                    "Stop it, or choose other ports with PORT=... and DEV_AWS_ENDPOINT_URL=..."
                )

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        moto = ThreadedMotoServer(
            ip_address=endpoint.hostname or "127.0.0.1", port=endpoint.port or 80, verbose=False
        )
        moto.start()
        try:
            restored = self.restore()
            self.stdout.write(
                f"S3 + SQS on {settings.AWS_ENDPOINT_URL} ({restored} objects restored)"
            )
            call_command("setup_storage")
            self.reconcile()
            self.start_children(port, workers)
            self.stdout.write(
                self.style.SUCCESS(f"\nServing on http://127.0.0.1:{port}/\n")
                + "Sign up at /accounts/signup/, or create a staff login with:\n"
                "  .venv/bin/python manage.py createsuperuser\n"
                "Ctrl-C stops everything.\n"
            )
            self.supervise()
        finally:
            self.stop_children()
            try:
                saved = self.snapshot()
                self.stdout.write(f"Saved {saved} objects under {self.snapshot_dir}")
            finally:
                moto.stop()

    # --- processes ---

    def start_children(self, port: int, workers: int) -> None:
        commands = {
            "worker": worker_command(workers),
            "consumer": [sys.executable, "manage.py", "consume_s3_events"],
            "web": [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}"],
        }
        for name, command in commands.items():
            # Own process group each, so stopping also reaches their children
            # (Celery's pool, runserver's autoreloader).
            process = subprocess.Popen(command, cwd=settings.BASE_DIR, start_new_session=True)
            self.children.append((name, process))

    def start_cleanup(self) -> None:
        """`manage.py cleanup_uploads` in the background, unless one is still running."""
        if self.cleanup is not None and self.cleanup.poll() is None:
            return
        self.cleanup = subprocess.Popen(
            [sys.executable, "manage.py", "cleanup_uploads"],
            cwd=settings.BASE_DIR,
            start_new_session=True,
        )

    def supervise(self) -> None:
        last_snapshot = time.monotonic()
        self.start_cleanup()
        last_cleanup = time.monotonic()
        while not self.stopping:
            if time.monotonic() - last_cleanup > CLEANUP_EVERY_SECONDS:
                self.start_cleanup()
                last_cleanup = time.monotonic()
            for name, process in self.children:
                if process.poll() is not None:
                    self.stderr.write(f"{name} exited with {process.returncode}; stopping.")
                    self.stopping = True
            # Saved as we go too, so that even a crash loses little.
            if time.monotonic() - last_snapshot > SNAPSHOT_EVERY_SECONDS:
                try:
                    self.snapshot()
                except Exception:
                    logger.exception("saving the embedded bucket failed; will retry")
                last_snapshot = time.monotonic()
            time.sleep(0.5)

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def stop_children(self) -> None:
        if self.cleanup is not None and self.cleanup.poll() is None:
            self.children.append(("cleanup", self.cleanup))
        for _, process in self.children:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for name, process in self.children:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.stderr.write(f"{name} did not stop in time; killing it.")
            # Kill whatever is left in the group (a runserver child, a pool worker).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    # --- persistence of the embedded bucket ---

    def snapshot(self) -> int:
        """Bring the copy of the bucket under var/aws/ up to date.

        Incremental (only new or changed objects are downloaded) and safe to
        interrupt: files are written first, then the index replaces the old
        one in a single rename.
        """
        objects_dir = self.snapshot_dir / "objects"
        objects_dir.mkdir(parents=True, exist_ok=True)
        index_path = self.snapshot_dir / "index.json"
        previous = json.loads(index_path.read_text()) if index_path.exists() else {}
        index = {}
        client = s3.client("s3")
        for obj in s3.iter_objects(""):
            key, etag = obj["Key"], obj["ETag"]
            kept = previous.get(key)
            if kept and kept["ETag"] == etag and (objects_dir / kept["file"]).exists():
                index[key] = kept
                continue
            name = hashlib.sha256(key.encode()).hexdigest()
            head = client.head_object(Bucket=s3.bucket(), Key=key)
            partial = objects_dir / f"{name}.partial"
            with open(partial, "wb") as out:
                s3.download_to(key, out)
            partial.replace(objects_dir / name)
            index[key] = {
                "file": name,
                "ETag": etag,
                "ContentType": head.get("ContentType", "binary/octet-stream"),
                "CacheControl": head.get("CacheControl", ""),
            }
        if index != previous:
            partial_index = index_path.with_suffix(".partial")
            partial_index.write_text(json.dumps(index))
            partial_index.replace(index_path)
            kept_files = {entry["file"] for entry in index.values()}
            for path in objects_dir.iterdir():
                if path.name not in kept_files:
                    path.unlink()
        return len(index)

    def restore(self) -> int:
        index_path = self.snapshot_dir / "index.json"
        if not index_path.exists():
            return 0
        from uploads import provisioning

        provisioning.create_bucket()
        index = json.loads(index_path.read_text())
        client = s3.client("s3")
        for key, entry in index.items():
            extra = {"ContentType": entry["ContentType"]}
            if entry["CacheControl"]:
                extra["CacheControl"] = entry["CacheControl"]
            # One PUT, never a multipart upload: that would give the object a
            # new ETag ("...-2"), and the worker reads originals with If-Match
            # on the ETag verified at arrival.
            with open(self.snapshot_dir / "objects" / entry["file"], "rb") as body:
                client.put_object(Bucket=s3.bucket(), Key=key, Body=body, **extra)
        return len(index)

    def reconcile(self) -> None:
        """Bring rows in line with the bucket after a restart (or a crash).

        Queued tasks and events lived in moto's memory and are gone, so work
        in flight is started again; rows whose objects were lost are settled.
        """
        present = {obj["Key"] for obj in s3.iter_objects("")}
        lost_thumbs = Thumbnail.objects.exclude(file__in=present)
        lost_thumbs_count = lost_thumbs.count()
        lost_thumbs.delete()
        # Failed uploads keep their original too, for a retry.
        kept = [Status.PROCESSING, Status.READY, Status.FAILED]
        lost = Upload.objects.filter(status__in=kept).exclude(file__in=present)
        lost_message = "The stored file was lost; please upload it again."
        lost_count = 0
        for upload in lost.exclude(status=Status.FAILED, error=lost_message):
            lost_count += upload.finish(Status.FAILED, lost_message, expected=upload.status)
        from uploads.tasks import process_upload, regenerate_thumbnails, send_notification_email

        in_flight = list(
            Upload.objects.filter(status=Status.PROCESSING).values_list("pk", flat=True)
        )
        for upload_id in in_flight:
            process_upload.delay(str(upload_id))
        # Their events were lost with moto's queue: check them as the event would have.
        for upload in Upload.objects.filter(status=Status.PENDING, file__in=present):
            upload.accept_arrival()
        if lost_thumbs_count:
            for upload_id in Upload.objects.filter(status=Status.READY).values_list(
                "pk", flat=True
            ):
                regenerate_thumbnails.delay(str(upload_id))
        for notification_id in Notification.objects.filter(emailed_at=None).values_list(
            "pk", flat=True
        ):
            send_notification_email.delay(notification_id)
        if lost_thumbs_count or lost_count:
            self.stdout.write(
                f"Reconciled: {lost_thumbs_count} lost thumbnails, {lost_count} lost uploads."
            )
