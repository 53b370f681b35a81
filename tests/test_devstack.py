"""`make dev`'s runner as a user meets it: started, used, stopped and started again.

It runs as a child process with its own ports, database and state directory,
so it does not disturb (or depend on) anything else the tests run.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from tests.conftest import ROOT, wait_for
from tests.environment import _free_port

pytestmark = pytest.mark.pipeline


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (800, 600), (200, 80, 20)).save(buffer, "JPEG")
    return buffer.getvalue()


class DevStack:
    def __init__(self, tmp_path: Path) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / "devstack.log"
        self.env = {
            **os.environ,
            "DEBUG": "true",
            "PORT": str(self.port),
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{_free_port()}",
            "AWS_STORAGE_BUCKET_NAME": "devstack-uploads",
            "VAR_DIR": str(tmp_path / "var"),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "CELERY_QUEUE_PREFIX": f"devstack{os.getpid()}-",
            "PYTHONUNBUFFERED": "1",
        }
        for name in ("EMAIL_BACKEND", "EMAIL_FILE_PATH", "UPLOAD_CORS_ORIGINS"):
            self.env.pop(name, None)
        self.process: subprocess.Popen[bytes] | None = None

    def manage(self, *args: str) -> None:
        subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, check=True,
            capture_output=True,
        )  # fmt: skip

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "devstack"],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        wait_for(self.serving, timeout=60, interval=0.3)

    def serving(self) -> bool:
        assert self.process is not None and self.process.poll() is None, self.log.read_text()
        try:
            return requests.get(f"{self.base}/healthz", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    def descendants(self) -> set[int]:
        assert self.process is not None
        found: set[int] = set()
        todo = [self.process.pid]
        while todo:
            pid = todo.pop()
            for task in Path(f"/proc/{pid}/task").glob("*/children"):
                children = {int(child) for child in task.read_text().split()}
                todo += children - found
                found |= children
        return found

    def stop(self) -> set[int]:
        """SIGTERM, as Ctrl-C or a service manager would; returns pids left alive."""
        assert self.process is not None
        started = self.descendants()
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=60) == 0, self.log.read_text()[-3000:]
        time.sleep(0.5)
        alive = set()
        for pid in started:
            try:
                os.kill(pid, 0)
                alive.add(pid)
            except ProcessLookupError:
                pass
        return alive

    def kill_all(self) -> None:
        if self.process is not None and self.process.poll() is None:
            for pid in [*self.descendants(), self.process.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def signed_in(stack: DevStack) -> requests.Session:
    session = requests.Session()
    session.get(f"{stack.base}/accounts/login/", timeout=10)
    session.post(
        f"{stack.base}/accounts/login/",
        data={
            "username": "dev",
            "password": "a-long-dev-password",
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
        },
        headers={"Referer": f"{stack.base}/accounts/login/"},
        timeout=10,
    )
    session.headers.update(
        {"X-CSRFToken": session.cookies["csrftoken"] or "", "Referer": stack.base}
    )
    return session


def upload_and_wait(stack: DevStack, session: requests.Session, data: bytes) -> str:
    start = session.post(
        f"{stack.base}/api/uploads/",
        json={"filename": "keep.jpg", "content_type": "image/jpeg", "size": len(data)},
        timeout=10,
    ).json()
    response = requests.post(
        start["url"], data=start["fields"], files={"file": ("keep.jpg", data)}, timeout=30
    )
    assert response.status_code == 204
    wait_for(lambda: fetch(stack, session, start["id"])["status"] == "ready", timeout=60)
    return str(start["id"])


def fetch(stack: DevStack, session: requests.Session, upload_id: str) -> Any:
    return session.get(f"{stack.base}/api/uploads/{upload_id}/", timeout=10).json()


@pytest.fixture
def stack(tmp_path: Path) -> DevStack:
    stack = DevStack(tmp_path)
    stack.manage("migrate", "--no-input")
    stack.manage(
        "shell", "-c",
        "from django.contrib.auth.models import User; "
        "User.objects.create_user('dev', 'dev@example.com', 'a-long-dev-password')",
    )  # fmt: skip
    return stack


def test_make_dev_stops_cleanly_and_keeps_files_across_a_restart(stack: DevStack) -> None:
    try:
        stack.start()
        session = signed_in(stack)
        data = jpeg()
        upload_id = upload_and_wait(stack, session, data)
        assert stack.stop() == set(), "processes left behind"

        stack.start()
        upload = fetch(stack, session, upload_id)
        assert upload["status"] == "ready"
        assert requests.get(upload["url"], timeout=10).content == data
        for thumbnail in upload["thumbnails"]:
            assert requests.get(thumbnail["url"], timeout=10).status_code == 200
        assert len(upload["thumbnails"]) == 2
        assert stack.stop() == set(), "processes left behind"
    finally:
        stack.kill_all()


def test_after_a_crash_no_upload_points_at_a_missing_object(stack: DevStack) -> None:
    try:
        stack.start()
        session = signed_in(stack)
        upload_id = upload_and_wait(stack, session, jpeg())
        # A crash: no chance to save the embedded bucket on the way out.
        stack.kill_all()

        stack.start()
        upload = fetch(stack, session, upload_id)
        if upload["status"] == "ready":  # saved by a periodic snapshot in time
            urls = [upload["url"], *(t["url"] for t in upload["thumbnails"])]
            assert [requests.get(url, timeout=10).status_code for url in urls] == [200] * 3
        else:
            assert upload["status"] == "failed"
            assert "lost" in upload["error"]
            assert upload["thumbnails"] == [] and upload["url"] is None
    finally:
        stack.kill_all()
