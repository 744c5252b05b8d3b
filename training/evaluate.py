"""Evaluate the whole pipeline (BlazeFace, crop, FAN model, decode) on annotated images.

    python -m training.evaluate                                   # shipped model, 300w/val
    python -m training.evaluate --precision fp32                  # its fp32 file, not int8
    python -m training.evaluate --model-2d 2DFAN-4.onnx --data my/folder --ced ced.png
    python -m training.evaluate --wild          # + rotation sweep, close-ups, non-faces

For each folder of NAME.jpg/png + NAME.pts (one annotated face per image; other faces
may be present) it prints: faces, detection misses, mean and median NME normalised by
the outer-eye-corner distance (points 36, 45), NME normalised by sqrt(box area) (the
FAN paper's metric), failure rate at 8 %, AUC up to 8 %, and writes the CED curve;
then per source (file-name prefix) the mean signed offset of the points, which a plain
NME hides (a model whose points all sit low).

``--wild`` adds what photos in the wild do to it, on the same folder:
- rotation: every 4th... face (``--rotation-faces``, default 40) turned in the image
  plane by each of ``--angles`` on an enlarged canvas, NME and misses per angle;
- close-ups: each face cut out so that it fills the frame, against the same faces in
  the whole photo;
- non-faces: scikit-image's sample pictures that hold no face (animals, objects,
  textures, text, microscopy, astronomy): how many give a face.
``--parts`` runs only some of these (the rotation sweep alone is the quick check of a
change to the roll logic). Each part also reports the model calls per image, the time
cost of the fallback passes: detector passes and landmark-model crop views (a face with
flip is two views, the upside-down check adds one).
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

from training.folds import in_fold, parse_fold, source_of
from training.paths import VAL_300W
from util.detect import box_iou
from util.landmarks import box_size, inter_ocular, nme, read_pts

DEFAULT_DATA = VAL_300W
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
        io = inter_ocular(sample.points)
        io_errors.append(nme(pred, sample.points, io))
        box_errors.append(nme(pred, sample.points, box_size(sample.points)))
        offset = ((pred - sample.points).mean(0) / io).tolist()
        records.append({"image": str(sample.image), "nme_io": io_errors[-1], "offset_io": offset})
    return summarise(io_errors, box_errors, misses), records


# Faces with a larger inter-ocular distance (image pixels) count as large: a bias that
# is a fixed share of the face in the model's crop grows with the face in pixels.
LARGE_FACE_IO = 100.0


def summarise_offsets(samples: list[Sample], records: list[dict]) -> dict[str, dict]:
    """Per source (name prefix) and face size (small / large, see LARGE_FACE_IO): mean
    signed x, y offset of all points, in % of the inter-ocular distance."""
    by_source: dict[str, list[np.ndarray]] = {}
    for sample, record in zip(samples, records, strict=True):
        if "offset_io" in record:
            size = "large" if inter_ocular(sample.points) > LARGE_FACE_IO else "small"
            for key in (
                source_of(sample.image.stem),
                f"{source_of(sample.image.stem)}/{size}",
            ):
                by_source.setdefault(key, []).append(np.asarray(record["offset_io"]))
    return {
        source: {
            "faces": len(v),
            "dx_io": float(np.mean(v, 0)[0]),
            "dy_io": float(np.mean(v, 0)[1]),
        }
        for source, v in sorted(by_source.items())
    }


def turn_image(image: np.ndarray, points: np.ndarray, angle: float):
    """The image turned by ``angle`` degrees (counter-clockwise as seen) on a canvas
    big enough to keep all of it, and the points turned with it."""
    import cv2

    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    new_w, new_h = int(np.ceil(h * sin + w * cos)), int(np.ceil(h * cos + w * sin))
    matrix[0, 2] += (new_w - w) / 2
    matrix[1, 2] += (new_h - h) / 2
    turned = cv2.warpAffine(image, matrix, (new_w, new_h), flags=cv2.INTER_LINEAR)
    return turned, points @ matrix[:, :2].T + matrix[:, 2]


def close_up(image: np.ndarray, points: np.ndarray, margin: float = 0.05):
    """The face cut out so that it fills the frame: the landmark box grown by
    ``margin`` of its size on each side (clipped to the image)."""
    lo, hi = points.min(0), points.max(0)
    pad = margin * (hi - lo)
    x1, y1 = np.maximum(np.floor(lo - pad), 0).astype(int)
    x2, y2 = np.minimum(np.ceil(hi + pad) + 1, image.shape[1::-1]).astype(int)
    return np.ascontiguousarray(image[y1:y2, x1:x2]), points - [x1, y1]


class CallCounter:
    """Counts the detector passes and landmark-model crop views an aligner makes (the
    mirror model's too), by wrapping its models' ``run`` (the batch size of a landmark
    call is its views)."""

    def __init__(self, aligner) -> None:
        self.detector_passes = 0
        self.crop_views = 0
        detector = aligner.detector.model
        detector_run = detector.run

        def count_detector(*inputs: np.ndarray) -> list[np.ndarray]:
            self.detector_passes += 1
            return detector_run(*inputs)

        def counting_views(run):  # noqa: ANN001, ANN202 - a model's run, wrapped
            def count_views(*inputs: np.ndarray) -> list[np.ndarray]:
                self.crop_views += int(np.shape(inputs[0])[0])
                return run(*inputs)

            return count_views

        detector.run = count_detector
        # the 2D model, and --flip auto's mirror model
        for model in (aligner.landmark_model, getattr(aligner, "mirror_model", None)):
            if model is not None:
                model.model.run = counting_views(model.model.run)

    def snapshot(self) -> tuple[int, int]:
        return self.detector_passes, self.crop_views


def calls_since(counter: CallCounter | None, before: tuple[int, int], images: int) -> dict:
    """Mean detector passes and crop views per image since ``before``."""
    if counter is None or images == 0:
        return {}
    passes, views = np.subtract(counter.snapshot(), before)
    return {"detector_passes": float(passes / images), "crop_views": float(views / images)}


def score_faces(aligner, images_and_points, counter: CallCounter | None = None) -> dict:
    """Align each (image, truth) pair; the usual metrics table (and the model calls per
    image, with a ``counter``)."""
    io_errors, box_errors, misses, found = [], [], 0, []
    before = counter.snapshot() if counter else (0, 0)
    for image, truth in images_and_points:
        faces = aligner.align(image)
        index = match_annotated([f.bbox for f in faces], truth)
        if index is None:
            misses += 1
            continue
        io_errors.append(nme(faces[index].landmarks, truth, inter_ocular(truth)))
        box_errors.append(nme(faces[index].landmarks, truth, box_size(truth)))
        found.append(face_record(faces[index]) | {"nme_io": io_errors[-1]})
    metrics = summarise(io_errors, box_errors, misses)
    return metrics | calls_since(counter, before, metrics["faces"]) | {"found": found}


def face_record(face) -> dict:
    """What a rule for accepting faces can use (JSON output: choosing such a rule needs
    the values of the faces found and of the non-faces)."""
    presence = None if face.presence is None else round(float(face.presence), 4)
    return {
        "score": round(float(face.score), 4),
        "presence": presence,
        "peak": round(float(np.mean(face.landmark_scores)), 4),
        "roll": round(float(face.roll), 1),
    }


# scikit-image's bundled sample pictures without a face in them (astronaut and camera
# have one; lfw_subset is faces).
NON_FACE_PICTURES = (
    "brick", "cell", "chelsea", "chessboard_RGB", "clock_motion", "coffee", "coins",
    "color", "grass", "gravel", "horse", "hubble_deep_field", "ihc", "logo",
    "microaneurysms", "moon", "motorcycle_left", "page", "phantom", "retina", "rocket",
    "text",
)  # fmt: skip


def non_face_pictures() -> list[tuple[str, np.ndarray]]:
    """(name, uint8 RGB) of the non-face sample pictures; empty without scikit-image."""
    try:
        import skimage
    except ImportError:
        return []
    from util.io import read_image

    folder = Path(skimage.__file__).parent / "data"
    pictures = []
    for name in NON_FACE_PICTURES:
        for path in sorted(folder.glob(f"{name}.*")):
            pictures.append((name, read_image(path)))
            break
    return pictures


WILD_PARTS = ("rotation", "close-ups", "non-faces")


def evaluate_wild(
    aligner,
    samples: list[Sample],
    angles: list[float],
    count: int,
    parts: tuple[str, ...] = WILD_PARTS,
) -> dict:
    """Rotation sweep, close-ups (with the same whole photos) and non-faces (see the
    module docstring), those of them named in ``parts``."""
    from tqdm import tqdm

    from util.io import read_image

    counter = CallCounter(aligner)
    report: dict = {"rotation": {}}
    if "rotation" in parts:
        chosen = samples[:: max(1, len(samples) // count)][:count]
        images = [(read_image(s.image), s.points) for s in chosen]
        for angle in tqdm([0.0, *angles], desc="rotations", unit="angle"):
            turned = [turn_image(image, points, angle) for image, points in images]
            report["rotation"][str(angle)] = score_faces(aligner, turned, counter)
    if "close-ups" in parts:
        whole = [(read_image(s.image), s.points) for s in samples]
        report["whole"] = score_faces(
            aligner, tqdm(whole, desc="whole photos", unit="img"), counter
        )
        cut = [close_up(image, points) for image, points in whole]
        report["close_up"] = score_faces(aligner, tqdm(cut, desc="close-ups", unit="img"), counter)
    if "non-faces" in parts:
        pictures = non_face_pictures()
        before = counter.snapshot()
        faces = {name: [face_record(f) for f in aligner.align(image)] for name, image in pictures}
        with_face = [name for name, found in faces.items() if found]
        report["non_face"] = {"images": len(pictures), "with_face": with_face, "faces": faces}
        report["non_face"] |= calls_since(counter, before, len(pictures))
    return report


def format_calls(m: dict) -> str:
    """Model calls per image, when counted."""
    if "detector_passes" not in m:
        return ""
    return f"  {m['detector_passes']:.2f} detector passes, {m['crop_views']:.2f} crop views / image"


def print_wild(report: dict) -> None:
    if report["rotation"]:
        print("\nrotation (degrees): faces, misses, NME io %, ratio to upright")
    for angle, m in report["rotation"].items():
        upright = report["rotation"]["0.0"]["nme_io_mean"]
        print(
            f"  {float(angle):>6.0f}  {m['faces']:>4} {m['misses']:>4} "
            f"{100 * m['nme_io_mean']:>7.2f}  {m['nme_io_mean'] / upright:>5.2f}x"
            f"{format_calls(m)}"
        )
    if "close_up" in report:
        whole, cut = report["whole"], report["close_up"]
        print(
            f"close-ups: {cut['faces']} faces, {cut['misses']} misses, NME io "
            f"{100 * cut['nme_io_mean']:.2f} % against {100 * whole['nme_io_mean']:.2f} % in "
            f"the whole photos ({cut['nme_io_mean'] / whole['nme_io_mean']:.2f}x)"
        )
        print(f"  whole photos:{format_calls(whole)}\n  close-ups:{format_calls(cut)}")
    if "non_face" in report:
        nf = report["non_face"]
        print(
            f"non-faces: {len(nf['with_face'])} of {nf['images']} pictures give a face "
            f"{nf['with_face']}{format_calls(nf)}"
        )


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
    parser.add_argument(
        "--ced", type=Path, default=None, help="write the CED plot here (none by default)"
    )
    parser.add_argument("--json", type=Path, default=None, help="per-image errors as JSON")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument(
        "--flip",
        choices=["auto", "on", "off"],
        default="auto",
        help="mirror views as the CLI's --flip (auto: its default for images)",
    )
    parser.add_argument("--wild", action="store_true", help="rotation, close-ups, non-faces")
    parser.add_argument(
        "--angles", type=float, nargs="+", default=[45.0, 90.0, 135.0, 180.0, 270.0]
    )
    parser.add_argument("--rotation-faces", type=int, default=40)
    parser.add_argument("--limit", type=int, default=None, help="first N images per folder")
    parser.add_argument(
        "--fold",
        type=parse_fold,
        default=None,
        help="K/N: only fold K of N of each folder (score a calibration fitted on another "
        "fold: training/calibrate.py --fold)",
    )
    parser.add_argument(
        "--recrop-iou", type=float, default=None, help="FaceAligner's recrop_iou (default: its own)"
    )
    parser.add_argument(
        "--close-ups-only", action="store_true", help="with --wild: only close-ups and whole"
    )
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=WILD_PARTS,
        default=list(WILD_PARTS),
        help="with --wild: the parts to run (default all)",
    )
    parser.add_argument(
        "--no-folder",
        dest="folder",
        action="store_false",
        help="with --wild: skip the plain evaluation of the folder (the whole-val table)",
    )
    args = parser.parse_args()

    from util.aligner import FaceAligner
    from util.run_options import flip_setting

    aligner = FaceAligner(
        model_2d=args.model_2d,
        detector_model=args.detector,
        runtime="onnxruntime",
        threads=args.threads,
        flip=flip_setting(args.flip),
        precision=args.precision,
        **({} if args.recrop_iou is None else {"recrop_iou": args.recrop_iou}),
    )
    name = Path(args.model_2d).stem if args.model_2d else aligner.landmark_model.model.path.stem
    print(TABLE_HEADER)
    curves, report = {}, {}
    for folder in args.data:
        samples = load_annotated(folder)[: args.limit]
        members = in_fold([sample.image.stem for sample in samples], args.fold)
        samples = [sample for sample, keep in zip(samples, members, strict=True) if keep]
        if not samples:
            print(f"{folder}: no images with .pts files", file=sys.stderr)
            return 2
        report[str(folder)] = {}
        if args.folder or not args.wild:
            metrics, records = evaluate_folder(aligner, samples)
            label = f"{name} / {folder.name}"
            print(format_row(label, metrics))
            offsets = summarise_offsets(samples, records)
            for source, o in offsets.items():
                print(
                    f"  {source:<10} {o['faces']:>4} faces: mean offset x "
                    f"{100 * o['dx_io']:+.2f} %, y {100 * o['dy_io']:+.2f} % of inter-ocular "
                    "(+ = right, down)"
                )
            curves[label] = np.array([r["nme_io"] for r in records if "nme_io" in r])
            report[str(folder)] = {"metrics": metrics, "offsets": offsets, "images": records}
        if args.wild:
            parts = ("close-ups",) if args.close_ups_only else tuple(args.parts)
            wild = evaluate_wild(aligner, samples, args.angles, args.rotation_faces, parts)
            print_wild(wild)
            report[str(folder)]["wild"] = wild
    # Only when asked: a stray ced.png in whatever folder it ran from helps no one.
    title = "Cumulative error distribution, end to end"
    if args.ced and curves and plot_ced(curves, args.ced, title):
        print(f"CED plot: {args.ced}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
