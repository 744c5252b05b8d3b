"""Measure a per-face mirror policy for ``--flip auto`` (issue 33, not shipped): read the
mirror view only for faces whose first reading is not sure, by the reading quality (mean
heatmap peak times presence) of their single view.

    python -m training.choose_mirror                 # 300w/val: choose on a half, score the other

Measured on the shipped 2D model (2026-12-07): to stay within 0.02 points of reading
every face twice, the bar sends 83-84 % of the faces to the mirror view anyway, so this
signal alone saves little; the policy needs a better predictor (or a cheaper view).

Every val face is read twice, without and with its mirror view (the same crops: the
decision to crop again is made on the unmirrored probe either way), so any bar's result
is known without running again: a face below the bar takes its two-view error, the
others their one-view error. The bar is the lowest that keeps the mean NME within
``--budget`` of the two-view mean on fold 0/2, scored on fold 1/2, and the other way
round.
"""

from __future__ import annotations

import argparse

import numpy as np

from training.evaluate import DEFAULT_DATA, load_annotated, match_annotated
from training.folds import in_fold
from util.aligner import FaceAligner
from util.io import read_image
from util.landmarks import inter_ocular, nme


def readings(samples: list, threads: int) -> np.ndarray:
    """(N, 3): quality of the one-view reading, its NME, and the two-view NME, per
    annotated face found (NaN rows for misses)."""
    one = FaceAligner(flip=False, threads=threads)
    two = FaceAligner(flip=True, threads=threads)
    rows = np.full((len(samples), 3), np.nan)
    for i, sample in enumerate(samples):
        image = read_image(sample.image)
        faces = [one.align(image), two.align(image)]
        picks = [match_annotated([f.bbox for f in found], sample.points) for found in faces]
        if None in picks:
            continue
        single, double = faces[0][picks[0]], faces[1][picks[1]]
        iod = inter_ocular(sample.points)
        quality = float(np.mean(single.landmark_scores)) * (single.presence or 1.0)
        rows[i] = (
            quality,
            nme(single.landmarks, sample.points, iod),
            nme(double.landmarks, sample.points, iod),
        )
    return rows


def policy_error(rows: np.ndarray, bar: float) -> tuple[float, float]:
    """(mean NME, share of faces read twice) with the mirror view below ``bar``."""
    twice = rows[:, 0] < bar
    return float(np.where(twice, rows[:, 2], rows[:, 1]).mean()), float(twice.mean())


def choose_bar(rows: np.ndarray, budget: float) -> float:
    """The lowest bar whose mean NME is within ``budget`` of reading every face twice."""
    target = rows[:, 2].mean() + budget
    for bar in np.unique(np.r_[0.0, rows[:, 0], np.inf]):
        if policy_error(rows, bar)[0] <= target:
            return float(bar)
    return float("inf")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--budget", type=float, default=0.0002, help="NME allowed above two views")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    samples = load_annotated(args.data)
    rows = readings(samples, args.threads)
    names = [s.image.name for s in samples]
    found = ~np.isnan(rows[:, 0])
    bars = []
    for fold in range(2):
        fit = np.array(in_fold(names, (fold, 2))) & found
        score = np.array(in_fold(names, (1 - fold, 2))) & found
        bar = choose_bar(rows[fit], args.budget)
        error, share = policy_error(rows[score], bar)
        print(
            f"bar {bar:.4f} chosen on fold {fold}/2; on fold {1 - fold}/2: NME {error:.2%} "
            f"(one view {rows[score, 1].mean():.2%}, two {rows[score, 2].mean():.2%}), "
            f"mirror read for {share:.0%} of faces"
        )
        bars.append(bar)
    bar = max(bars)
    error, share = policy_error(rows[found], bar)
    print(f"the higher bar {bar:.4f}: all val NME {error:.2%}, mirror for {share:.0%} of faces")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
