"""Build the 3D landmark shape prior from AFLW2000-3D shapes, evaluate it, and save it.

Usage (from the repository root):

    python -m tools.build_shape_prior            # evaluate on a split, write models/shape_prior.npz
    python -m tools.build_shape_prior --no-save  # evaluate only

Evaluation: the prior is built on the first ``--train`` shapes and tested on the rest. Each
test face is fitted from its own x, y only; the error is the mean |z_fit - z_true| over the
68 points (both zero-mean per face) divided by the face's box size (square root of the 2D
landmark box area), averaged over faces. It is compared with predicting z = 0, and repeated
with Gaussian 2D noise whose mean point displacement is ``--noise`` of the box size (as a
2D landmark model would err). The shipped prior is then built on all shapes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from training.paths import DATA_ROOT, MODELS_DIR
from util.shape_prior import ShapePrior, build_prior, fit_to_2d

DEFAULT_DATA = DATA_ROOT / "aflw2000_3d_shapes.npy"
DEFAULT_OUT = MODELS_DIR / "shape_prior.npz"


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
    shapes: np.ndarray, train: int, regulariser: float, noise: float, seed: int, variance: float
) -> None:
    prior = build_prior(shapes[:train], variance=variance)
    test = shapes[train:]
    box = box_sizes(test)
    z_true = test[..., 2] - test[..., 2].mean(axis=1, keepdims=True)
    zero = np.abs(z_true).mean(axis=1) / box
    print(
        f"split: prior on shapes[:{train}] ({prior.num_components} components), "
        f"test on the other {len(test)}; regulariser {regulariser}"
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--train", type=int, default=1500, help="shapes in the evaluation prior")
    parser.add_argument("--variance", type=float, default=0.97, help="PCA variance to keep")
    parser.add_argument("--regulariser", type=float, default=1.0)
    parser.add_argument("--noise", type=float, default=0.02, help="2D noise, fraction of box")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-save", action="store_true", help="evaluate only")
    args = parser.parse_args(argv)

    shapes = np.load(args.data).astype(np.float64)
    print(f"{args.data}: {shapes.shape}")
    evaluate(shapes, args.train, args.regulariser, args.noise, args.seed, args.variance)
    if not args.no_save:
        prior = build_prior(shapes, variance=args.variance)
        prior.save(args.out)
        print(
            f"wrote {args.out} ({prior.num_components} components from all "
            f"{len(shapes)} shapes + mirrors, {args.out.stat().st_size} bytes)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
