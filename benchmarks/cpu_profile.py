"""Where the CPU time of a folder image or a video frame goes, by stage, as fractions.

    python -m benchmarks.cpu_profile folder              # 60 images of 300w/val, with flip
    python -m benchmarks.cpu_profile video               # 150 frames 640x480, one face
    python -m benchmarks.cpu_profile folder --limit 200 --top 30

cProfile with the calling thread's CPU time as its clock (time.thread_time), the models
on one onnxruntime thread and no read-ahead, so every stage runs in the profiled thread
and the fractions do not depend on how busy the machine is (wall-clock times do: use
them on a quiet machine only). Each function's own time is put in a stage by its name:
the model calls, image decoding, the detector's letterbox, crops, tensors, heatmap
decoding, JSON, video decoding; the rest is Python and small numpy work ("other").
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import DEFAULT_DATA, VIDEO_SOURCE

# (stage, substrings of "file:function" of the functions whose own time it gets), first
# match wins; the model calls are onnxruntime's own.
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("model (onnxruntime)", ("onnxruntime_pybind11_state.run",)),
    (
        "decoding (image, video frame)",
        (
            "{imdecode}",
            "'decode' of 'ImagingDecoder'",
            "ImagingCore",
            "tobytes",
            "'join' of",
            "cv2.VideoCapture",
            "{cvtColor}",
        ),
    ),
    ("detector letterbox", ("{resize}", "{copyMakeBorder}")),
    ("crop (warpAffine)", ("warpAffine",)),
    ("tensor building", ("runtime.py:", "to_batch")),
    ("heatmap decoding", ("heatmap_codec.py:", "decode.py:")),
    ("JSON", ("to_json", "json/encoder", "builtins.round")),
]


def stage_of(name: str) -> str:
    for stage, keys in STAGES:
        if any(key in name for key in keys):
            return stage
    return "other (Python, small numpy)"


def fractions(profile: cProfile.Profile) -> dict[str, float]:
    """Own CPU seconds per stage."""
    stats = pstats.Stats(profile)
    out: dict[str, float] = {}
    for key, (_, _, own, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        stage = stage_of(pstats.func_std_string(key))  # as pstats prints it
        out[stage] = out.get(stage, 0.0) + own
    return out


def profile_folder(args: argparse.Namespace) -> tuple[cProfile.Profile, int, str]:
    from util.aligner import FaceAligner
    from util.io import expand_inputs

    paths = [str(p) for p in expand_inputs([str(args.data)])][: args.limit]
    aligner = FaceAligner(runtime="onnxruntime", threads=1)  # flip on, as for images
    list(aligner.iter_paths(paths[:3], prefetch=0))  # warm-up
    profile = cProfile.Profile(timer=time.thread_time)
    faces = 0
    profile.enable()
    for _, _, found, _ in aligner.iter_paths(paths, prefetch=0):
        faces += len(found)
    profile.disable()
    return profile, len(paths), f"{len(paths)} images, {faces} faces"


def profile_video(args: argparse.Namespace) -> tuple[cProfile.Profile, int, str]:
    import cv2
    import numpy as np

    from benchmarks.speed import MovingCrop, find_face, load_source, write_video
    from util.aligner import FaceAligner
    from util.tracker import FaceTracker
    from util.video import read_frames

    aligner = FaceAligner(runtime="onnxruntime", threads=1, running_mode="video")  # as -v
    with tempfile.TemporaryDirectory(prefix="fa_profile_") as tmp:
        source = load_source(VIDEO_SOURCE)
        crop = MovingCrop(source, find_face(aligner.detector, source))
        video = write_video(crop, args.limit, Path(tmp))
        for _ in range(3):
            aligner.align(np.ascontiguousarray(crop.frame(0)))
        tracker = FaceTracker(aligner)
        capture = cv2.VideoCapture(str(video))
        profile = cProfile.Profile(timer=time.thread_time)
        done = 0
        profile.enable()
        for frame in read_frames(capture):  # no read-ahead: decoding counted here
            record = [face.to_json() for face in tracker.process(frame)]
            json.dumps({"frame": done, "faces": record})
            done += 1
        profile.disable()
        capture.release()
    return profile, done, f"{done} frames, detector on {tracker.detections}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("path", choices=("folder", "video"))
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of images")
    parser.add_argument("--limit", type=int, default=None, help="images (60) or frames (150)")
    parser.add_argument("--top", type=int, default=0, help="also print the N costliest functions")
    args = parser.parse_args(argv)
    if args.limit is None:
        args.limit = 60 if args.path == "folder" else 150
    run = profile_folder if args.path == "folder" else profile_video
    profile, count, what = run(args)
    by_stage = fractions(profile)
    total = sum(by_stage.values())
    unit = "image" if args.path == "folder" else "frame"
    print(f"{args.path}: {what}; {1000 * total / max(count, 1):.1f} ms CPU per {unit}")
    for stage, seconds in sorted(by_stage.items(), key=lambda kv: -kv[1]):
        print(f"  {stage:<28} {100 * seconds / total:5.1f} %  {1000 * seconds / count:6.2f} ms")
    if args.top:
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(args.top)
        print(text.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
