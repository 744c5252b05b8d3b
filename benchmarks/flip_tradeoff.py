"""Accuracy against time for each ``--flip`` setting, through the command line.

    python -m benchmarks.flip_tradeoff                 # 300w/val, 3 rounds
    python -m benchmarks.flip_tradeoff --rounds 1 --limit 20   # quicker

Each round runs ``face_alignment.py -i FOLDER --json OUT --flip MODE -q`` once per setting,
the settings taking turns so that a slow spell of the machine falls on all of them; the
time of a setting is its median wall time over the rounds (the whole command: start,
models, the folder), and its ratio to ``--flip off``'s is what the README gives beside
the images/s, because ratios hold across machines where absolute times do not. The NME
(inter-ocular, the annotated face of each image, as training/evaluate.py matches it) is
read from the records the same runs wrote: the figure and the time are of one run.

Writes benchmarks/results/flip/report.json and report.md (tools/readme_results reads the
JSON).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.report import machine_info
from training.evaluate import DEFAULT_DATA, load_annotated, match_annotated
from training.paths import REPO
from util.landmarks import inter_ocular, nme

MODES = ("off", "auto", "on")  # the order of each round
OUT = REPO / "benchmarks" / "results" / "flip"


def run_mode(images: list[Path], mode: str, out: Path, threads: int) -> float:
    """Wall seconds of one command-line run over ``images`` with ``--flip mode``."""
    command = [sys.executable, str(REPO / "face_alignment.py"), "-i", *map(str, images),
               "--json", str(out), "--flip", mode, "-q", "--threads", str(threads)]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def errors(records: Path, samples: list) -> tuple[list[float], int]:
    """(NME of each annotated face found, number missed) from a run's records."""
    by_image = {}
    with open(records, encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            by_image[Path(record["image"]).resolve()] = record.get("faces") or []
    found, missed = [], 0
    for sample in samples:
        faces = by_image.get(Path(sample.image).resolve(), [])
        k = match_annotated([np.asarray(f["bbox"]) for f in faces], sample.points)
        if k is None:
            missed += 1
            continue
        points = np.asarray(faces[k]["landmarks"], np.float64)
        found.append(nme(points, sample.points, inter_ocular(sample.points)))
    return found, missed


def markdown(report: dict) -> str:
    lines = [
        "| `--flip` | views read per face | NME | images/s | time against `--flip off` |",
        "| --- | --- | --- | --- | --- |",
    ]
    views = {
        "off": "one (two for a face cropped again)",
        "auto": "two: the mirror view by `fan2d_fast`; a face cropped again near its "
        "first box, its first crop's view and its new crop's mirror",
        "on": "two (three for a face cropped again)",
    }
    off = report["modes"]["off"]["seconds"]
    for mode in ("auto", "on", "off"):
        row = report["modes"][mode]
        default = " (default for images)" if mode == "auto" else ""
        default = " (default for video)" if mode == "off" else default
        lines.append(
            f"| {mode}{default} | {views[mode]} | {100 * row['nme_mean']:.2f} % | "
            f"{row['images_per_s']:.1f} | {row['seconds'] / off:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, help="first N images only")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    samples = load_annotated(args.data)[: args.limit]
    if not samples:
        parser.error(f"{args.data}: no annotated images")
    images = [s.image for s in samples]
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    result: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.rounds):
            for mode in MODES:
                records = Path(tmp) / f"{mode}.jsonl"
                times[mode].append(run_mode(images, mode, records, args.threads))
                print(f"round {k + 1}/{args.rounds}, --flip {mode}: {times[mode][-1]:.2f} s",
                      flush=True)  # fmt: skip
                if k == 0:
                    found, missed = errors(records, samples)
                    result[mode] = {"nme_mean": float(np.mean(found)), "missed": missed,
                                    "faces": len(samples)}  # fmt: skip
    for mode in MODES:
        seconds = statistics.median(times[mode])
        result[mode] |= {"seconds": seconds, "rounds": times[mode],
                         "images_per_s": len(images) / seconds}  # fmt: skip
    report = {
        "machine": machine_info() | {"threads": args.threads},
        "data": str(args.data),
        "images": len(images),
        "command": " ".join(["python -m benchmarks.flip_tradeoff", *(argv or sys.argv[1:])]),
        "modes": result,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    table = markdown(report)
    (args.out / "report.md").write_text(table + "\n", encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
