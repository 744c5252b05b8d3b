"""Evaluate ``--active-3d`` at large poses, by yaw bin, on turned views of val faces.

    python -m training.evaluate_3d                 # shipped models, all of 300w/val
    python -m training.evaluate_3d --limit 40      # quicker

300-W has no profiles and no 3D labels, so each val face (never a training face) is
lifted to the 3D convention (training/labels_3d.py) and turned out of plane by
training/synthesis.py to a total yaw drawn in each bin (0-30, 30-60, 60-90 degrees,
continuing the way the face looks); the turned 3D points are the truth. Each turned
image goes through the whole tool, once per configuration:

- "2D points + depth net": landmarks_3d as before fan3d_compact (the 2D model's
  points, z from models/depth_compact.onnx);
- "3D model + shape fit": the default (x, y from models/fan3d_compact.onnx, z from the
  shape prior fitted to them, and on a face turned past the spec's
  ``shape_fit_far_side`` the far half's x, y too);
- "3D model + depth net": x, y from the 3D model as they are, z from the depth network.

Beside them, from the 3D model's own x, y (the depth-net row's; no model runs again):
the shape fit's z with other fit regularisers (``--regularisers``; the spec's
``shape_fit_regulariser`` is the one the tool uses), with the refit of turned faces
(``--turned``), and with the far half from the near half's fit (``--far-side``); and
the fit to the true x, y (the floor of any fit).

Errors: x, y NME over the box size (sqrt of the true points' box area), and mean |z
error| over the same size, both sides' z zero-mean (AFLW2000-3D's way).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from training.evaluate import DEFAULT_DATA, load_annotated, match_annotated
from training.evaluate_shape_fit import add_far_side_option, add_turned_option
from training.labels_3d import lift_to_3d
from training.paths import MODELS_DIR, SHAPE_PRIOR_PATH
from training.synthesis import face_depths, look_side, turn_face, turn_to
from util.depth import ShapeFitDepth
from util.landmarks import box_size, nme
from util.shape_prior import ShapePrior, fit_to_2d, fit_yaw

BINS = ((0.0, 30.0), (30.0, 60.0), (60.0, 90.0))
# The synthesis smears past this turn (training never sees more).
MOST_TURN = 80.0


def face_region(image: np.ndarray, points: np.ndarray, margin: float = 1.2):
    """The image cut to the face and ``margin`` face sizes around it (turning a whole
    large photo costs far more and changes nothing near the face): (image, offset)."""
    lo, hi = points.min(0), points.max(0)
    size = float(np.sqrt(np.prod(hi - lo)))
    x0, y0 = np.maximum(0, np.floor(lo - margin * size)).astype(int)
    x1, y1 = np.ceil(hi + margin * size).astype(int)
    return np.ascontiguousarray(image[y0:y1, x0:x1]), np.array([x0, y0], np.float64)


def turned_views(image, points, depth, truth_3d, yaw_now, rng):
    """Per yaw bin: (bin, turned image, 2D labels, 3D truth (68, 3), total yaw) or None."""
    look = look_side(yaw_now, rng)
    views = []
    for lo, hi in BINS:
        total = max(float(rng.uniform(lo, hi)), abs(yaw_now))  # never turn a face back
        turn = turn_to(yaw_now, total, look)
        if total >= hi or abs(turn) > MOST_TURN:
            views.append(None)
            continue
        turned, labels, carried = turn_face(image, points, depth, turn, truth_3d)
        views.append(((lo, hi), turned, labels, carried, total))
    return views


def errors(face, truth: np.ndarray) -> tuple[float, float]:
    """(x, y NME_box, |z error| / box) of one face's landmarks_3d (or of (68, 3)
    points)."""
    size = box_size(truth[:, :2])
    pred = face if isinstance(face, np.ndarray) else face.landmarks_3d
    xy = nme(pred, truth, size)
    z, zt = pred[:, 2] - pred[:, 2].mean(), truth[:, 2] - truth[:, 2].mean()
    return xy, float(np.abs(z - zt).mean() / size)


def view_error(prior: ShapePrior, xy: np.ndarray, truth: np.ndarray) -> tuple[float, np.ndarray]:
    """(signed yaw of the true points' fit, (68, 2) x, y error over the box size): a
    view's error as evaluate_shape_fit.py --errors puts it on other faces (there, the
    fits the tool makes run on it again)."""
    yaw = float(fit_yaw(fit_to_2d(prior, truth[:, :2]).rotation))
    return yaw, (xy - truth[:, :2]) / box_size(truth[:, :2])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=None, help="first N faces only")
    parser.add_argument("--model-3d", default=None, help="3D-convention model (default: shipped)")
    parser.add_argument("--model-depth", default=str(MODELS_DIR / "depth_compact.onnx"))
    parser.add_argument("--precision", choices=["int8", "fp32"], default="int8")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--save", type=Path, default=None, help="write each turned image here (to look at)"
    )
    parser.add_argument(
        "--save-errors",
        type=Path,
        default=None,
        help="write the 3D model's own x, y error of each view here (.npz: for "
        "evaluate_shape_fit.py --errors, which puts them on real 3D shapes)",
    )
    parser.add_argument(
        "--regularisers",
        type=float,
        nargs="*",
        default=[1.0, 3.0, 10.0, 30.0],
        help="shape-fit regularisers to compare on the 3D model's x, y",
    )
    add_turned_option(parser)
    add_far_side_option(parser)
    args = parser.parse_args()

    from tqdm import tqdm

    from util.aligner import FaceAligner
    from util.io import read_image

    common = {"runtime": "onnxruntime", "threads": args.threads, "precision": args.precision}
    before = FaceAligner(active_3d=True, model_depth=args.model_depth, **common)
    before.stage_3d.landmark_model_3d = None  # the pipeline as it was: 2D points into depth
    configs = {
        "2D points + depth net": before,
        "3D model + shape fit": FaceAligner(active_3d=True, model_3d=args.model_3d, **common),
        "3D model + depth net": FaceAligner(
            active_3d=True, model_3d=args.model_3d, model_depth=args.model_depth, **common
        ),
    }
    if configs["3D model + shape fit"].stage_3d.landmark_model_3d is None:
        print("no 3D-convention model: give --model-3d", file=sys.stderr)
        return 2
    prior = ShapePrior.load(SHAPE_PRIOR_PATH)
    samples = load_annotated(args.data)[: args.limit]
    all_points = np.stack([s.points for s in samples]).astype(np.float64)
    truth_all = lift_to_3d(prior, all_points)
    depth_all = face_depths(prior, all_points)
    yaw_all = fit_yaw(fit_to_2d(prior, all_points).rotation)
    refits = [f"3D model + shape fit r={r:g}" for r in args.regularisers]
    first, from_yaw, again = args.turned
    turned_fit = ShapeFitDepth(prior, first, (from_yaw, again))
    turned_row = f"r={first:g}, {again:g} from {from_yaw:g} deg"
    far_fit = ShapeFitDepth(prior, first, (from_yaw, again), args.far_side)
    far_row = f"  + far half from {args.far_side[0]:g} deg"
    rows = [*configs, *refits, turned_row, far_row, "true x, y + shape fit"]
    results = {name: {b: [] for b in BINS} for name in rows}
    misses = {name: {b: 0 for b in BINS} for name in rows}
    counts = {b: 0 for b in BINS}
    saved: list[tuple[float, np.ndarray]] = []
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
    for i, sample in enumerate(tqdm(samples, unit="face")):
        rng = np.random.default_rng([args.seed, i])
        image, offset = face_region(read_image(sample.image), sample.points)
        points = sample.points - offset
        truth = truth_all[i].copy()
        truth[:, :2] -= offset
        views = turned_views(image, points, depth_all[i], truth, float(yaw_all[i]), rng)
        for view in views:
            if view is None:
                continue
            bin_, turned, labels, truth_turned, total = view
            counts[bin_] += 1
            if args.save:
                import cv2

                name = f"{sample.image.stem}_yaw{int(round(total)):02d}.jpg"
                cv2.imwrite(str(args.save / name), turned[..., ::-1])
            for config, aligner in configs.items():
                faces = aligner.align(turned)
                index = match_annotated([f.bbox for f in faces], labels)
                if index is None:
                    misses[config][bin_] += 1
                    continue
                results[config][bin_].append(errors(faces[index], truth_turned))
                if config == "3D model + depth net":  # the 3D model's x, y as they are
                    xy = faces[index].landmarks_3d[:, :2]
                    saved.append(view_error(prior, xy, truth_turned))
                    for name, r in zip(refits, args.regularisers, strict=True):
                        z = fit_to_2d(prior, xy, regulariser=r).points[:, 2]
                        results[name][bin_].append(errors(np.column_stack([xy, z]), truth_turned))
                    z = turned_fit.depth(xy)
                    results[turned_row][bin_].append(errors(np.column_stack([xy, z]), truth_turned))
                    results[far_row][bin_].append(errors(far_fit.points_3d(xy), truth_turned))
            fit = fit_to_2d(prior, truth_turned[:, :2]).points
            results["true x, y + shape fit"][bin_].append(errors(fit, truth_turned))
    print(f"{args.data}: {len(samples)} faces turned into each yaw bin (synthesized views)")
    header = f"{'configuration':<28}" + "".join(
        f" {f'{int(lo)}-{int(hi)} xy / z %':>19}" for lo, hi in BINS
    )
    print(header + f" {'all xy / z %':>15} {'missed':>7}")
    for config in rows:
        row, every = f"{config:<28}", []
        for b in BINS:
            values = np.array(results[config][b]).reshape(-1, 2)
            every.append(values)
            row += f" {100 * values[:, 0].mean():>9.2f} / {100 * values[:, 1].mean():>5.2f}"
        values = np.concatenate(every)
        missed = sum(misses[config].values())
        row += f" {100 * values[:, 0].mean():>7.2f} / {100 * values[:, 1].mean():>5.2f}"
        print(row + f" {missed:>3} / {sum(counts.values())}")
    print("faces per bin: " + ", ".join(f"{int(lo)}-{int(hi)}: {counts[(lo, hi)]}"
                                        for lo, hi in BINS))  # fmt: skip
    if args.save_errors and saved:
        yaws, errs = zip(*saved, strict=True)
        np.savez(args.save_errors, yaw=np.array(yaws), errors=np.stack(errs))
        print(f"x, y errors of {len(saved)} views: {args.save_errors}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
