"""How the face detector's boxes sit on the annotated faces, and which detector misses least.

For every image with an iBUG .pts file, the annotated face's landmark box (min/max of
the 68 points) is matched to the detection overlapping it best (IoU > 0.3, or the
detection box contains the landmark box centre). An annotated face with no such
detection is a miss.

1. Miss counts on 300w/val (whole images) for several detector options: the front
   (128 px) and back (256 px) BlazeFace models, back with front as a fallback when back
   finds nothing, and both on images shrunk inside a larger black canvas ("zoom out",
   for faces that fill the photo) or downscaled to a long side of 512 px first.
2. With the detector (``--detector``, default util.detect.DEFAULT_DETECTOR_MODEL),
   statistics of the matched box relative to the landmarks, on 300w/val and ~300
   300w/train crops: centre offset (det_centre - lm_centre) / lm_size in x and y, and
   det_size / lm_size, where size = sqrt(w * h).

The pooled statistics (means and spreads) are written into the detector's spec, the JSON
file beside it (key ``box_vs_landmarks``, see util.model_facts.BOX_STATS_KEY): the one home
that training (detector-like crops, training/data.py) and the tool (video following,
re-cropping) read, and that tools/convert_blazeface.py keeps when it converts again. The
miss counts and the per-split numbers go to the report, training/detector_box_stats.json.

Usage (from the repository root):
    python -m training.detector_box_stats [--data DIR] [--detector ONNX] [--skip-misses]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from training.paths import DATA_300W, MODELS_DIR, REPO
from util.detect import (
    RETRY_CANVAS,
    Detection,
    FaceDetector,
    box_iou,
    default_detector_path,
)
from util.landmarks import read_pts
from util.model_facts import BOX_STATS_FIELDS, BOX_STATS_KEY
from util.runtime import read_spec

DEFAULT_DATA = DATA_300W
OUT_PATH = REPO / "training" / "detector_box_stats.json"
# Decimals of the statistics in the spec: over ~470 faces the standard error of each
# mean is about 0.002, so a third decimal is all there is to keep.
SPEC_DECIMALS = 3
MATCH_IOU = 0.3
NUM_TRAIN = 300

Detect = Callable[[np.ndarray], list[Detection]]


def load_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"{path}: cannot read image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def samples(folder: Path, limit: int | None = None) -> list[Path]:
    """Images with a .pts file beside them; ``limit`` spreads evenly over the sorted list."""
    paths = sorted(p for p in folder.glob("*.jpg") if p.with_suffix(".pts").is_file())
    if limit is not None and len(paths) > limit:
        paths = [paths[i] for i in np.linspace(0, len(paths) - 1, limit).round().astype(int)]
    return paths


def landmark_box(points: np.ndarray) -> np.ndarray:
    return np.concatenate([points.min(axis=0), points.max(axis=0)]).astype(np.float64)


def match(lm_box: np.ndarray, detections: list[Detection]) -> Detection | None:
    """The detection best overlapping the landmark box, if any counts as a hit."""
    if not detections:
        return None
    boxes = np.stack([d.bbox for d in detections]).astype(np.float64)
    ious = box_iou(lm_box, boxes)
    cx, cy = (lm_box[:2] + lm_box[2:]) / 2
    contains = (boxes[:, 0] <= cx) & (cx <= boxes[:, 2]) & (boxes[:, 1] <= cy) & (cy <= boxes[:, 3])
    hits = (ious > MATCH_IOU) | contains
    if not hits.any():
        return None
    return detections[int(np.argmax(np.where(hits, ious + contains, -1.0)))]


def box_stats(lm_box: np.ndarray, det_box: np.ndarray) -> tuple[float, float, float]:
    """((det_cx - lm_cx) / lm_size, (det_cy - lm_cy) / lm_size, det_size / lm_size)."""
    lm_w, lm_h = lm_box[2:] - lm_box[:2]
    det_w, det_h = det_box[2:] - det_box[:2]
    lm_size = np.sqrt(lm_w * lm_h)
    offset = ((det_box[:2] + det_box[2:]) - (lm_box[:2] + lm_box[2:])) / 2 / lm_size
    return float(offset[0]), float(offset[1]), float(np.sqrt(det_w * det_h) / lm_size)


# --------------------------------------------------------------------------- options


def downscaled(detect: Detect, factor: float) -> Detect:
    """Run ``detect`` on the image resized by ``factor``; map detections back."""

    def run(image: np.ndarray) -> list[Detection]:
        height, width = image.shape[:2]
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        scale = np.array([size[0] / width, size[1] / height])

        def back(points: np.ndarray) -> np.ndarray:
            return ((points + 0.5) / scale - 0.5).astype(np.float32)

        return [
            Detection(back(d.bbox.reshape(2, 2)).reshape(4), d.score, back(d.keypoints))
            for d in detect(small)
        ]

    return run


def fallback(first: Detect, second: Detect) -> Detect:
    def run(image: np.ndarray) -> list[Detection]:
        return first(image) or second(image)

    return run


def detector_options() -> dict[str, Detect]:
    def load(name: str, retry: bool) -> Detect:
        canvas = RETRY_CANVAS if retry else None
        return FaceDetector(MODELS_DIR / name, threads=1, retry_canvas=canvas).detect

    front, back = load("blazeface_front.onnx", False), load("blazeface_back.onnx", False)
    return {
        "front": front,
        "back": back,
        "back, else front": fallback(back, front),
        "front, image downscaled 2x first": downscaled(front, 0.5),
        "back, image downscaled 2x first": downscaled(back, 0.5),
        f"front + retry zoomed out {RETRY_CANVAS}x": load("blazeface_front.onnx", True),
        f"back + retry zoomed out {RETRY_CANVAS}x": load("blazeface_back.onnx", True),
    }


# --------------------------------------------------------------------------- conditions


def as_is(image: np.ndarray, lm_box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return image, lm_box


def small_face(image: np.ndarray, lm_box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The photo centred in a black canvas 3x its size: faces 1/3 as large."""
    height, width = image.shape[:2]
    top, left = height, width
    big = cv2.copyMakeBorder(image, top, top, left, left, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    return big, lm_box + [left, top, left, top]


def tight_crop(image: np.ndarray, lm_box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A square crop the size of the landmark box (sqrt(w*h)) around its centre."""
    centre = (lm_box[:2] + lm_box[2:]) / 2
    side = round(float(np.sqrt(np.prod(lm_box[2:] - lm_box[:2]))))
    x0, y0 = np.round(centre - side / 2).astype(int)
    shift = np.float32([[1, 0, -x0], [0, 1, -y0]])
    crop = cv2.warpAffine(image, shift, (side, side), borderMode=cv2.BORDER_REPLICATE)
    return crop, lm_box - [x0, y0, x0, y0]


CONDITIONS = {
    "val as is": ("val", as_is),
    "val, faces 3x smaller": ("val", small_face),
    "val + train, tight crops": ("both", tight_crop),
}


def miss_counts(val: list[Path], train: list[Path]) -> dict[str, dict[str, int]]:
    """Missed annotated faces for each condition and detector option."""
    options = detector_options()
    results: dict[str, dict[str, int]] = {}
    for condition, (which, transform) in CONDITIONS.items():
        paths = val if which == "val" else val + train[::2]
        cases = []
        for path in paths:
            lm_box = landmark_box(read_pts(path.with_suffix(".pts")))
            cases.append(transform(load_rgb(path), lm_box))
        results[condition] = {"images": len(cases)}
        print(f"{condition} ({len(cases)} faces): misses")
        for name, detect in options.items():
            misses = sum(match(lm_box, detect(image)) is None for image, lm_box in cases)
            results[condition][name] = misses
            print(f"  {name:36s} {misses:4d}")
    return results


def eye_order(detector: FaceDetector, paths: list[Path]) -> str:
    """How often keypoint 0 is nearer the subject's right eye (iBUG 36-41) than the left."""
    right = total = 0
    for path in paths:
        points = read_pts(path.with_suffix(".pts"))
        hit = match(landmark_box(points), detector.detect(load_rgb(path)))
        if hit is not None:
            total += 1
            to_right = np.linalg.norm(hit.keypoints[0] - points[36:42].mean(axis=0))
            right += to_right < np.linalg.norm(hit.keypoints[0] - points[42:48].mean(axis=0))
    return f"{right}/{total}"


def collect(detector: FaceDetector, paths: list[Path]) -> tuple[np.ndarray, int]:
    """(M, 3) box statistics of the matched detections, and the number of misses."""
    rows, misses = [], 0
    for path in paths:
        lm_box = landmark_box(read_pts(path.with_suffix(".pts")))
        hit = match(lm_box, detector.detect(load_rgb(path)))
        if hit is None:
            misses += 1
        else:
            rows.append(box_stats(lm_box, hit.bbox.astype(np.float64)))
    return np.asarray(rows, np.float64).reshape(-1, 3), misses


def summary(rows: np.ndarray) -> dict[str, float]:
    mean, std = rows.mean(axis=0), rows.std(axis=0)
    return {
        "centre_dx_mean": round(float(mean[0]), 4),
        "centre_dx_std": round(float(std[0]), 4),
        "centre_dy_mean": round(float(mean[1]), 4),
        "centre_dy_std": round(float(std[1]), 4),
        "size_ratio_mean": round(float(mean[2]), 4),
        "size_ratio_std": round(float(std[2]), 4),
        "n": len(rows),
    }


def spec_entry(rows: np.ndarray, faces: str) -> dict:
    """The detector spec's ``box_vs_landmarks``: pooled means and spreads of ``rows``."""
    mean, std = rows.mean(axis=0), rows.std(axis=0)
    entry: dict = {}
    for key, m in zip(BOX_STATS_FIELDS, mean, strict=True):
        entry[key] = round(float(m), SPEC_DECIMALS)
    for key, s in zip(BOX_STATS_FIELDS, std, strict=True):
        entry[f"{key}_std"] = round(float(s), SPEC_DECIMALS)
    entry["n"] = len(rows)
    entry["unit"] = "landmark-box size (sqrt of area); measured on 300-W faces"
    entry["measured_by"] = f"training/detector_box_stats.py on {faces}"
    return entry


def write_box_stats(detector: Path, entry: dict) -> Path:
    """Put ``entry`` into the detector's sidecar spec (NAME.json beside NAME.onnx; made
    from the spec in the ONNX metadata when there is none), the other keys kept."""
    sidecar = detector.with_suffix(".json")
    spec = read_spec(detector).to_dict()
    spec["extra"][BOX_STATS_KEY] = entry
    partial = sidecar.with_name(sidecar.name + ".partial")
    partial.write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, sidecar)  # a reader never sees half a spec
    return sidecar


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the 300w folder")
    parser.add_argument("--num-train", type=int, default=NUM_TRAIN)
    parser.add_argument("--skip-misses", action="store_true", help="only the box statistics")
    parser.add_argument(
        "--detector", type=Path, default=default_detector_path(), help="BlazeFace ONNX file"
    )
    parser.add_argument("--out", type=Path, default=OUT_PATH, help="the report (JSON)")
    args = parser.parse_args(argv)
    val = samples(args.data / "val")
    train = samples(args.data / "train", args.num_train)
    if not val or not train:
        raise SystemExit(f"no images with .pts files under {args.data}/val and /train")

    name = args.detector.name
    result: dict = {
        "detector": name,
        "retry_canvas": RETRY_CANVAS,
        "definition": (
            "lm_box = min/max box of the 68 points, size = sqrt(w*h); centre_d* = "
            "(det_centre - lm_centre) / lm_size, size_ratio = det_size / lm_size; "
            "pixel-centre coordinates. The pooled val + train numbers are in the "
            f"detector's spec ({args.detector.with_suffix('.json').name}, {BOX_STATS_KEY})"
        ),
    }
    previous = json.loads(args.out.read_text(encoding="utf-8")) if args.out.is_file() else {}
    if not args.skip_misses:
        result["misses"] = miss_counts(val, train)
    elif "misses" in previous:
        result["misses"] = previous["misses"]  # kept from the last full run

    detector = FaceDetector(args.detector, threads=1)
    result["keypoint0_is_right_eye_on_val"] = eye_order(detector, val)
    rows_val, miss_val = collect(detector, val)
    rows_train, miss_train = collect(detector, train)
    for split, rows, misses, total in (
        ("val", rows_val, miss_val, len(val)),
        ("train", rows_train, miss_train, len(train)),
    ):
        result[split] = {**summary(rows), "images": total, "misses": misses}
        print(f"{name} on {split}: {result[split]}")
    faces = f"300w/val ({len(val)}) and {len(train)} 300w/train faces"
    entry = spec_entry(np.concatenate([rows_val, rows_train]), faces)
    print(f"pooled: {entry}")
    print(f"wrote {write_box_stats(args.detector, entry)} ({BOX_STATS_KEY})")
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
