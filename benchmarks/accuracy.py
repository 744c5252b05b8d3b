"""Accuracy: every system end to end from the whole image with its own detector, on the
same annotated images, the annotated face matched with training.evaluate.match_annotated,
metrics from training.evaluate.summarise. Each of our models runs at fp32 and, when its
NAME.int8.onnx is there, at int8.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmarks.common import Setup, make_aligner, make_detector, rel
from training.evaluate import (
    TABLE_HEADER,
    format_row,
    load_annotated,
    match_annotated,
    plot_ced,
    summarise,
)
from util.landmarks import box_size, inter_ocular, nme

if TYPE_CHECKING:
    from benchmarks.peers import DlibPeer, MediaPipePeer
    from util.aligner import FaceAligner

# One face as a system gives it: (bbox, (68, 2) points, (68,) z or None).
Result = tuple[np.ndarray, np.ndarray, np.ndarray | None]


@dataclass
class System:
    """One row of the accuracy table: a name, how it runs, what to say about it."""

    name: str
    run: Callable[[np.ndarray], list[Result]]  # on an RGB image
    detector: str
    note: str = ""


def aligner_runner(aligner: FaceAligner) -> Callable[[np.ndarray], list[Result]]:
    def run(image: np.ndarray) -> list[Result]:
        return [
            (f.bbox, f.landmarks, None if f.landmarks_3d is None else f.landmarks_3d[:, 2])
            for f in aligner.align(image)
        ]

    return run


def peer_runner(peer: DlibPeer | MediaPipePeer) -> Callable[[np.ndarray], list[Result]]:
    def run(image: np.ndarray) -> list[Result]:
        return [(bbox, points, None) for bbox, points in peer.landmarks(image)]

    return run


def accuracy_systems(setup: Setup, args: argparse.Namespace) -> list[System]:
    from benchmarks.peers import DlibPeer, MediaPipePeer, PeerUnavailable

    notes = setup.notes
    systems = []
    shipped = setup.shipped[0] if setup.ours_2d else None
    for precision, model_2d, model_depth in setup.ours():
        # The CLI's defaults: --flip auto on images, off on video (the --flip trade-off
        # through the command line: benchmarks/flip_tradeoff.py).
        for flip, when in ((None, "images"), (False, "video")):
            aligner = make_aligner(setup, model_2d, model_depth, flip=flip)
            depth = f" + {Path(model_depth).name}" if model_depth else ""
            use = f"the CLI's default for {when}" if precision == shipped else f"{when} settings"
            systems.append(
                System(
                    f"ours {precision}{', flip auto' if flip is None else ''}",
                    aligner_runner(aligner),
                    "BlazeFace",
                    f"{rel(model_2d)}{depth}; {use}",
                )
            )
    if setup.fan2d is not None:
        aligner = make_aligner(setup, setup.fan2d, setup.fan_depth)
        systems.append(
            System(
                "FAN original (2DFAN-4)",
                aligner_runner(aligner),
                "BlazeFace",
                "FAN's own crop from a BlazeFace box is estimated (crop scale 2.0, see "
                "util/landmark_stage.py ORIGINAL_FAN_SPEC); FAN shipped with an SFD detector"
                + (
                    "; depth sign and scale as util/depth.py ORIGINAL_DEPTH_SPEC (unverified)"
                    if setup.fan_depth is not None
                    else ""
                ),
            )
        )
    elif setup.fan_depth is not None:
        notes.add(
            "--fan-depth without --fan2d: FAN depth is timed, but its accuracy is "
            "measured only on FAN's own 2D points and crop (give --fan2d too)"
        )
    detector = make_detector(setup)
    try:
        hog = DlibPeer("hog", upsample=args.dlib_upsample)
        systems.append(
            System(
                "dlib (HOG detector)",
                peer_runner(hog),
                f"dlib HOG, upsampled {args.dlib_upsample}x",
                "dlib's model was trained on iBUG 300-W; whether its training images "
                "include these HELEN test images is not checked here",
            )
        )
        systems.append(
            System(
                "dlib (our BlazeFace boxes)",
                peer_runner(DlibPeer(detector)),
                "BlazeFace",
                "dlib's predictor was trained from its HOG detector's boxes (tighter, lower); "
                "our BlazeFace box is given to it unchanged",
            )
        )
    except PeerUnavailable as exc:
        notes.add(f"dlib skipped: {exc}")
    try:
        systems.append(
            System(
                "MediaPipe face mesh -> 68",
                peer_runner(MediaPipePeer(detector, threads=2)),
                "BlazeFace",
            )
        )
    except PeerUnavailable as exc:
        notes.add(f"MediaPipe face mesh skipped: {exc}")
    return systems


# --------------------------------------------------------------------------- accuracy


def run_accuracy(setup: Setup, args: argparse.Namespace) -> dict:
    from tqdm import tqdm

    from training.depth_labels import DEFAULT_PRIOR, depth_labels
    from training.evaluate_depth import z_error
    from util.io import read_image
    from util.shape_prior import ShapePrior

    samples = load_annotated(args.data)
    if args.limit:
        samples = samples[: args.limit]
    if not samples:
        setup.notes.add(f"accuracy skipped: no annotated images in {args.data}")
        return {}
    systems = accuracy_systems(setup, args)
    prior = ShapePrior.load(DEFAULT_PRIOR) if DEFAULT_PRIOR.is_file() else None
    state = {s.name: {"io": [], "box": [], "misses": 0, "z": [], "seconds": 0.0} for s in systems}
    z_baseline: list[float] = []
    for sample in tqdm(samples, desc="accuracy", unit="img"):
        image = read_image(sample.image)
        io_norm, box_norm = inter_ocular(sample.points), box_size(sample.points)
        reference = depth_labels(prior, sample.points) if prior is not None else None
        if reference is not None:
            z_baseline.append(z_error(np.zeros(68), reference, box_norm))
        for system in systems:
            record = state[system.name]
            start = time.perf_counter()
            results = system.run(image)
            record["seconds"] += time.perf_counter() - start
            index = match_annotated([r[0] for r in results], sample.points)
            if index is None:
                record["misses"] += 1
                continue
            _, points, z = results[index]
            record["io"].append(nme(points, sample.points, io_norm))
            record["box"].append(nme(points, sample.points, box_norm))
            if z is not None and reference is not None:
                record["z"].append(z_error(z, reference, box_norm))
    out = {"data": str(args.data), "images": len(samples), "systems": []}
    for system in systems:
        record = state[system.name]
        metrics = summarise(record["io"], record["box"], record["misses"])
        out["systems"].append(
            {
                "name": system.name,
                "detector": system.detector,
                "note": system.note,
                "metrics": metrics,
                "errors_io": record["io"],
                "z_error_mean": float(np.mean(record["z"])) if record["z"] else None,
                "z_error_median": float(np.median(record["z"])) if record["z"] else None,
                "seconds_per_image": record["seconds"] / len(samples),
            }
        )
    if z_baseline:
        out["z_baseline_mean"] = float(np.mean(z_baseline))
        out["z_baseline_median"] = float(np.median(z_baseline))
    print(TABLE_HEADER)
    for entry in out["systems"]:
        print(format_row(entry["name"][:28], entry["metrics"]))
    curves = {e["name"]: np.asarray(e["errors_io"]) for e in out["systems"] if e["errors_io"]}
    ced_path = args.out / "ced.png"
    title = f"CED, end to end, {Path(args.data).name} ({len(samples)} images)"
    if curves and plot_ced(curves, ced_path, title):
        out["ced"] = ced_path.name
    else:
        setup.notes.add("CED plot not written (matplotlib not installed)")
    return out
