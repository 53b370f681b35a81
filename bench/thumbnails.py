"""Benchmark: thumbnail sets per second for a 12-megapixel JPEG photo.

Compares, in one run, our pipeline (`uploads.thumbnails.make_thumbnails`) with
the naive recipe: for each size, open the file again, `thumbnail()` from the
full image and save WebP. Each variant runs in its own process pinned to one
CPU core, so its figures are per core and its peak memory is its own.

    .venv/bin/python bench/thumbnails.py [--runs 15] [--sizes 256 1024]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PIL import Image, ImageDraw  # noqa: E402

from uploads.thumbnails import WEBP_QUALITY, make_thumbnails  # noqa: E402

PHOTO_SIZE = (4000, 3000)
JPEG_QUALITY = 90
VARIANTS = ("ours", "naive")


def make_photo(path: Path) -> None:
    """A deterministic photo-like JPEG: smooth gradients and shapes under sensor-like noise.

    Noise keeps it from compressing trivially (about as large as a phone photo)
    and gives the decoder real work.
    """
    size = PHOTO_SIZE
    red = Image.linear_gradient("L").resize(size)
    green = Image.linear_gradient("L").rotate(90).resize(size)
    blue = Image.radial_gradient("L").resize(size)
    picture = Image.merge("RGB", (red, green, blue))
    draw = ImageDraw.Draw(picture)
    rng = random.Random(12)
    for _ in range(60):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        radius = rng.randrange(50, 600)
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)
    noise = Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))
    Image.blend(picture, noise, 0.12).save(path, "JPEG", quality=JPEG_QUALITY)


def ours(path: Path, sizes: list[int]) -> list[tuple[int, int, int]]:
    _, made = make_thumbnails(
        path, sizes, max_pixels=50_000_000, expected_type="image/jpeg", description="JPEG image"
    )
    return [(t.width, t.height, len(t.data)) for t in made]


def naive(path: Path, sizes: list[int]) -> list[tuple[int, int, int]]:
    # Same WebP settings as ours, so the comparison is of decoding and resizing.
    made = []
    for size in sizes:
        with Image.open(path) as image:
            image.thumbnail((size, size))
            buffer = io.BytesIO()
            image.save(buffer, "WEBP", quality=WEBP_QUALITY, method=4)
            made.append((image.width, image.height, len(buffer.getvalue())))
    return made


def run_variant(name: str, path: Path, sizes: list[int], runs: int) -> dict[str, Any]:
    """Time one variant in this process; called in a child process per variant."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    make = {"ours": ours, "naive": naive}[name]
    baseline_mib = peak_rss_mib()
    made = make(path, sizes)  # warm-up: first use loads codecs and plugins
    wall, cpu = [], []
    for _ in range(runs):
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        make(path, sizes)
        wall.append(time.perf_counter() - wall_start)
        cpu.append(time.process_time() - cpu_start)
    peak_mib = peak_rss_mib()
    return {
        "wall": statistics.median(wall),
        "cpu": statistics.median(cpu),
        "peak_mib": peak_mib,
        "added_mib": peak_mib - baseline_mib,
        "made": made,
    }


def peak_rss_mib() -> float:
    """This process's peak resident memory so far.

    Linux's VmHWM, unlike ru_maxrss, does not carry over the parent's peak
    through fork and exec; ru_maxrss is the fallback elsewhere.
    """
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes vs KiB
    kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(kib) / 1024


def measure(name: str, path: Path, sizes: list[int], runs: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--variant", name, "--image", str(path), "--runs"]
    command += [str(runs), "--sizes", *map(str, sizes)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(output))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="timed runs per variant")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--image", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.image, args.sizes, args.runs)))
        return

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "photo.jpg"
        make_photo(path)
        width, height = PHOTO_SIZE
        print(
            f"Photo: {width}×{height} JPEG, quality {JPEG_QUALITY}, "
            f"{path.stat().st_size / 1_000_000:.1f} MB; sizes {args.sizes}; "
            f"median of {args.runs} runs, one process per variant pinned to one core."
        )
        print(f"Python {sys.version.split()[0]}, Pillow {Image.__version__}\n")
        results = {name: measure(name, path, args.sizes, args.runs) for name in VARIANTS}

    header = f"{'':<34}" + "".join(f"{name:>12}" for name in VARIANTS)
    print(header)
    print("-" * len(header))
    rows = [
        ("CPU time per set (ms)", lambda r: f"{r['cpu'] * 1000:.0f}"),
        ("wall time per set (ms)", lambda r: f"{r['wall'] * 1000:.0f}"),
        ("sets per second per core (CPU)", lambda r: f"{1 / r['cpu']:.2f}"),
        ("peak memory, RSS (MiB)", lambda r: f"{r['peak_mib']:.0f}"),
        ("  above the idle process (MiB)", lambda r: f"{r['added_mib']:.0f}"),
    ]
    for label, show in rows:
        print(f"{label:<34}" + "".join(f"{show(results[name]):>12}" for name in VARIANTS))
    print()
    for name in VARIANTS:
        made = ", ".join(f"{w}×{h} {b / 1000:.0f} kB" for w, h, b in results[name]["made"])
        print(f"{name} makes {made}")
    ratio = {key: results["naive"][key] / results["ours"][key] for key in ("cpu", "wall")}
    print(
        f"\nSpeed-up of ours over naive: {ratio['cpu']:.2f}× in CPU time, "
        f"{ratio['wall']:.2f}× in wall time (wall time also counts waiting for a busy core)."
    )


if __name__ == "__main__":
    main()
