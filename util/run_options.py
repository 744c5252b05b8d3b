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


def flip_setting(value: str) -> bool | None:
    """``--flip``'s value as FaceAligner's ``flip``: "auto" None (the running mode's
    default: the mirror policy for images, off for video), "on" True, "off" False."""
    return {"auto": None, "on": True, "off": False}[value]


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
        "flip": flip_setting(args.flip),
        "running_mode": "image" if args.video is None else "video",
        "max_pixels": args.max_pixels,
        "precision": args.precision,
    }


def describe(aligner: FaceAligner) -> str:
    """The info line naming the runtime and what each stage runs."""
    return f"runtime: {aligner.runtime}; " + "; ".join(
        f"{stage}: {_name(source)}" for stage, source in aligner.sources().items()
    )


# How each option is named in the warnings (its first flag, as --help lists it).
FLAGS = {
    "input": "-i", "smooth": "--smooth", "redetect": "--redetect",
    "frames_in_flight": "--frames-in-flight", "pts": "--pts", "heatmaps": "--heatmaps",
    "benchmark": "-b", "max_pixels": "--max-pixels", "savepath": "-s", "json": "--json",
    "no_boxes": "--no-boxes", "crops": "--crops", "crop_template": "--crop-template",
    "crop_size": "--crop-size", "benchmark_count": "-bc", "model_depth": "--model-depth",
    "draw_pose": "--draw-pose", "model_3d": "--model-3d", "env_id": "-e/--env_id",
    "threads": "--threads",
}  # fmt: skip


def ignored_options(
    args: argparse.Namespace, given: set[str], paths: list[Path] | None, runtime: str
) -> list[str]:
    """One warning per option that this call ignores (``given``: the options typed;
    ``runtime``: the one in use): a table of (when, options, why), first match wins."""
    images = args.video is None
    benchmark = images and args.benchmark
    nothing_drawn = images and args.json is not None and args.savepath is None
    no_3d = not args.active_3d
    rules: list[tuple[bool, tuple[str, ...], str]] = [
        (images, ("smooth", "redetect", "frames_in_flight"), "it applies to video (-v) only"),
        (not images, ("input",), "-v reads the video, not images"),
        (not images, ("pts", "heatmaps", "benchmark", "max_pixels"),
         "it applies to images, not video (-v)"),
        (benchmark, ("savepath", "json", "pts", "heatmaps", "no_boxes"),
         "a benchmark (-b) writes nothing"),
        (not benchmark and nothing_drawn, ("pts", "heatmaps", "no_boxes"),
         "with --json and no -s nothing is drawn or saved"),
        (args.crops is None, ("crop_template", "crop_size"),
         "it applies to --crops, which is not given"),
        (benchmark, ("crops",), "a benchmark (-b) writes nothing"),
        (not args.benchmark, ("benchmark_count",), "it sets the runs of -b, which is not given"),
        (no_3d, ("model_depth",), "depth runs only with -3/--active-3d"),
        (no_3d, ("draw_pose",), "the head pose comes with -3/--active-3d"),
        (nothing_drawn, ("draw_pose",), "with --json and no -s nothing is drawn or saved"),
        (no_3d, ("model_3d",), "the 3D landmark model runs only with -3/--active-3d"),
        (runtime != "ailia", ("env_id",), f"it applies to the ailia runtime, not {runtime}"),
        (runtime == "ailia", ("threads",), "it applies to onnxruntime, not ailia"),
    ]  # fmt: skip
    messages, said = [], set()
    for when, dests, why in rules:
        for dest in dests:
            if when and dest in given and dest not in said:
                messages.append(f"{FLAGS[dest]} is ignored: {why}")
                said.add(dest)
    if benchmark and paths is not None and len(paths) > 1:
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
