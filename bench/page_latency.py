"""How soon the upload page shows an outcome, in a real browser.

Starts `manage.py devstack` (moto, worker, consumer, web server) on private
ports with a private database, signs in with headless Chromium (Debian's
/usr/bin/chromium, through Playwright), uploads photos one at a time through
the page and records when each row changed state, then prints, per upload:

- S3's 2xx → row shows "ready" (what the user waits for), and
- outcome committed on the server (processed_at) → row shows "ready" (the
  cost of polling rather than pushing).

Usage: .venv/bin/python bench/page_latency.py [--uploads 20]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.devstack_runner import DevStack  # noqa: E402  (the runner the tests drive)

# Records each row's state changes with wall-clock times (ms since the epoch).
WATCH_ROWS = """
window.stateTimes = {};
new MutationObserver((mutations) => {
  for (const m of mutations) {
    const row = m.target;
    if (m.attributeName !== "data-state" || !row.dataset.uploadId) continue;
    const times = (window.stateTimes[row.dataset.uploadId] ||= {});
    times[row.dataset.state] ??= performance.timeOrigin + performance.now();
  }
}).observe(document.getElementById("queue"), { attributes: true, subtree: true });
"""


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(fraction * len(ordered)) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=20)
    args = parser.parse_args()

    from PIL import Image
    from playwright.sync_api import sync_playwright

    workdir = Path(tempfile.mkdtemp(prefix="page-latency-"))
    photo = workdir / "photo.jpg"
    Image.effect_noise((2000, 1500), 60).convert("RGB").save(photo, "JPEG", quality=85)
    stack = DevStack(workdir)
    stack.prepare()
    to_shown, outcome_to_shown = [], []
    try:
        stack.start()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path="/usr/bin/chromium",
                headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            page = browser.new_page()
            page.goto(f"{stack.base}/accounts/login/")
            page.fill("#id_username", DevStack.USERNAME)
            page.fill("#id_password", DevStack.PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"{stack.base}/")
            page.evaluate(WATCH_ROWS)
            for number in range(args.uploads + 1):  # the first one warms up
                page.set_input_files("#file-input", str(photo))
                page.wait_for_function(
                    "n => document.querySelectorAll('#queue [data-state=ready]').length >= n",
                    arg=number + 1,
                    timeout=60_000,
                )
            times = page.evaluate("window.stateTimes")
            browser.close()
        database = sqlite3.connect(workdir / "db.sqlite3")
        processed = dict(database.execute("SELECT id, processed_at FROM uploads_upload"))
        for upload_id, states in list(times.items())[1:]:
            row_id = upload_id.replace("-", "")
            # SQLite keeps Django's UTC datetimes without a zone.
            committed = datetime.fromisoformat(processed[row_id]).replace(tzinfo=UTC)
            done = committed.timestamp() * 1000
            to_shown.append(states["ready"] - states["uploaded"])
            outcome_to_shown.append(states["ready"] - done)
    finally:
        stack.stop()
        stack.kill_all()

    print(f"{len(to_shown)} uploads of a 3-megapixel JPEG through the page, one at a time\n")
    print(f"{'interval':<34} {'median':>8} {'p95':>8} {'max':>8}")
    for label, values in (
        ("S3 2xx -> row shows ready", to_shown),
        ("outcome committed -> row shows it", outcome_to_shown),
    ):
        print(
            f"{label:<34} {statistics.median(values):6.0f}ms {percentile(values, 0.95):6.0f}ms "
            f"{max(values):6.0f}ms"
        )


if __name__ == "__main__":
    main()
