"""Scaling report for the Ray engine: writes benchmarks/results/scaling.md.

    nice -n 19 python -m benchmarks.scaling                # 300w/val (291 images)
    nice -n 19 python -m benchmarks.scaling --limit 100    # a subset, when time is short

On the images of ../shared/data/300w/val plus one corrupt file, through the CLI as a
user runs it:
  - the local engine with 1 onnxruntime thread and with all cores;
  - the Ray engine (embedded runtime) with 1 and with 2 actors of 1 CPU each;
  - each engine once more on a single image, to take start-up out of the rates:
    steady rate = (N - 1) / (time on N - time on 1);
  - every run --repeat times (default 3), the engines taking turns, the fastest kept;
  - the Ray outputs checked against the local engine's (every input once, in order,
    landmarks within 0.01 px, the corrupt file an error record, exit code 1);
  - where the time of one image goes (decode, detect, landmarks), in this process;
then a projection for 10 million images.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from training.paths import REPO, VAL_300W

CLI = REPO / "face_alignment.py"
DEFAULT_DATA = VAL_300W
OUT = REPO / "benchmarks" / "results" / "scaling.md"
TEN_MILLION = 10_000_000


# Ray 2.60's raylet gives its agents ~20 s to start; on a machine whose cores another
# job holds, starting Ray can fail so. Such a run is tried again, not timed.
RAY_START_FAILED = "cannot start or join the local Ray runtime"
RAY_START_TRIES = 10


def run(args: list[str], cwd: Path) -> tuple[float, int, str]:
    """Wall seconds, exit code and stderr of one CLI run."""
    for _ in range(RAY_START_TRIES):
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, str(CLI), "-q", *args], cwd=cwd, capture_output=True, text=True
        )
        if result.returncode != 2 or RAY_START_FAILED not in result.stderr:
            break
        print("Ray did not start (a busy machine); trying again in 30 s", file=sys.stderr)
        time.sleep(30)
    return time.perf_counter() - start, result.returncode, result.stderr


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def compare(got: list[dict], want: list[dict]) -> str:
    """'ok' or what differs: inputs once and in order, errors, landmarks within 0.01 px."""
    if [r["image"] for r in got] != [r["image"] for r in want]:
        return "inputs differ (missing, repeated or out of order)"
    worst = 0.0
    for a, b in zip(got, want, strict=True):
        if a["error"] != b["error"] or len(a["faces"]) != len(b["faces"]):
            return f"{a['image']}: different result"
        for fa, fb in zip(a["faces"], b["faces"], strict=True):
            if set(fa) != set(fb) or fa["presence"] != fb["presence"]:
                return f"{a['image']}: different face fields or presence"
            worst = max(worst, float(np.abs(np.subtract(fa["landmarks"], fb["landmarks"])).max()))
    return f"ok (largest landmark difference {worst:.3f} px)" if worst <= 0.01 else f"{worst} px"


def stage_split(images: list[Path]) -> dict[str, float]:
    """Median ms per image of each stage, local engine, one thread."""
    from util.aligner import FaceAligner
    from util.io import read_image

    aligner = FaceAligner(threads=1, flip=True)
    aligner.align(read_image(images[0]))  # warm-up
    decode, detect, landmarks, pixels, faces = [], [], [], [], 0
    for path in images:
        aligner.times.seconds.clear()
        start = time.perf_counter()
        image = read_image(path)
        decode.append(time.perf_counter() - start)
        faces += len(aligner.align(image))
        detect.append(sum(aligner.times.seconds.get("detect", [])))
        landmarks.append(sum(aligner.times.seconds.get("landmarks", [])))
        pixels.append(image.shape[0] * image.shape[1])
    # A 12-megapixel phone photo (the first image scaled up): decode time alone.
    from PIL import Image

    big = Path(tempfile.mkdtemp(prefix="scaling-big-")) / "big.jpg"
    Image.open(images[0]).convert("RGB").resize((4000, 3000)).save(big, quality=90)
    big_decode = []
    for _ in range(5):
        start = time.perf_counter()
        read_image(big)
        big_decode.append(time.perf_counter() - start)
    return {
        "decode": 1000 * float(np.median(decode)),
        "detect": 1000 * float(np.median(detect)),
        "landmarks": 1000 * float(np.median(landmarks)),
        "faces per image": faces / len(images),
        "megapixels": float(np.median(pixels)) / 1e6,
        "kilobytes": float(np.median([p.stat().st_size for p in images])) / 1e3,
        "decode 12 MP": 1000 * float(np.median(big_decode)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--limit", type=int, default=0, help="first N images only")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument(
        "--repeat", type=int, default=3, help="times each run, the fastest kept (default 3)"
    )
    args = parser.parse_args()
    images = sorted(Path(args.data).glob("*.jpg"))[: args.limit or None]
    if not images:
        sys.exit(f"no images in {args.data}")
    work = Path(tempfile.mkdtemp(prefix="scaling-"))
    inputs = work / "inputs"
    inputs.mkdir()
    for path in images:
        (inputs / path.name).symlink_to(path.resolve())
    (inputs / "zz_corrupt.jpg").write_bytes(b"\xff\xd8\xff this is not a JPEG")
    one = work / "one"
    one.mkdir()
    (one / images[0].name).symlink_to(images[0].resolve())
    n = len(images) + 1

    runs = {
        "local, 1 thread": ["--threads", "1"],
        "local, all cores (2 threads)": ["--threads", "0"],
        "ray, 1 actor x 1 CPU": ["--engine", "ray", "--workers", "1", "--threads", "1"],
        "ray, 2 actors x 1 CPU": ["--engine", "ray", "--workers", "2", "--threads", "1"],
    }
    # Each run is timed ``--repeat`` times, the engines taking turns, and the fastest
    # time kept: on a shared machine, the fastest run is the one least slowed by others.
    best: dict[str, tuple[float, float, int]] = {}
    checks: dict[str, str] = {}
    reference: list[dict] | None = None
    for rep in range(args.repeat):
        for name, flags in runs.items():
            out = work / f"{name.split(',')[0]}-{rep}.jsonl"
            t_one, code_one, err_one = run(
                [*flags, "-i", str(one), "--json", str(work / "one.jsonl")], work
            )
            t_all, code, err = run([*flags, "-i", str(inputs), "--json", str(out)], work)
            if not out.exists() or code_one != 0:
                print(f"{name}: failed ({code}, {code_one}):\n{err}\n{err_one}", file=sys.stderr)
                return 2
            records = read_jsonl(out)
            if reference is None:
                reference = records  # the local engine, 1 thread, first run
            elif name.startswith("ray") and checks.get(name, "ok").startswith("ok"):
                checks[name] = compare(records, reference)  # the first difference stays
            old = best.get(name, (float("inf"), float("inf"), code))
            best[name] = (min(old[0], t_all), min(old[1], t_one), code)
            print(f"{name}: {t_all:.1f} s for {n} inputs (one image: {t_one:.1f} s), exit {code}")
    rows = []
    for name, (t_all, t_one, code) in best.items():
        steady = (n - 1) / max(1e-9, t_all - t_one)
        rows.append((name, t_all, t_one, n / t_all, steady, code))
    split = stage_split(images[: min(len(images), 60)])
    write_report(Path(args.out), images, n, rows, checks, split, args.repeat)
    print(f"wrote {args.out}")
    return 0


def write_report(out: Path, images, n, rows, checks, split, repeat) -> None:  # noqa: ANN001
    rate = {name: steady for name, _, _, _, steady, _ in rows}
    local1 = rate["local, 1 thread"]
    local2 = rate["local, all cores (2 threads)"]
    ray1 = rate["ray, 1 actor x 1 CPU"]
    ray2 = rate["ray, 2 actors x 1 CPU"]
    per_core = ray2 / 2
    core_hours = TEN_MILLION / per_core / 3600
    models_ms = split["detect"] + split["landmarks"]
    stages = split["decode"] + models_ms
    lines = [
        "# Scaling: the Ray engine against the local engine",
        "",
        f"Measured {datetime.date.today()} by `nice -n 19 python -m benchmarks.scaling"
        f"{'' if len(images) == 291 else f' --limit {len(images)}'}"
        f"{'' if repeat == 3 else f' --repeat {repeat}'}` on this machine "
        f"({os.cpu_count()} x {platform.machine()} cores, no GPU, Python "
        f"{platform.python_version()}), on {len(images)} images of `300w/val` plus one "
        "corrupt file, each run a CLI process as a user starts it.",
        "",
        "**Timings here are noisy**: other jobs (model training, other tests) share the two",
        "cores at a higher priority, and these runs are niced, so absolute rates are low and",
        f"vary between runs. Each run was timed {repeat} times, the engines taking turns, and",
        "the fastest kept; the ratios between engines are the result to read.",
        "",
        "| run | wall s (all inputs) | wall s (one image) | images/s end to end "
        "| steady images/s | exit |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, t_all, t_one, end_to_end, steady, code in rows:
        lines.append(
            f"| {name} | {t_all:.1f} | {t_one:.1f} | {end_to_end:.2f} | {steady:.2f} | {code} |"
        )
    lines += [
        "",
        f"Steady rate = (N - 1) / (wall on N - wall on one image), N = {n}: it takes out "
        "start-up (Python, models; for Ray also the runtime and the actors).",
        "",
        "Against the local engine's output (1 thread):",
        "",
        *(f"- {name}: {result}" for name, result in checks.items()),
        "",
        "## Ratios",
        "",
        f"- Ray, 2 actors / 1 actor: **{ray2 / ray1:.2f}x** "
        f"(scaling efficiency {ray2 / ray1 / 2:.0%} of linear on 2 cores"
        + ("; above 100 %: noise, the 1-actor runs slowed more)." if ray2 > 2 * ray1 else ")."),
        f"- Ray, 1 actor / local engine, 1 thread: **{ray1 / local1:.2f}x**. Not all of it is"
        " Ray's overhead: the local engine reads and detects the next image in a second"
        " thread (util.prefetch), so with `--threads 1` it still uses up to two cores, while"
        " an actor of one CPU does one image at a time.",
        f"- Ray, 2 actors / local engine, all cores: **{ray2 / local2:.2f}x** "
        "(one process per core against one process of 2 threads).",
        f"- Per-core throughput (Ray, 2 actors / 2): **{per_core:.2f} images/s per core**.",
        f"- Local engine, 2 threads / 1 thread: {local2 / local1:.2f}x (a second onnxruntime"
        " thread adds little where the read-ahead thread already keeps both cores busy).",
        "",
        "## Where one image's time goes (local engine, 1 thread, median ms)",
        "",
        f"Median image {split['megapixels']:.2f} MP, {split['faces per image']:.2f} faces per "
        "image; flip on (the default for images), detection in 4 quarter turns.",
        "",
        "| decode (JPEG -> RGB) | detect | landmarks | sum |",
        "| --- | --- | --- | --- |",
        f"| {split['decode']:.1f} | {split['detect']:.1f} | {split['landmarks']:.1f} "
        f"| {stages:.1f} |",
        "",
        "## Projection: 10 million images",
        "",
        f"At the measured per-core rate r = {per_core:.2f} images/s (this machine, busy):",
        "",
        f"- core-hours = 10,000,000 / r / 3600 = 10,000,000 / {per_core:.2f} / 3600 "
        f"= **{core_hours:,.0f} core-hours**;",
    ]
    for cores in (64, 256, 1024):
        lines.append(
            f"- on {cores} cores: {core_hours:,.0f} / {cores} = **{core_hours / cores:,.1f} h** "
            f"({cores * per_core:,.0f} images/s in all);"
        )
    hours24 = TEN_MILLION / per_core / (24 * 3600)
    lines += [
        f"- to finish in 24 h: 10,000,000 / (r x 86,400) = **{hours24:,.0f} cores**.",
        "",
        "An idle core of a current server runs these models several times faster than this",
        "busy one (the README's speed figures, measured on a quieter run: 5.3 ms detection",
        "per frame, 8.3 ms int8 landmarks per face view on one thread), so these counts are",
        "an upper bound.",
        "",
        "Where the bottleneck moves as the cluster grows:",
        "",
        f"- **Compute (now)**: detection and landmarks are {models_ms:.0f}"
        f" of {stages:.0f} ms per image; each actor is CPU-bound and actors scale with cores"
        " (no shared state; the scheduler sends only paths, a few bytes per image).",
        f"- **Decoding**: {split['decode']:.1f} ms here for {split['megapixels']:.2f} MP "
        f"images; it grows with pixels: a 12 MP JPEG took {split['decode 12 MP']:.0f} ms "
        "to decode in the same run, as much as the models, so a dataset of big photos is "
        "decode-bound (remedy: decode at reduced size, JPEG draft mode, since BlazeFace "
        "sees 256x256 anyway).",
        f"- **I/O**: at {split['kilobytes']:.0f} kB per JPEG (the median here), 1024 cores "
        f"at {per_core:.1f} images/s read "
        f"{1024 * per_core * split['kilobytes'] / 1e3:,.0f} MB/s in all "
        f"(at 3x faster cores, {3 * 1024 * per_core * split['kilobytes'] / 1e3:,.0f} MB/s;"
        " 12 MP photos are ~20x larger): a shared NFS "
        "saturates first; an object store (s3://, read by each actor) scales, but each read "
        "waits a round trip (~20-50 ms), so an actor should read ahead of its compute "
        "(several tasks in flight per actor) once that latency nears the compute time.",
        "- **The driver**: it receives one record (~3 kB of JSON) per image and writes one "
        "file; at 10,000 images/s that is ~30 MB/s of JSON parsing and writing on one core, "
        "the next limit past ~2,000-4,000 cores; beyond it, write Parquet from the actors "
        "(Dataset.write_parquet) instead of through the driver.",
        "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
