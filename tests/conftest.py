"""Shared fixtures: the embedded S3/SQS endpoint, users, and real worker processes."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from project import celery_app
from tests.devstack_runner import ROOT, wait_for
from tests.environment import AWS_PORT, TEST_ENV
from uploads import s3
from uploads.management.commands.devstack import worker_command
from uploads.models import Thumbnail, Upload

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session", autouse=True)
def aws_endpoint() -> Iterator[str]:
    """moto's server over HTTP, provisioned exactly as production is."""
    import logging

    from django.core.management import call_command
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=AWS_PORT, verbose=False)
    server.start()
    call_command("setup_storage", stdout=io.StringIO())
    yield TEST_ENV["AWS_ENDPOINT_URL"]
    server.stop()


@pytest.fixture
def isolated_storage(settings: Any) -> str:
    """A bucket and events queues of the test's own, which no running consumer reads."""
    suffix = uuid.uuid4().hex[:8]
    settings.AWS_STORAGE_BUCKET_NAME = f"isolated-{suffix}"
    settings.S3_EVENTS_QUEUE = f"events-{suffix}"
    settings.S3_EVENTS_DLQ = f"events-{suffix}-dlq"
    return suffix


@pytest.fixture
def user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("alice", "alice@example.com", "pw-alice-1234")


@pytest.fixture
def other_user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("bob", "bob@example.com", "pw-bob-1234")


@pytest.fixture
def alice(client: Any, user: Any) -> Any:
    """A test client signed in as alice."""
    client.force_login(user)
    return client


def data_file(name: str) -> bytes:
    return (DATA / name).read_bytes()


def post_to_s3(start: dict[str, Any], body: bytes, filename: str = "file") -> Any:
    """Upload like a browser does: multipart POST of the form fields, then the file."""
    import requests

    return requests.post(
        start["url"], data=start["fields"], files={"file": (filename, body)}, timeout=30
    )


def _database_url() -> str:
    from django.db import connection

    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{db['USER']}{password}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"


class Processes:
    """Child processes of the real system, sharing the test database."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        # The child keeps its own copy of the file descriptor.
        with open(self.log_dir / f"{name}.log", "ab") as log:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.running[name] = process
        return process

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def start_worker(self) -> subprocess.Popen[bytes]:
        return self.start("worker", worker_command(concurrency=2))

    def start_consumer(self) -> subprocess.Popen[bytes]:
        return self.start(
            "consumer", [sys.executable, "manage.py", "consume_s3_events", "--wait", "2"]
        )

    def stop(self, name: str, sig: int = 15) -> None:
        import signal

        process = self.running.pop(name, None)
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)


@pytest.fixture(scope="session")
def pipeline(
    django_db_setup: Any, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Processes]:
    """A real Celery worker and the S3 event consumer, as separate processes."""
    with django_db_blocker.unblock():
        database_url = _database_url()
    mail_dir = tmp_path_factory.mktemp("mail")
    env = {
        **os.environ,
        **TEST_ENV,
        "DATABASE_URL": database_url,
        "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
        "EMAIL_FILE_PATH": str(mail_dir),
        "PYTHONUNBUFFERED": "1",
    }
    processes = Processes(env, tmp_path_factory.mktemp("logs"))
    processes.mail_dir = mail_dir  # type: ignore[attr-defined]
    processes.start_worker()
    processes.start_consumer()
    wait_for(lambda: "ready." in processes.log("worker"), timeout=60)
    yield processes
    processes.stop_all()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test item, for fixtures that print logs on failure."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def eager_tasks() -> Iterator[None]:
    """Run queued tasks in this process, so their effect can be checked."""
    conf = celery_app.conf
    before = conf.task_always_eager, conf.task_eager_propagates
    conf.task_always_eager = conf.task_eager_propagates = True
    yield
    conf.task_always_eager, conf.task_eager_propagates = before


# --- rows and objects as the pipeline leaves them ---


def jpeg_bytes(size: tuple[int, int] = (300, 200)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (30, 160, 90)).save(buffer, "JPEG")
    return buffer.getvalue()


def make_upload(owner: Any, status: str, body: bytes | None = None, **fields: Any) -> Upload:
    """A row as the pipeline leaves it, with its original in S3 when `body` is given."""
    upload_id = uuid.uuid4()
    key = f"uploads/{upload_id}.jpg"
    if body is not None:
        s3.put(key, body, "image/jpeg", "private")
        # The verified ETag, as arrival records it: a consumer that sees this
        # object's event then knows it for the version already checked.
        fields.setdefault("etag", s3.head(key).etag)  # type: ignore[union-attr]
    size = len(body) if body is not None else 1234
    return Upload.objects.create(
        id=upload_id,
        owner=owner,
        filename=f"{status}.jpg",
        file=key,
        content_type="image/jpeg",
        size=size,
        status=status,
        **fields,
    )


def make_stuck(owner: Any) -> Upload:
    """An upload left processing longer than any task may run: its task was lost."""
    from django.conf import settings
    from django.utils import timezone

    upload = make_upload(owner, "processing", jpeg_bytes())
    long_ago = timezone.now() - timedelta(seconds=3 * settings.CELERY_TASK_TIME_LIMIT)
    Upload.objects.filter(pk=upload.pk).update(updated_at=long_ago)
    upload.refresh_from_db()
    return upload


def add_thumbnail(upload: Upload, name: str) -> Thumbnail:
    key = Thumbnail.key_for(upload.pk, name)
    s3.put(key, b"RIFF....WEBP", "image/webp", "private")
    return Thumbnail.objects.create(
        upload=upload, name=name, file=key, width=int(name), height=int(name), bytes=12
    )


def exists(key: str) -> bool:
    return s3.head(key) is not None
