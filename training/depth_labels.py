"""Depth (z) labels for 2D-annotated training faces, by fitting the 3D shape prior.

We have no 3D-annotated images: the z label of each landmark is the depth of the shape
prior (``models/shape_prior.npz``) fitted to the face's 2D landmarks. z is in the pixels
of the input points, zero-mean per face, larger z = closer to the camera (see
``util/shape_prior.py`` for the exact convention). The fit takes about a millisecond per
face, so labels can be computed on the fly, after any 2D augmentation (crop, scale,
rotation in the image plane, flip with the mirror permutation), on the augmented points.

CLI (from the repository root) computes the labels for every face of the 300-W train and
val folders and reports the fit residual and timing; labels are not written into the repo:

    python -m training.depth_labels [--out /tmp/depth_labels.npz]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training.paths import DATA_300W, REPO, SHAPE_PRIOR_PATH
from util.landmarks import box_size, read_pts
from util.shape_prior import ShapePrior, fit_to_2d

DEFAULT_PRIOR = SHAPE_PRIOR_PATH
DEFAULT_DATA = DATA_300W

# Human 2D annotations are noisier than exact projections: a stronger prior than the
# clean-data optimum (1.0) was better for 2 % 2D noise on held-out AFLW2000-3D shapes.
LABEL_REGULARISER = 3.0


def depth_labels(
    prior: ShapePrior,
    points_2d: np.ndarray | Sequence[np.ndarray],
    regulariser: float = LABEL_REGULARISER,
) -> np.ndarray:
    """z labels for one face ``(68, 2) -> (68,)`` or many ``(N, 68, 2)`` / list -> ``(N, 68)``.

    float32, in the pixel units of ``points_2d``, zero-mean per face, larger = closer.
    """
    pts = np.asarray(points_2d, dtype=np.float64)
    return fit_to_2d(prior, pts, regulariser=regulariser).points[..., 2].astype(np.float32)


def load_split(folder: Path) -> tuple[list[str], np.ndarray]:
    """Names and ``(N, 68, 2)`` points of every ``NAME.pts`` in ``folder``."""
    files = sorted(folder.glob("*.pts"))
    points = [read_pts(f) for f in files]
    return [f.stem for f in files], np.stack(points) if points else np.zeros((0, 68, 2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prior", type=Path, default=DEFAULT_PRIOR)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with split dirs")
    parser.add_argument("--splits", nargs="+", default=["train", "val"])
    parser.add_argument("--regulariser", type=float, default=LABEL_REGULARISER)
    parser.add_argument("--out", type=Path, help="optional .npz for the labels (not in the repo)")
    args = parser.parse_args(argv)

    if args.out is not None and args.out.resolve().is_relative_to(REPO):
        parser.error("labels are derived from research-only data: write them outside the repo")
    prior = ShapePrior.load(args.prior)
    saved: dict[str, np.ndarray] = {}
    for split in args.splits:
        names, points = load_split(args.data / split)
        if not names:
            print(f"{split}: no .pts files in {args.data / split}")
            continue
        start = time.perf_counter()
        fit = fit_to_2d(prior, points.astype(np.float64), regulariser=args.regulariser)
        batched_ms = (time.perf_counter() - start) * 1e3 / len(names)
        count = min(len(names), 100)
        start = time.perf_counter()
        for face in points[:count]:
            depth_labels(prior, face, regulariser=args.regulariser)
        single_ms = (time.perf_counter() - start) * 1e3 / count
        boxes = np.array([box_size(p) for p in points])
        res = np.asarray(fit.residual) / boxes * 100
        per_point = np.linalg.norm(fit.points[..., :2] - points, axis=-1) / boxes[:, None] * 100
        worst = np.argsort(per_point.mean(axis=0))[::-1][:5]
        z_range = np.ptp(fit.points[..., 2], axis=1) / boxes * 100
        print(
            f"{split}: {len(names)} faces; 2D fit residual (mean point distance, % of box): "
            f"median {np.median(res):.2f}  mean {res.mean():.2f}  p90 "
            f"{np.percentile(res, 90):.2f}  max {res.max():.2f} ({names[int(res.argmax())]})"
        )
        print(
            "  worst-fitting points (mean % of box): "
            + ", ".join(f"{i}: {per_point[:, i].mean():.2f}" for i in worst)
        )
        print(
            f"  z range, % of box: median {np.median(z_range):.1f}; "
            f"time: {single_ms:.2f} ms/face one at a time, {batched_ms:.3f} ms/face batched"
        )
        saved[f"{split}_names"] = np.array(names)
        saved[f"{split}_z"] = fit.points[..., 2].astype(np.float32)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.out, **saved)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
