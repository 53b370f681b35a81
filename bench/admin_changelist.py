"""Time the admin's upload list on PostgreSQL with 1,000,000 uploads.

    .venv/bin/python bench/admin_changelist.py [--rows N] [--refill] [--runs N]

Creates the database `uploads_bench` on the local server (or the one in
--database-url), fills it once with set-based SQL (INSERT ... SELECT over
generate_series), keeps it for later runs, then requests the changelist with
a signed-in superuser through Django's test Client and prints the median time
of each page, its number of queries and its slowest query.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/uploads_bench"
USERS = 1000

# The columns each fill sets, in its SELECT's order. Django leaves no default
# in the database, so every NOT NULL column must be here: check_fill_columns
# says which one a new migration added before anything is thrown away.
UPLOAD_COLUMNS = (
    "id, owner_id, filename, file, content_type, size, verified_size, etag, detected_type, "
    "width, height, status, error, created_at, updated_at, uploaded_at, processed_at, "
    "unfinished_runs"
)
THUMBNAIL_COLUMNS = "upload_id, name, file, width, height, bytes, created_at"

# Statuses by n % 100: mostly ready, as in a healthy system.
FILL_UPLOADS = f"""
INSERT INTO uploads_upload ({UPLOAD_COLUMNS})
SELECT
    id, owner_id, 'photo-' || n || ext, 'uploads/' || id || ext, content_type, size,
    CASE WHEN status IN ('pending', 'expired') THEN NULL ELSE size END,
    CASE WHEN status IN ('pending', 'expired') THEN '' ELSE md5(id::text) END,
    CASE WHEN status IN ('ready', 'rejected') THEN content_type ELSE '' END,
    CASE WHEN status = 'ready' AND content_type LIKE 'image/%%' THEN 4032 END,
    CASE WHEN status = 'ready' AND content_type LIKE 'image/%%' THEN 3024 END,
    status,
    CASE status
        WHEN 'rejected' THEN 'The file is not a JPEG image.'
        WHEN 'failed' THEN 'The file could not be processed; please try again later.'
        WHEN 'expired' THEN 'The file never arrived.'
        ELSE ''
    END,
    created_at, created_at + interval '3 seconds',
    CASE WHEN status IN ('pending', 'expired') THEN NULL ELSE created_at + interval '2 seconds' END,
    CASE WHEN status IN ('ready', 'rejected', 'failed')
        THEN created_at + interval '3 seconds' END,
    -- A run under way for those processing; none left over for the settled.
    CASE WHEN status = 'processing' THEN 1 ELSE 0 END
FROM (
    SELECT
        n,
        gen_random_uuid() AS id,
        %(first_user)s + n %% %(users)s AS owner_id,
        CASE n %% 10 WHEN 9 THEN 'application/pdf' WHEN 8 THEN 'image/png' ELSE 'image/jpeg' END
            AS content_type,
        CASE n %% 10 WHEN 9 THEN '.pdf' WHEN 8 THEN '.png' ELSE '.jpg' END AS ext,
        100000 + (n::bigint * 7919) %% 5000000 AS size,
        CASE
            WHEN n %% 100 < 80 THEN 'ready'
            WHEN n %% 100 < 85 THEN 'rejected'
            WHEN n %% 100 < 88 THEN 'failed'
            WHEN n %% 100 < 94 THEN 'expired'
            WHEN n %% 100 < 97 THEN 'pending'
            ELSE 'processing'
        END AS status,
        now() - n * interval '30 seconds' AS created_at
    FROM generate_series(1, %(rows)s) AS n
) AS generated
"""

# One key per upload and size: uploads_thumbnail.file is unique (0006).
FILL_THUMBNAILS = f"""
INSERT INTO uploads_thumbnail ({THUMBNAIL_COLUMNS})
SELECT u.id, s.name, 'thumbs/' || u.id || '/' || s.name || '.webp', s.side, s.side * 3 / 4,
       s.side * 40, u.processed_at
FROM uploads_upload u CROSS JOIN (VALUES ('256', 256), ('1024', 1024)) AS s(name, side)
WHERE u.status = 'ready' AND u.content_type LIKE 'image/%%'
"""


def create_database(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    server = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(server, autocommit=True) as connection:
        found = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [name]
        ).fetchone()
        if not found:
            connection.execute(f'CREATE DATABASE "{name}"')
            print(f"created database {name}")


def check_fill_columns() -> None:
    """Stop, before truncating, if a NOT NULL column without a default is not filled."""
    from django.db import connection

    filled = {
        "uploads_upload": {c.strip() for c in UPLOAD_COLUMNS.split(",")},
        "uploads_thumbnail": {c.strip() for c in THUMBNAIL_COLUMNS.split(",")},
    }
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT table_name, column_name FROM information_schema.columns
            WHERE table_schema = current_schema() AND table_name = ANY(%s)
              AND is_nullable = 'NO' AND column_default IS NULL AND is_identity = 'NO'
            """,
            [list(filled)],
        )
        missing = [f"{t}.{c}" for t, c in cursor.fetchall() if c not in filled[t]]
    if missing:
        sys.exit(f"the fill does not set {', '.join(sorted(missing))}: add it to the fill SQL")


def fill(rows: int, refill: bool) -> None:
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction

    from uploads.models import Upload

    User = get_user_model()
    # The planner's estimate: a COUNT(*) here would be the very cost under test.
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE relname = 'uploads_upload'")
        estimate = cursor.fetchone()[0]
    if not refill and estimate >= rows * 0.95 and Upload.objects.exists():
        print(f"reusing about {estimate:,} uploads (--refill to start again)")
        return
    check_fill_columns()
    started = time.perf_counter()
    # One transaction: a fill that fails leaves the data as it was.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE uploads_notification, uploads_thumbnail, uploads_upload, auth_user CASCADE"
        )
        cursor.execute(
            """
            INSERT INTO auth_user (password, is_superuser, username, first_name, last_name,
                                   email, is_staff, is_active, date_joined)
            SELECT '!', false, 'user' || n, '', '', 'user' || n || '@example.com',
                   false, true, now()
            FROM generate_series(1, %s) AS n
            """,
            [USERS],
        )
        first_user = User.objects.order_by("pk").values_list("pk", flat=True).first()
        cursor.execute(FILL_UPLOADS, {"rows": rows, "users": USERS, "first_user": first_user})
        print(f"{rows:,} uploads in {time.perf_counter() - started:.0f} s")
        cursor.execute(FILL_THUMBNAILS, [])
        print(f"thumbnails done at {time.perf_counter() - started:.0f} s")
    # VACUUM cannot run in a transaction; it also sets the visibility map that
    # index-only scans (and so counts) depend on, as autovacuum would in production.
    connection.ensure_connection()
    connection.connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE uploads_upload")
        cursor.execute("VACUUM ANALYZE uploads_thumbnail")
        cursor.execute("VACUUM ANALYZE auth_user")
    print(f"filled and analysed in {time.perf_counter() - started:.0f} s")


def measure(runs: int, django_paginator: bool) -> None:
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from uploads.models import Upload

    # As in production. Not setup_test_environment(): its instrumented template
    # rendering (for response.context) would double the time measured.
    settings.DEBUG = False
    settings.ALLOWED_HOSTS = ["testserver"]
    if django_paginator:
        from django.contrib.admin import site
        from django.core.paginator import Paginator

        # For comparison: Django's own, which counts every matching row.
        site._registry[Upload].paginator = Paginator  # type: ignore[misc]
    User = get_user_model()
    staff = User.objects.filter(username="bench-admin").first()
    if staff is None:
        staff = User.objects.create_superuser("bench-admin", "bench@example.com", "bench")
    client = Client()
    client.force_login(staff)
    sample: Any = Upload.objects.filter(status="failed").order_by("-created_at").first()
    week_ago = (timezone.now() - timedelta(days=7)).isoformat()
    cases = [
        ("default page", {}),
        ("page 100 (the last offered)", {"p": "100"}),
        ("status = failed", {"status__exact": "failed"}),
        ("status = ready", {"status__exact": "ready"}),
        ("type = PDF", {"type": "application/pdf"}),
        ("type = AVIF (no rows)", {"type": "image/avif"}),
        ("created in the last 7 days", {"created_at__gte": week_ago}),
        ("search: upload id", {"q": str(sample.pk)}),
        ("search: S3 key", {"q": sample.key}),
        ("search: thumbnail key", {"q": f"thumbs/{sample.pk}/256.webp"}),
        ("search: owner email", {"q": "user42@example.com"}),
        ("search: owner username", {"q": "user42"}),
        ("search: filename", {"q": sample.filename}),
        ("search: filename, no match", {"q": "no-such-file"}),
    ]
    url = "/admin/uploads/upload/"
    print(f"\n{'page':<30} {'median':>8} {'min':>8} {'queries':>8} {'SQL':>8} {'slowest':>8}")
    for name, params in cases:
        assert client.get(url, params).status_code == 200, name  # warm caches and plans
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            response = client.get(url, params)
            times.append(time.perf_counter() - started)
            assert response.status_code == 200, name
        with CaptureQueriesContext(connection) as captured:
            client.get(url, params)
        sql = [float(query["time"]) * 1000 for query in captured.captured_queries]
        print(
            f"{name:<30} {statistics.median(times) * 1000:>6.0f}ms {min(times) * 1000:>6.0f}ms "
            f"{len(sql):>8} {sum(sql):>6.0f}ms {max(sql):>6.0f}ms"
        )
    # The summary page too, without SQS (not part of this bench): its queue depths stub out.
    from uploads import admin as uploads_admin

    uploads_admin.queue_row = lambda name: {"name": name, "error": "not measured"}
    times = []
    for _ in range(runs + 1):
        started = time.perf_counter()
        assert client.get(url + "summary/").status_code == 200
        times.append(time.perf_counter() - started)
    with CaptureQueriesContext(connection) as captured:
        client.get(url + "summary/")
    sql = [float(query["time"]) * 1000 for query in captured.captured_queries]
    print(
        f"{'summary page (no SQS)':<30} {statistics.median(times[1:]) * 1000:>6.0f}ms "
        f"{min(times[1:]) * 1000:>6.0f}ms {len(sql):>8} {sum(sql):>6.0f}ms {max(sql):>6.0f}ms"
    )
    print(
        "\nmedian, min: whole request (SQL, Python, template); SQL: time in queries of one "
        "request; slowest: its slowest query."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7, help="Timed requests per page.")
    parser.add_argument("--refill", action="store_true", help="Throw the data away and refill.")
    parser.add_argument(
        "--django-paginator",
        action="store_true",
        help="Compare: Django's own paginator, which counts every matching row.",
    )
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    args = parser.parse_args()

    create_database(args.database_url)
    os.environ["DATABASE_URL"] = args.database_url
    # The list signs thumbnail URLs (no request is made): any local endpoint does.
    os.environ.setdefault("AWS_ENDPOINT_URL", "http://127.0.0.1:9090")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    fill(args.rows, args.refill)
    measure(args.runs, args.django_paginator)


if __name__ == "__main__":
    main()
