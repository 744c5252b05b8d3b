"""Evaluate the whole pipeline (BlazeFace, crop, FAN model, decode) on annotated images.

    python training/evaluate.py                                   # shipped model, 300w/val
    python training/evaluate.py --precision fp32                  # its fp32 file, not int8
    python training/evaluate.py --model-2d 2DFAN-4.onnx --data my/folder --ced ced.png

For each folder of NAME.jpg/png + NAME.pts (one annotated face per image; other faces
may be present) it prints: faces, detection misses, mean and median NME normalised by
the outer-eye-corner distance (points 36, 45), NME normalised by sqrt(box area) (the
FAN paper's metric), failure rate at 8 %, AUC up to 8 %, and writes the CED curve.
Works for any FAN-format ONNX. The pair of train_2d.py, like dlib's
train_shape_predictor / test_shape_predictor.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from util.detect import box_iou  # noqa: E402
from util.landmarks import box_size, inter_ocular, nme, read_pts  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "300w" / "val"
FAILURE_THRESHOLD = 0.08


@dataclass
class Sample:
    image: Path
    points: np.ndarray  # (68, 2) ground truth


def load_annotated(folder: Path) -> list[Sample]:
    """Every image in ``folder`` (recursively) that has a NAME.pts beside it."""
    samples = []
    for pts in sorted(folder.rglob("*.pts")):
        for suffix in (".jpg", ".png", ".jpeg", ".JPG", ".PNG"):
            image = pts.with_suffix(suffix)
            if image.is_file():
                samples.append(Sample(image, read_pts(pts)))
                break
    return samples


def match_annotated(boxes: list[np.ndarray], truth: np.ndarray) -> int | None:
    """Index of the detection that is the annotated face, or None (a miss).

    A detection matches when it overlaps the landmark box (IoU > 0.3) or contains its
    centre; of several, the one whose centre is nearest.
    """
    lo, hi = truth.min(0), truth.max(0)
    gt_box, centre = np.concatenate([lo, hi]), (lo + hi) / 2
    best, best_dist = None, np.inf
    for i, box in enumerate(boxes):
        inside = box[0] <= centre[0] <= box[2] and box[1] <= centre[1] <= box[3]
        if inside or float(box_iou(gt_box, np.asarray(box))[0]) > 0.3:
            dist = float(np.linalg.norm((np.asarray(box[:2]) + box[2:4]) / 2 - centre))
            if dist < best_dist:
                best, best_dist = i, dist
    return best


def ced(errors: np.ndarray, limit: float = FAILURE_THRESHOLD, steps: int = 1000):
    """(thresholds, fraction of faces with error <= threshold)."""
    thresholds = np.linspace(0, limit, steps + 1)
    errors = np.sort(np.asarray(errors))
    return thresholds, np.searchsorted(errors, thresholds, side="right") / max(1, len(errors))


def summarise(interocular: list[float], by_box: list[float], misses: int) -> dict:
    """The metrics table for one system on one folder (errors over matched faces)."""
    errors = np.asarray(interocular)
    thresholds, fraction = ced(errors)
    auc = float(np.trapezoid(fraction, thresholds) / FAILURE_THRESHOLD) if len(errors) else 0.0
    faces = len(errors) + misses
    return {
        "faces": faces,
        "misses": misses,
        "miss_rate": misses / faces if faces else 0.0,
        "nme_io_mean": float(errors.mean()) if len(errors) else float("nan"),
        "nme_io_median": float(np.median(errors)) if len(errors) else float("nan"),
        "nme_box_mean": float(np.mean(by_box)) if by_box else float("nan"),
        "failure_8": float((errors > FAILURE_THRESHOLD).mean()) if len(errors) else float("nan"),
        "auc_8": auc,
    }


def format_row(name: str, m: dict) -> str:
    return (
        f"{name:<28} {m['faces']:>5} {m['misses']:>6} {100 * m['nme_io_mean']:>8.2f} "
        f"{100 * m['nme_io_median']:>8.2f} {100 * m['nme_box_mean']:>8.2f} "
        f"{100 * m['failure_8']:>7.2f} {m['auc_8']:>6.3f}"
    )


TABLE_HEADER = (
    f"{'system / folder':<28} {'faces':>5} {'misses':>6} {'NME io%':>8} {'median%':>8} "
    f"{'NMEbox%':>8} {'FR@8%':>7} {'AUC@8':>6}"
)


def plot_ced(curves: dict[str, np.ndarray], path: Path, title: str) -> bool:
    """One CED curve per system; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=110)
    for name, errors in curves.items():
        thresholds, fraction = ced(errors)
        ax.plot(100 * thresholds, 100 * fraction, label=f"{name} ({100 * np.mean(errors):.2f} %)")
    ax.set_xlabel("NME, inter-ocular (%)")
    ax.set_ylabel("faces (%)")
    ax.set_xlim(0, 100 * FAILURE_THRESHOLD)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


def evaluate_folder(aligner, samples: list[Sample], progress: bool = True) -> tuple[dict, list]:
    """Run the aligner on every sample; (metrics, per-image records)."""
    from tqdm import tqdm

    from util.io import read_image

    io_errors, box_errors, misses, records = [], [], 0, []
    for sample in tqdm(samples, disable=not progress, unit="img"):
        faces = aligner.align(read_image(sample.image))
        index = match_annotated([f.bbox for f in faces], sample.points)
        if index is None:
            misses += 1
            records.append({"image": str(sample.image), "miss": True})
            continue
        pred = faces[index].landmarks
        io_errors.append(nme(pred, sample.points, inter_ocular(sample.points)))
        box_errors.append(nme(pred, sample.points, box_size(sample.points)))
        records.append({"image": str(sample.image), "nme_io": io_errors[-1]})
    return summarise(io_errors, box_errors, misses), records


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, nargs="+", default=[DEFAULT_DATA])
    parser.add_argument("--model-2d", default=None, help="FAN-format ONNX (default: shipped)")
    parser.add_argument(
        "--precision",
        choices=["int8", "fp32"],
        default="int8",
        help="without --model-2d: the shipped model's int8 file when there (as the tool), or fp32",
    )
    parser.add_argument("--detector", default=None, help="BlazeFace ONNX (default: shipped)")
    parser.add_argument("--ced", type=Path, default=Path("ced.png"), help="CED plot to write")
    parser.add_argument("--json", type=Path, default=None, help="per-image errors as JSON")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--flip", action="store_true", help="average with the mirror image")
    args = parser.parse_args()

    from util.aligner import FaceAligner

    aligner = FaceAligner(
        model_2d=args.model_2d,
        detector_model=args.detector,
        runtime="onnxruntime",
        threads=args.threads,
        flip=args.flip,
        precision=args.precision,
    )
    name = Path(args.model_2d).stem if args.model_2d else aligner.landmark_model.model.path.stem
    print(TABLE_HEADER)
    curves, report = {}, {}
    for folder in args.data:
        samples = load_annotated(folder)
        if not samples:
            print(f"{folder}: no images with .pts files", file=sys.stderr)
            return 2
        metrics, records = evaluate_folder(aligner, samples)
        label = f"{name} / {folder.name}"
        print(format_row(label, metrics))
        curves[label] = np.array([r["nme_io"] for r in records if "nme_io" in r])
        report[str(folder)] = {"metrics": metrics, "images": records}
    if plot_ced(curves, args.ced, "Cumulative error distribution, end to end"):
        print(f"CED plot: {args.ced}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
