"""One reproducible report of accuracy and speed: our face alignment against its peers.

    python -m benchmarks.run                       # full run, writes benchmarks/results/
    python -m benchmarks.run --quick               # smoke run: 5 images, few repetitions
    python -m benchmarks.run --fan2d 2DFAN-4.onnx --fan-depth depth_estimation.onnx
    python -m benchmarks.run --skip-speed --out /tmp/bench    # accuracy only
    python -m benchmarks.run --targets             # issue 11's three speed targets only

--targets times exactly what issue 11 sets targets for, and nothing else (no accuracy,
no peers, no depth): the landmark step of ours (fp32, int8) and FAN-4 (fp32, int8) on 1
thread and their ratios; video 640x480, one face, 2D, 2 threads; a folder of 1000 images
with flip on 2 threads, with its RSS along the run. It prints each against its target
and writes OUT/report.md and OUT/report.json (OUT: benchmarks/results/targets).

Peers are optional installs (benchmarks/requirements.txt); a peer that is not installed
is skipped with a note in the report:
  - dlib's 68-point shape predictor, with dlib's HOG detector and from our BlazeFace boxes
  - MediaPipe's face mesh (468 points mapped to the 68 iBUG points), on our BlazeFace
    detections, run by ai-edge-litert
  - the FAN-4 architecture (random weights, built and exported here; timing only)
  - the original FAN ONNX files, when given with --fan2d / --fan-depth

Each of our models runs at fp32 and, when NAME.int8.onnx sits beside it, at int8; the
FAN-4 architecture too (quantized here by training/quantize.py), all in the same rounds.

  benchmarks/accuracy.py  end to end on annotated images (default ../shared/data/300w/val)
  benchmarks/speed.py     per-stage medians, landmark-step ratios, video fps, folder
  benchmarks/report.py    report.md from the raw numbers
  benchmarks/common.py    paths, targets, the models of a run

Writes OUT/report.md, OUT/ced.png and OUT/report.json (raw numbers).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.accuracy import run_accuracy
from benchmarks.common import (
    DEFAULT_CACHE,
    DEFAULT_DATA,
    DEFAULT_OUT,
    REPO,
    model_row,
    resolve_setup,
)
from benchmarks.report import machine_info, target_summary, write_report
from benchmarks.speed import folder_worker, run_speed, video_worker


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, with --quick's smaller defaults filled in."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="annotated images (NAME.jpg + NAME.pts)"
    )
    parser.add_argument("--model-2d", default=None, help="our 2D model (default: shipped)")
    parser.add_argument("--model-depth", default=None, help="our depth model (default: shipped)")
    parser.add_argument("--detector", default=None, help="BlazeFace ONNX (default: shipped)")
    parser.add_argument("--fan2d", default=None, metavar="PATH", help="original 2DFAN-4.onnx")
    parser.add_argument(
        "--fan-depth",
        default=None,
        metavar="PATH",
        help="original FAN depth ONNX (depth_estimation.onnx)",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="folder for report.md, ced.png, report.json"
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=DEFAULT_CACHE,
        help="where the FAN-4 ONNX is built (outside git)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 5 images, 3 rounds, 30 frames, 20 folder images",
    )
    parser.add_argument(
        "--targets",
        action="store_true",
        help="only issue 11's speed targets (landmark step 1 thread, video and folder on "
        "2 threads); implies --skip-accuracy",
    )
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--limit", type=int, default=None, help="accuracy: first N images")
    parser.add_argument("--reps", type=int, default=None, help="timing rounds (default 30)")
    parser.add_argument(
        "--slow-reps", type=int, default=None, help="rounds for FAN-size models (default 10)"
    )
    parser.add_argument("--threads", default="1,2", help="thread counts to time, e.g. 1,2")
    parser.add_argument("--video-frames", type=int, default=None, help="default 300")
    parser.add_argument("--folder-images", type=int, default=None, help="default 1000")
    parser.add_argument(
        "--dlib-upsample",
        type=int,
        default=1,
        help="dlib HOG detector upsampling (dlib's example uses 1)",
    )
    parser.add_argument(
        "--prefetch",
        type=int,
        default=None,
        help="folder: images read and detected ahead of the landmark model "
        "(default: the tool's, util.aligner.PREFETCH_IMAGES; 0 for none)",
    )
    parser.add_argument(
        "--folder-workers",
        type=int,
        default=None,
        help="folder: images run side by side (default: the CLI's choice, "
        "util.cli.folder_threads; 1 = read ahead, the model on all threads)",
    )
    parser.add_argument(
        "--folder-flip",
        choices=["auto", "on", "off"],
        default="auto",
        help="folder: the CLI's --flip (default auto, the CLI's for images)",
    )
    parser.add_argument(
        "--folder-worker",
        type=Path,
        default=None,
        help="only the folder run, on this folder's images (prints one JSON line)",
    )
    parser.add_argument(
        "--video-worker",
        type=Path,
        default=None,
        help="only the video run, on this video file (prints one JSON line)",
    )
    parser.add_argument(
        "--video-depth", action="store_true", help="--video-worker: with the depth stage"
    )
    args = parser.parse_args(argv)
    args.threads = [int(t) for t in str(args.threads).split(",") if t.strip()]
    if args.targets:
        args.skip_accuracy = True
        if args.out == DEFAULT_OUT:  # keep the full report where it is
            args.out = DEFAULT_OUT / "targets"
    quick = args.quick
    defaults = {
        "limit": 5 if quick else None,
        "reps": 3 if quick else 30,
        "slow_reps": 2 if quick else 10,
        "video_frames": 30 if quick else 300,
        "folder_images": 20 if quick else 1000,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.folder_worker is not None:
        return folder_worker(args.folder_worker, args)
    if args.video_worker is not None:
        return video_worker(args.video_worker, args)
    started = time.perf_counter()
    info = machine_info()
    setup = resolve_setup(args)
    args.out.mkdir(parents=True, exist_ok=True)
    accuracy = {} if args.skip_accuracy else run_accuracy(setup, args)
    speed = {} if args.skip_speed else run_speed(setup, args)
    models = [
        model_row("ours 2D", setup.model_2d),
        model_row("ours 2D int8", setup.model_2d_int8),
        model_row("ours depth", setup.model_depth),
        model_row("ours depth int8", setup.model_depth_int8),
        model_row("BlazeFace detector", setup.detector or _default_detector()),
        model_row("FAN original 2D", setup.fan2d),
        model_row("FAN original depth", setup.fan_depth),
    ]
    fan4 = speed.get("fan4", {}).get("path") if speed else None
    if fan4:
        models.append(model_row("FAN-4 architecture (random weights)", REPO / fan4))
    fan4_int8 = speed.get("fan4", {}).get("int8_path") if speed else None
    if fan4_int8:
        models.append(model_row("FAN-4 architecture int8", REPO / fan4_int8))
    models = [m for m in models if m["path"] is not None]
    report = args.out / "report.md"
    write_report(report, info, models, accuracy, speed, setup.notes, argv)
    raw = {
        "machine": info,
        "argv": argv,
        "models": models,
        "accuracy": {k: v for k, v in accuracy.items()},
        "speed": speed,
        "notes": setup.notes.lines,
        "seconds": time.perf_counter() - started,
    }
    (args.out / "report.json").write_text(json.dumps(raw, indent=1, default=_json_default))
    if speed:
        print("\n".join(target_summary(speed)))
    print(f"report: {report} ({raw['seconds']:.0f} s)")
    return 0


def _default_detector() -> Path:
    from util.detect import default_detector_path

    return default_detector_path()


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


if __name__ == "__main__":
    sys.exit(main())
