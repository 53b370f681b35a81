"""Time from S3's 2xx to `ready` on the embedded stack.

Starts moto's server (S3 + SQS), `manage.py consume_s3_events` and a Celery
worker exactly as `make dev` does, on a private port, database and queue
prefix, then uploads photos through real pre-signed POSTs and measures how
long each takes to become `ready`:

- "event only": nothing but S3's ObjectCreated event moves the upload on;
- "page": the page's `complete` call right after the 2xx (what the browser
  does), racing the event.

Usage: .venv/bin/python bench/pipeline_latency.py [--uploads 50]
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=50)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="latency-bench-"))
    env = {
        "DEBUG": "true",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "AWS_STORAGE_BUCKET_NAME": "bench-uploads",
        "DATABASE_URL": f"sqlite:///{workdir / 'bench.sqlite3'}",
        "CELERY_QUEUE_PREFIX": f"bench{os.getpid()}-",
        "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
        "LOG_LEVEL": "WARNING",
        "DJANGO_SETTINGS_MODULE": "project.settings",
    }
    os.environ.update(env)

    import django

    django.setup()
    import logging

    import requests
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from moto.server import ThreadedMotoServer
    from PIL import Image

    from uploads import s3
    from uploads.models import Status, Upload

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = int(env["AWS_ENDPOINT_URL"].rsplit(":", 1)[1])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    call_command("migrate", verbosity=0)
    call_command("setup_storage", stdout=io.StringIO())
    child_env = {**os.environ, **env}
    logs = open(workdir / "children.log", "wb")  # noqa: SIM115 (open while children run)
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "project",
                "worker",
                "-Q",
                "images,notifications",
                "--concurrency",
                "2",
                "--without-gossip",
                "--without-mingle",
                "--loglevel",
                "WARNING",
            ],
            cwd=ROOT,
            env=child_env,
            stdout=logs,
            stderr=subprocess.STDOUT,
        ),
        subprocess.Popen(
            [sys.executable, "manage.py", "consume_s3_events"],
            cwd=ROOT,
            env=child_env,
            stdout=logs,
            stderr=subprocess.STDOUT,
        ),
    ]
    try:
        user = User.objects.create_user("bench", "bench@example.com", "x")
        buffer = io.BytesIO()
        Image.effect_noise((2000, 1500), 60).convert("RGB").save(buffer, "JPEG", quality=85)
        photo = buffer.getvalue()

        def one(call_complete: bool) -> tuple[float, float]:
            upload = Upload.start(user, "bench.jpg", "image/jpeg", len(photo))
            form = s3.presigned_post(upload.key, "image/jpeg", len(photo), 600)
            response = requests.post(
                form["url"], data=form["fields"], files={"file": ("bench.jpg", photo)}, timeout=30
            )
            assert response.status_code == 204, response.text
            started = time.perf_counter()
            started_wall = time.time()
            if call_complete:
                upload.accept_arrival()
            while True:
                status, uploaded_at = Upload.objects.filter(pk=upload.pk).values_list(
                    "status", "uploaded_at"
                )[0]
                if status not in (Status.PENDING, Status.PROCESSING):
                    break
                if time.perf_counter() - started > 60:
                    raise RuntimeError(f"upload {upload.pk} stuck in {status}")
                time.sleep(0.005)
            assert status == Status.READY, status
            total = time.perf_counter() - started
            # How long until the upload was claimed (event consumed or "complete" called).
            assert uploaded_at is not None
            claimed = uploaded_at.timestamp() - started_wall
            return total, claimed

        one(True)  # warm up: queues created, worker connected
        print(f"{args.uploads} uploads of a {len(photo) // 1024} KB 3-megapixel JPEG per mode\n")
        print(f"{'mode':<12} {'median':>9} {'p95':>9} {'max':>9}   {'claimed after (median)':>22}")
        for label, call_complete in (("event only", False), ("page", True)):
            results = [one(call_complete) for _ in range(args.uploads)]
            times = sorted(total for total, _ in results)
            p95 = times[max(0, int(round(0.95 * len(times))) - 1)]
            claimed = statistics.median(c for _, c in results)
            print(
                f"{label:<12} {statistics.median(times) * 1000:8.0f}ms {p95 * 1000:8.0f}ms "
                f"{times[-1] * 1000:8.0f}ms   {claimed * 1000:20.0f}ms"
            )
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait(timeout=30)
        server.stop()


if __name__ == "__main__":
    main()
