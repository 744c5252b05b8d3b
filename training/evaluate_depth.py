"""Evaluate depth (z) end to end on annotated images: the depth network against the plain
shape-prior fit, both from the 2D points the tool predicts.

    python -m training.evaluate_depth                  # shipped models, 300w/val

The reference z of each face is the shape prior fitted to its annotated 2D points (the
way the training labels are made; 300-W has no 3D annotations). Errors are mean |z|
error over the face box size (sqrt of the annotated landmark box area), z zero-mean.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from training.depth_labels import DEFAULT_PRIOR, depth_labels
from training.evaluate import DEFAULT_DATA, load_annotated, match_annotated
from util.landmarks import box_size
from util.shape_prior import ShapePrior


def z_error(z: np.ndarray, reference: np.ndarray, size: float) -> float:
    return float(np.abs((z - z.mean()) - (reference - reference.mean())).mean() / size)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--model-2d", default=None)
    parser.add_argument("--model-depth", default=None)
    parser.add_argument("--prior", type=Path, default=DEFAULT_PRIOR)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()

    from tqdm import tqdm

    from util.aligner import FaceAligner
    from util.io import read_image

    aligner = FaceAligner(
        model_2d=args.model_2d,
        model_depth=args.model_depth,
        active_3d=True,
        runtime="onnxruntime",
        threads=args.threads,
        flip=False,  # as the published depth figures were measured (the API default is on)
    )
    prior = ShapePrior.load(args.prior)
    errors: dict[str, list[float]] = {"network": [], "shape-prior fit": [], "z = 0": []}
    misses = 0
    for sample in tqdm(load_annotated(args.data), unit="img"):
        faces = aligner.align(read_image(sample.image))
        index = match_annotated([f.bbox for f in faces], sample.points)
        if index is None:
            misses += 1
            continue
        face = faces[index]
        size = box_size(sample.points)
        reference = depth_labels(prior, sample.points)
        errors["network"].append(z_error(face.landmarks_3d[:, 2], reference, size))
        errors["shape-prior fit"].append(
            z_error(depth_labels(prior, face.landmarks), reference, size)
        )
        errors["z = 0"].append(z_error(np.zeros(68), reference, size))
    print(f"{args.data}: {len(errors['network'])} faces, {misses} misses")
    print(f"{'z from predicted 2D':<22} {'mean %':>7} {'median %':>9}")
    for name, values in errors.items():
        print(f"{name:<22} {100 * np.mean(values):>7.2f} {100 * np.median(values):>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
