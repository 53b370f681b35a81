"""`make dev`'s runner as a user meets it: started, used, stopped and started again.

It runs as a child process with its own ports, database and state directory,
so it does not disturb (or depend on) anything else the tests run.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from PIL import Image

from tests.devstack_runner import DevStack, wait_for

pytestmark = pytest.mark.pipeline


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (800, 600), (200, 80, 20)).save(buffer, "JPEG")
    return buffer.getvalue()


def signed_in(stack: DevStack) -> requests.Session:
    session = requests.Session()
    session.get(f"{stack.base}/accounts/login/", timeout=10)
    session.post(
        f"{stack.base}/accounts/login/",
        data={
            "username": DevStack.USERNAME,
            "password": DevStack.PASSWORD,
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
    stack.prepare()
    return stack


def test_make_dev_stops_cleanly_and_keeps_files_across_a_restart(stack: DevStack) -> None:
    try:
        stack.start()
        # Housekeeping runs as cron would run it in production.
        wait_for(lambda: "Expired 0 pending uploads" in stack.log.read_text(), timeout=60)
        session = signed_in(stack)
        # Past boto3's 8 MB multipart threshold: restored as one object with
        # the same ETag, since the worker reads originals with If-Match on it.
        data = jpeg() + bytes(9 * 1024 * 1024)
        upload_id = upload_and_wait(stack, session, data)
        assert stack.stop() == set(), "processes left behind"

        stack.start()
        upload = fetch(stack, session, upload_id)
        assert upload["status"] == "ready"
        assert requests.get(upload["url"], timeout=10).content == data
        storage = boto3.client(
            "s3", endpoint_url=stack.env["AWS_ENDPOINT_URL"], region_name="us-east-1",
            aws_access_key_id="test", aws_secret_access_key="test",
        )  # fmt: skip
        [key] = [obj["Key"] for obj in storage.list_objects_v2(
            Bucket=stack.env["AWS_STORAGE_BUCKET_NAME"], Prefix="uploads/"
        )["Contents"]]  # fmt: skip
        etag = storage.head_object(Bucket=stack.env["AWS_STORAGE_BUCKET_NAME"], Key=key)["ETag"]
        assert etag.strip('"') == hashlib.md5(data).hexdigest()
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


def test_make_dev_migrates_serves_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    if shutil.which("make") is None:
        pytest.fail("make is missing")
    stack = DevStack(tmp_path)  # not prepared: `make dev` migrates by itself
    stack.env["DEV_AWS_ENDPOINT_URL"] = stack.env.pop("AWS_ENDPOINT_URL")
    try:
        stack.start(["make", "--no-print-directory", "dev"])
        printed = stack.log.read_text()
        assert f"Serving on http://127.0.0.1:{stack.port}/" in printed
        assert "manage.py createsuperuser" in printed
        assert requests.get(f"{stack.base}/accounts/login/", timeout=10).status_code == 200

        assert stack.process is not None
        started = stack.descendants()
        os.killpg(stack.process.pid, signal.SIGINT)  # Ctrl-C in the terminal
        stack.process.wait(timeout=60)

        def gone(pid: int) -> bool:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            return False

        wait_for(lambda: all(gone(pid) for pid in started), timeout=10)
        assert "Saved" in stack.log.read_text()  # the bucket was kept on the way out
    finally:
        stack.kill_all()
