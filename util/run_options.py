"""What both engines (util/cli.py's local run and util/ray_engine.py) take from the
command line's flags: the aligner's options, the info line, the warnings for options a
call ignores, and the default input. The command line imports this module, and so does
the Ray engine, so neither imports the other.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from .paths import MODELS_DIR, SAMPLES_DIR

if TYPE_CHECKING:
    from .aligner import FaceAligner

SAMPLE_IMAGE = SAMPLES_DIR / "astronaut.png"  # the input when -i is not given


def aligner_options(args: argparse.Namespace) -> dict:
    """FaceAligner's keyword arguments from the flags, threads aside: the one place for
    them, so the Ray engine's actors get the same aligner as this process."""
    return {
        "model_2d": args.model_2d,
        "model_depth": args.model_depth,
        "model_3d": args.model_3d,
        "detector_model": args.detector,
        "active_3d": args.active_3d,
        "runtime": args.runtime,
        "env_id": args.env_id,
        "min_score": args.min_score,
        "flip": args.flip == "on" or (args.flip == "auto" and args.video is None),
        "running_mode": "image" if args.video is None else "video",
        "max_pixels": args.max_pixels,
        "precision": args.precision,
    }


def describe(aligner: FaceAligner) -> str:
    """The info line naming the runtime and what each stage runs."""
    return f"runtime: {aligner.runtime}; " + "; ".join(
        f"{stage}: {_name(source)}" for stage, source in aligner.sources().items()
    )


def ignored_options(
    args: argparse.Namespace, given: set[str], paths: list[Path] | None, runtime: str
) -> list[str]:
    """One warning per option that this call ignores (``given``: the options typed;
    ``runtime``: the one in use)."""
    images = args.video is None
    nothing_drawn = images and args.json is not None and args.savepath is None
    ignored: list[tuple[str, str]] = []
    if images:
        for dest, flag in (
            ("smooth", "--smooth"),
            ("redetect", "--redetect"),
            ("frames_in_flight", "--frames-in-flight"),
        ):
            if dest in given:
                ignored.append((flag, "it applies to video (-v) only"))
    else:
        if "input" in given:
            ignored.append(("-i", "-v reads the video, not images"))
        for dest, flag in (("pts", "--pts"), ("heatmaps", "--heatmaps")):
            if dest in given:
                ignored.append((flag, "it applies to images, not video (-v)"))
        for dest, flag in (("benchmark", "-b"), ("max_pixels", "--max-pixels")):
            if dest in given:
                ignored.append((flag, "it applies to images, not video (-v)"))
    if images and args.benchmark:
        for dest, flag in (("savepath", "-s"), ("json", "--json"), ("pts", "--pts")):
            if dest in given:
                ignored.append((flag, "a benchmark (-b) writes nothing"))
        for dest, flag in (("heatmaps", "--heatmaps"), ("no_boxes", "--no-boxes")):
            if dest in given:
                ignored.append((flag, "a benchmark (-b) writes nothing"))
    elif nothing_drawn:
        for dest, flag in (
            ("pts", "--pts"),
            ("heatmaps", "--heatmaps"),
            ("no_boxes", "--no-boxes"),
        ):
            if dest in given:
                ignored.append((flag, "with --json and no -s nothing is drawn or saved"))
    for dest, flag in (("crop_template", "--crop-template"), ("crop_size", "--crop-size")):
        if dest in given and args.crops is None:
            ignored.append((flag, "it applies to --crops, which is not given"))
    if "crops" in given and images and args.benchmark:
        ignored.append(("--crops", "a benchmark (-b) writes nothing"))
    if "benchmark_count" in given and not args.benchmark:
        ignored.append(("-bc", "it sets the runs of -b, which is not given"))
    if "model_depth" in given and not args.active_3d:
        ignored.append(("--model-depth", "depth runs only with -3/--active-3d"))
    if "draw_pose" in given and not args.active_3d:
        ignored.append(("--draw-pose", "the head pose comes with -3/--active-3d"))
    elif "draw_pose" in given and nothing_drawn:
        ignored.append(("--draw-pose", "with --json and no -s nothing is drawn or saved"))
    if "model_3d" in given and not args.active_3d:
        ignored.append(("--model-3d", "the 3D landmark model runs only with -3/--active-3d"))
    if "env_id" in given and runtime != "ailia":
        ignored.append(("-e/--env_id", f"it applies to the ailia runtime, not {runtime}"))
    if "threads" in given and runtime == "ailia":
        ignored.append(("--threads", "it applies to onnxruntime, not ailia"))
    messages = [f"{flag} is ignored: {why}" for flag, why in ignored]
    if images and args.benchmark and paths is not None and len(paths) > 1:
        messages.append(
            f"-b times only the first input, {paths[0]} ({len(paths) - 1} more left out)"
        )
    return messages


def _name(path: str | Path) -> str:
    """A shipped model's path as models/NAME, any other as given."""
    try:
        return str(Path(path).resolve().relative_to(MODELS_DIR.parent.resolve()))
    except ValueError:
        return str(path)
