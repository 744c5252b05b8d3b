"""Build the 3D landmark shape prior from AFLW2000-3D shapes, evaluate it, and save it.

Usage (from the repository root):

    python -m tools.build_shape_prior            # evaluate, write models/shape_prior.npz
    python -m tools.build_shape_prior --no-save  # evaluate only

The shapes are the AFLW2000-3D dev half's (the sealed half is not in the file). The
shipped prior is built from the training faces of training/aflw.py's split only, so the
validation faces measure the 3D output honestly. Evaluation: the prior of the training
faces, tested on the validation faces. Each
test face is fitted from its own x, y only; the error is the mean |z_fit - z_true| over the
68 points (both zero-mean per face) divided by the face's box size (square root of the 2D
landmark box area), averaged over faces. It is compared with predicting z = 0, and repeated
with Gaussian 2D noise whose mean point displacement is ``--noise`` of the box size (as a
2D landmark model would err). The shipped prior is then built on all shapes.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from training.aflw import AFLW_SHAPES, AflwLabels, load_labels, split_mask
from training.paths import SHAPE_PRIOR_PATH
from util.head_pose import HeadPose, pose_frame_from_fits
from util.shape_prior import ShapePrior, build_prior, fit_to_2d

DEFAULT_DATA = AFLW_SHAPES
DEFAULT_OUT = SHAPE_PRIOR_PATH


def box_sizes(points: np.ndarray) -> np.ndarray:
    """Per-face sqrt of the 2D landmark box area, for ``(N, 68, >=2)`` points."""
    span = points[..., :2].max(axis=-2) - points[..., :2].min(axis=-2)
    return np.sqrt(np.maximum(span[..., 0] * span[..., 1], 1e-12))


def z_errors(
    prior: ShapePrior,
    points_2d: np.ndarray,
    z_true: np.ndarray,
    box: np.ndarray,
    regulariser: float,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-face z error / box, per-face 2D residual / box, and ms per face of the fit."""
    start = time.perf_counter()
    fit = fit_to_2d(prior, points_2d, regulariser=regulariser)
    ms = (time.perf_counter() - start) * 1e3 / len(points_2d)
    z_true = z_true - z_true.mean(axis=1, keepdims=True)
    err = np.abs(fit.points[..., 2] - z_true).mean(axis=1) / box
    return err, np.asarray(fit.residual) / box, ms


def yaw_proxy(shapes: np.ndarray) -> np.ndarray:
    """Rough |yaw| in degrees from the 3D jaw corners (0, 16): angle of their line in x-z."""
    d = shapes[:, 16] - shapes[:, 0]
    return np.degrees(np.abs(np.arctan2(d[:, 2], d[:, 0])))


def evaluate(
    train: np.ndarray,
    test: np.ndarray,
    regulariser: float,
    noise: float,
    seed: int,
    variance: float,
) -> None:
    prior = build_prior(train, variance=variance)
    box = box_sizes(test)
    z_true = test[..., 2] - test[..., 2].mean(axis=1, keepdims=True)
    zero = np.abs(z_true).mean(axis=1) / box
    print(
        f"split: prior on the {len(train)} training shapes ({prior.num_components} "
        f"components), test on the {len(test)} validation shapes; regulariser {regulariser}"
    )
    print(f"  z = 0 baseline          : mean {zero.mean():.2%}  median {np.median(zero):.2%}")
    err, res, ms = z_errors(prior, test[..., :2], test[..., 2], box, regulariser)
    print(
        f"  fit, exact 2D           : mean {err.mean():.2%}  median {np.median(err):.2%}  "
        f"p90 {np.percentile(err, 90):.2%}  (2D residual {np.median(res):.2%}, "
        f"{ms:.2f} ms/face batched)"
    )
    yaw = yaw_proxy(test)
    for low, high in ((0, 30), (30, 60), (60, 180)):
        sel = (yaw >= low) & (yaw < high)
        if sel.any():
            print(
                f"    |yaw| {low:2d}-{high:2d} deg (n={sel.sum():3d}): mean {err[sel].mean():.2%}"
                f"  (z = 0: {zero[sel].mean():.2%})"
            )
    rng = np.random.default_rng(seed)
    # Isotropic 2D Gaussian: mean displacement = sigma * sqrt(pi / 2).
    sigma = noise * box / np.sqrt(np.pi / 2)
    noisy = test[..., :2] + rng.normal(size=test[..., :2].shape) * sigma[:, None, None]
    for reg in sorted({regulariser, 3.0}):
        err, res, _ = z_errors(prior, noisy, test[..., 2], box, reg)
        print(
            f"  fit, 2D noise {noise:.0%} (reg {reg:g}): mean {err.mean():.2%}  "
            f"median {np.median(err):.2%}  p90 {np.percentile(err, 90):.2%}  "
            f"(2D residual {np.median(res):.2%})"
        )


# The runtime's shape-fit regulariser (training/train_2d.py SHAPE_FIT_REGULARISER): the
# pose frame is measured with the fit the tool runs.
POSE_FIT_REGULARISER = 10.0


def with_pose_frame(prior: ShapePrior, labels: AflwLabels) -> ShapePrior:
    """The prior with its pose frame (util.head_pose), measured on these faces: the fit
    to their true x, y against their true pose. Prints the pose error it leaves."""
    fit = fit_to_2d(prior, labels.pt3d[..., :2], regulariser=POSE_FIT_REGULARISER)
    # Pose_Para is (pitch, yaw, roll); the head_pose functions take (yaw, pitch, roll).
    angles = labels.pose[:, [1, 0, 2]]
    frame = pose_frame_from_fits(fit.rotation, angles)
    prior = dataclasses.replace(prior, pose_frame=frame)
    found = np.array([
        [getattr(p, k) for k in ("yaw", "pitch", "roll")]
        for p in (HeadPose.from_fit(r, frame) for r in fit.rotation)
    ])  # fmt: skip
    error = np.abs((found - angles + 180) % 360 - 180).mean(0)
    print(f"pose frame from {len(labels)} faces; the fit to their true x, y errs "
          f"yaw {error[0]:.2f}, pitch {error[1]:.2f}, roll {error[2]:.2f} deg")  # fmt: skip
    return prior


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--variance", type=float, default=0.97, help="PCA variance to keep")
    parser.add_argument("--regulariser", type=float, default=1.0)
    parser.add_argument("--noise", type=float, default=0.02, help="2D noise, fraction of box")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-save", action="store_true", help="evaluate only")
    args = parser.parse_args(argv)

    shapes = np.load(args.data).astype(np.float64)
    print(f"{args.data}: {shapes.shape}")
    val = split_mask(load_labels())
    if len(val) != len(shapes):
        raise SystemExit(f"{args.data}: {len(shapes)} shapes, but the labels hold {len(val)}")
    train = shapes[~val]
    evaluate(train, shapes[val], args.regulariser, args.noise, args.seed, args.variance)
    if not args.no_save:
        prior = build_prior(train, variance=args.variance)
        prior = with_pose_frame(prior, load_labels().take(np.flatnonzero(~val)))
        prior.save(args.out)
        print(
            f"wrote {args.out} ({prior.num_components} components from the {len(train)} "
            f"training shapes + mirrors, {args.out.stat().st_size} bytes)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
