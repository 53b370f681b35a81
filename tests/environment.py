"""Test environment, set before Django reads its settings.

Loaded as a pytest plugin (`-p tests.environment` in pyproject.toml), which
pytest imports before pytest-django configures Django, so every part of the
system, in the test process or in a child process, talks to the same embedded
endpoint on a free port.
"""

from __future__ import annotations

import os

from tests.devstack_runner import free_port

AWS_PORT = free_port()
VAR_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "var")
TEST_ENV = {
    "DEBUG": "true",
    "AWS_ENDPOINT_URL": f"http://127.0.0.1:{AWS_PORT}",
    "AWS_STORAGE_BUCKET_NAME": "test-uploads",
    "CELERY_QUEUE_PREFIX": f"test{os.getpid()}-",
    "CELERY_TASK_TIME_LIMIT": "20",
    # Short, so a task lost with a killed worker comes back quickly.
    "CELERY_BROKER_VISIBILITY_TIMEOUT": "8",
    "S3_EVENTS_VISIBILITY_TIMEOUT": "5",
    "UPLOAD_CORS_ORIGINS": "*",
    "LOG_LEVEL": "INFO",
    # One test database per run, so that runs side by side do not collide.
    "SQLITE_TEST_NAME": os.path.join(VAR_DIR, f"test-{os.getpid()}.sqlite3"),
}
os.environ.update(TEST_ENV)
# A fresh clone has no var/ yet, and SQLite does not make directories.
os.makedirs(VAR_DIR, exist_ok=True)
