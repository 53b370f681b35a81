"""`manage.py devstack` (what `make dev` runs) as a child process, for tests and bench/.

Free of Django imports, so that a benchmark script can use it without the
test environment.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout: float = 30, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {condition}")
        time.sleep(interval)


class DevStack:
    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / "devstack.log"
        self.env = {
            **os.environ,
            "DEBUG": "true",
            "PORT": str(self.port),
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
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

    # The account that prepare() makes.
    USERNAME = "dev"
    PASSWORD = "a-long-dev-password"

    def prepare(self) -> None:
        """Migrate the stack's database and make a user, as a developer would."""
        self.manage("migrate", "--no-input")
        self.manage(
            "shell", "-c",
            "from django.contrib.auth.models import User; "
            f"User.objects.create_user({self.USERNAME!r}, 'dev@example.com', {self.PASSWORD!r})",
        )  # fmt: skip

    def start(self, command: list[str] | None = None) -> None:
        """Start `manage.py devstack` (or `command`) and wait until the site answers."""
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command or [sys.executable, "manage.py", "devstack"],
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
