"""How well the shape fit gives z on real 3D faces: AFLW2000-3D's shapes, by yaw bin.

    python -m training.evaluate_shape_fit
    python -m training.evaluate_3d --limit 100 --save-errors /tmp/errors.npz
    python -m training.evaluate_shape_fit --errors /tmp/errors.npz   # the model's own errors

``--active-3d`` takes z from the shape prior fitted to the 3D model's x, y (the spec's
``shape_fit_regulariser``). evaluate_3d.py measures it on turned val faces, whose true z
is itself a prior fit; here the truth is AFLW2000-3D's real shapes
(``../shared/data/aflw2000_3d_shapes.npy``), two-fold: the prior is built on one half and
fitted to the other half's x, y, as they are and with noise of the size the 3D model's
x, y error has in each bin (evaluate_3d.py's NME box; isotropic, which real errors are
not, so this is a floor for such errors, not a prediction). ``--errors`` adds the 3D
model's own errors instead: each real shape gets the x, y error of one of
evaluate_3d.py's turned val views in its yaw bin (mirrored to face the same way), so the
errors keep their correlations (at a profile the far side's points move together) and
the truth is a real 3D shape, not a prior fit (evaluate_3d.py's truth is one: its z from
the true x, y is 2.2 % off). Error: mean |z error| over the box size, both sides' z
zero-mean (AFLW2000-3D's way).

The ``--far-side`` row takes a turned face's far half from the prior fitted to its near
half (the spec's ``shape_fit_far_side``), which moves x, y too: its x, y NME over the
box size is printed below the z table, beside the x, y as they came in.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from training.paths import DATA_ROOT
from util.depth import ShapeFitDepth
from util.landmarks import MIRROR_PERMUTATION, box_size
from util.shape_prior import build_prior, fit_to_2d, fit_yaw

BINS = ((0.0, 30.0), (30.0, 60.0), (60.0, 91.0))


def z_errors(z: np.ndarray, truth: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Per face: mean |z error| over its box size, both zero-mean."""
    z = z - z.mean(axis=1, keepdims=True)
    true_z = truth[..., 2] - truth[..., 2].mean(axis=1, keepdims=True)
    return np.abs(z - true_z).mean(axis=1) / sizes


def add_turned_option(parser: argparse.ArgumentParser) -> None:
    """``--turned R FROM_YAW R_TURNED``: the shape fit with a refit of turned faces
    (util.depth.ShapeFitDepth; the shipped 3D model's spec has 10, 30, 100)."""
    parser.add_argument(
        "--turned",
        type=float,
        nargs=3,
        default=[10.0, 30.0, 100.0],
        metavar=("R", "FROM_YAW", "R_TURNED"),
        help="and a fit with regulariser R, again with R_TURNED when it finds the face "
        "turned FROM_YAW deg or more (the spec's shape_fit_turned)",
    )


def add_far_side_option(parser: argparse.ArgumentParser) -> None:
    """``--far-side FROM_YAW R``: that fit, and from FROM_YAW deg the far half's x, y and
    z from the prior fitted to the near half with regulariser R (util.depth.ShapeFitDepth;
    the spec's shape_fit_far_side)."""
    parser.add_argument(
        "--far-side",
        type=float,
        nargs=2,
        default=[40.0, 30.0],
        metavar=("FROM_YAW", "R"),
        help="and the --turned fit with the far half of faces turned FROM_YAW deg or "
        "more taken from the near half's fit, regulariser R (the spec's shape_fit_far_side)",
    )


def load_errors(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(signed yaw (V,), x, y errors over the box size (V, 68, 2)) of evaluate_3d.py's
    views."""
    data = np.load(path)
    return data["yaw"], data["errors"]


def model_errors(
    measured: tuple[np.ndarray, np.ndarray],
    yaw: np.ndarray,
    bin_: tuple[float, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """(N, 68, 2): for each face of signed ``yaw``, the error of a random view in the same
    yaw bin, mirrored (points swapped left for right, x negated) when that view looked
    the other way: the far side's errors stay on the far side."""
    view_yaw, view_errors = measured
    lo, hi = bin_
    pool = np.flatnonzero((np.abs(view_yaw) >= lo) & (np.abs(view_yaw) < hi))
    if len(pool) == 0:
        raise SystemExit(f"no view with a yaw in {lo:g}-{hi:g} deg among the errors given")
    picks = rng.choice(pool, size=len(yaw))
    out = view_errors[picks].copy()
    flip = np.sign(view_yaw[picks]) != np.sign(yaw)
    out[flip] = out[flip][:, MIRROR_PERMUTATION] * np.array([-1.0, 1.0])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shapes", default=str(DATA_ROOT / "aflw2000_3d_shapes.npy"))
    parser.add_argument("--regularisers", type=float, nargs="+", default=[1, 3, 10, 30, 100])
    parser.add_argument(
        "--noise",
        type=float,
        nargs=3,
        default=[0.024, 0.039, 0.096],
        help="x, y error per bin, as NME over the box size (version 6's 3D model)",
    )
    parser.add_argument(
        "--errors",
        type=Path,
        default=None,
        help="the 3D model's own x, y errors (evaluate_3d.py --save-errors): each shape "
        "gets one of a view in its yaw bin, mirrored to face its way, instead of noise",
    )
    add_turned_option(parser)
    add_far_side_option(parser)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    first, from_yaw, again = args.turned
    turned_row = f"{first:g}, {again:g} from {from_yaw:g}"
    far_row = f"+ far half from {args.far_side[0]:g}"
    measured = None if args.errors is None else load_errors(args.errors)

    shapes = np.load(args.shapes).astype(np.float64)
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(shapes))
    folds = (order[::2], order[1::2])
    errors: dict[tuple[str, float | str, int], list[float]] = {}
    xy_errors: dict[tuple[str, str, int], list[float]] = {}
    counts = [0, 0, 0]
    for k in range(2):
        prior = build_prior(shapes[folds[1 - k]])
        truth = shapes[folds[k]]
        signed_yaw = fit_yaw(fit_to_2d(prior, truth[..., :2]).rotation)
        yaw = np.abs(signed_yaw)
        for b, (lo, hi) in enumerate(BINS):
            chosen = (yaw >= lo) & (yaw < hi)
            faces = truth[chosen]
            counts[b] += len(faces)
            sizes = np.array([box_size(t[:, :2]) for t in faces])
            # NME is a mean point distance: a 2D Gaussian with that mean distance has
            # sigma = NME * size / sqrt(pi / 2) per axis.
            sigma = args.noise[b] * sizes / np.sqrt(np.pi / 2)
            noisy = faces[..., :2] + rng.normal(size=faces[..., :2].shape) * sigma[:, None, None]
            inputs = [("true x, y", faces[..., :2]), ("x, y + noise", noisy)]
            if measured is not None:
                errs = model_errors(measured, signed_yaw[chosen], (lo, hi), rng)
                inputs.append(("x, y + model's", faces[..., :2] + errs * sizes[:, None, None]))
            for reg in args.regularisers:
                for name, xy in inputs:
                    z = fit_to_2d(prior, xy, regulariser=reg).points[..., 2]
                    errors.setdefault((name, reg, b), []).extend(z_errors(z, faces, sizes))
            turned_fit = ShapeFitDepth(prior, first, (from_yaw, again))
            far_fit = ShapeFitDepth(prior, first, (from_yaw, again), args.far_side)
            for name, xy in inputs:
                z = np.stack([turned_fit.depth(points) for points in xy]).reshape(-1, 68)
                errors.setdefault((name, turned_row, b), []).extend(z_errors(z, faces, sizes))
                fitted = np.stack([far_fit.points_3d(points) for points in xy]).reshape(-1, 68, 3)
                errors.setdefault((name, far_row, b), []).extend(
                    z_errors(fitted[..., 2], faces, sizes)
                )
                # The far half's x, y change too: their error against the real shape.
                for row, points in ((turned_row, xy), (far_row, fitted[..., :2])):
                    xy_errors.setdefault((name, row, b), []).extend(
                        np.linalg.norm(points - faces[..., :2], axis=-1).mean(-1) / sizes
                    )
    weights = np.array(counts) / sum(counts)
    bins = zip(BINS, counts, strict=True)
    per_bin = ", ".join(f"{int(lo)}-{int(hi)}: {n}" for (lo, hi), n in bins)
    print(f"{args.shapes}: {len(shapes)} shapes, two-fold; faces per bin {per_bin}")
    print(f"{'x, y':<14} {'regulariser':>11}  z % by yaw bin 0-30 / 30-60 / 60-90   weighted")
    names = ["true x, y", "x, y + noise"] + ([] if measured is None else ["x, y + model's"])
    for name in names:
        for reg in [*args.regularisers, turned_row, far_row]:
            per_bin = [100 * float(np.mean(errors[(name, reg, b)])) for b in range(3)]
            label = reg if isinstance(reg, str) else f"{reg:g}"
            print(f"{name:<14} {label:>11}  " + " / ".join(f"{v:5.2f}" for v in per_bin)
                  + f"   {float(np.dot(weights, per_bin)):5.2f}")  # fmt: skip
    print(f"\n{'x, y':<14} {'fit':>11}  x, y NME box % by yaw bin            weighted")
    for name in names[1:]:
        for row in (turned_row, far_row):
            per_bin = [100 * float(np.mean(xy_errors[(name, row, b)])) for b in range(3)]
            print(f"{name:<14} {row:>11}  " + " / ".join(f"{v:5.2f}" for v in per_bin)
                  + f"   {float(np.dot(weights, per_bin)):5.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
