"""300-W faces for training: loading, detector-like crops, and hard augmentation.

Training crops are made the way the tool crops detections at run time: a detection
box is simulated from the landmarks with the statistics BlazeFace boxes show on this
data (load_box_stats: from the detector's spec, as the tool reads them), jittered,
then cropped by util.crop with the model's own crop_scale / crop_shift_y. Train and
test crops so agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from training.paths import DATA_ROOT as DATA_ROOT  # re-exported: the trainers import it here
from util.crop import box_from_landmarks, crop_box, crop_matrix, transform_points, warp_crop
from util.detect import default_detector_path
from util.landmarks import MIRROR_PERMUTATION, read_pts
from util.model_facts import BOX_STATS_FIELDS, BOX_STATS_KEY, DetectorFacts
from util.runtime import ModelError, read_spec, spec_facts

# Crops are small; OpenCV threads would only fight torch for the two cores.
cv2.setNumThreads(1)


def load_box_stats(detector: Path | None = None) -> dict[str, float]:
    """How the detector's boxes sit on the landmarks (``{field}_mean``, ``{field}_std``,
    in landmark-box sizes), for detector-like crops: read from the detector's spec (the
    default detector's unless given), where training/detector_box_stats.py writes them
    and where the tool reads them too, so training and run time crop alike."""
    path = default_detector_path() if detector is None else Path(detector)
    facts = spec_facts(read_spec(path), path)
    stats = facts.box_vs_landmarks if isinstance(facts, DetectorFacts) else None
    wanted = [f"{key}_std" for key in BOX_STATS_FIELDS]
    if stats is None or any(key not in stats for key in wanted):
        raise ModelError(
            f"{path}: its spec has no {BOX_STATS_KEY} with spreads "
            "(measure them: python -m training.detector_box_stats --detector PATH)"
        )
    means = {f"{key}_mean": stats[key] for key in BOX_STATS_FIELDS}
    return means | {key: stats[key] for key in wanted}


@dataclass
class Face:
    name: str
    image: np.ndarray  # uint8 RGB
    points: np.ndarray  # (68, 2) float32, image pixels


def load_folder(folder: Path, limit: int | None = None, required: bool = False) -> list[Face]:
    """Every NAME.jpg with its NAME.pts in ``folder`` (sorted), decoded to RGB.
    ``required``: none is a one-line exit naming the folder (a run needs them), not a
    shape error later."""
    faces = []
    for jpg in sorted(folder.glob("*.jpg"))[:limit]:
        image = cv2.imread(str(jpg), cv2.IMREAD_COLOR)
        if image is None:
            continue
        faces.append(Face(jpg.stem, image[..., ::-1].copy(), read_pts(jpg.with_suffix(".pts"))))
    if required and not faces:
        raise SystemExit(f"{folder}: no NAME.jpg with NAME.pts found")
    return faces


def detector_box(
    points: np.ndarray,
    stats: dict[str, float],
    rng: np.random.Generator | None,
    jitter: float = 1.0,
) -> np.ndarray:
    """A BlazeFace-like box for these landmarks: mean offsets, plus noise when rng given."""
    dx, dy, ratio = stats["centre_dx_mean"], stats["centre_dy_mean"], stats["size_ratio_mean"]
    if rng is not None:
        dx += rng.normal() * stats["centre_dx_std"] * jitter
        dy += rng.normal() * stats["centre_dy_std"] * jitter
        ratio *= float(np.exp(rng.normal() * stats["size_ratio_std"] * jitter))
    return box_from_landmarks(points, dx, dy, ratio)


@dataclass(frozen=True)
class CropSettings:
    size: int = 256
    scale: float = 1.5
    shift_y: float = 0.07


def make_crop(
    face: Face,
    crop: CropSettings,
    stats: dict[str, float],
    rng: np.random.Generator | None,
    augment: bool,
    carry: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(crop uint8 RGB, points in crop pixels, ``carry`` in crop pixels), augmented when
    ``augment``. ``carry``: another (68, 2) set of the face's landmarks (the 3D
    convention's), moved with the crop; the box comes from ``face.points``."""
    image, points = face.image, face.points.astype(np.float64)
    if carry is not None:
        carry = np.asarray(carry, np.float64)
    if augment and rng.random() < 0.5:
        image = image[:, ::-1]
        points = points[MIRROR_PERMUTATION].copy()
        points[:, 0] = image.shape[1] - 1 - points[:, 0]
        if carry is not None:
            carry = carry[MIRROR_PERMUTATION].copy()
            carry[:, 0] = image.shape[1] - 1 - carry[:, 0]
    box = detector_box(points, stats, rng if augment else None, jitter=1.5)
    centre, side = crop_box(box, crop.scale, crop.shift_y)
    angle = 0.0
    if augment:
        # The run-time crop is turned upright by the roll the detector's keypoints (or
        # the previous video frame) give; this is the residual roll it leaves.
        angle = float(np.clip(rng.normal(0, 15), -45, 45)) if rng.random() < 0.8 else 0.0
        # Wider toward zoomed-in: detector boxes on close-ups come out small.
        side *= float(np.exp(rng.uniform(-0.2, 0.12)))
    matrix = crop_matrix(centre, side, crop.size, angle)
    out = warp_crop(np.ascontiguousarray(image), matrix, crop.size)
    pts = transform_points(points, matrix)
    if augment:
        if rng.random() < 0.12:
            out = frame_edge(out, pts, rng)
        out = photometric(out, rng)
    carried = None if carry is None else transform_points(carry, matrix).astype(np.float32)
    return out, pts.astype(np.float32), carried


def frame_edge(crop: np.ndarray, points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Black beyond a random crop edge that cuts into the face: a close-up photo whose
    frame ends at the forehead, the chin or a cheek (the run-time crop pads with black)."""
    out = crop.copy()
    lo, hi = points.min(0), points.max(0)
    size = float(np.sqrt(np.prod(hi - lo)))
    depth = float(rng.uniform(-0.1, 0.15)) * size  # how far into the landmark box
    side = int(rng.integers(4))
    if side == 0:
        out[: max(0, int(lo[1] + depth))] = 0
    elif side == 1:
        out[max(0, int(hi[1] - depth)) :] = 0
    elif side == 2:
        out[:, : max(0, int(lo[0] + depth))] = 0
    else:
        out[:, max(0, int(hi[0] - depth)) :] = 0
    return out


def validation_crop(
    face: Face, crop: CropSettings, stats: dict[str, float]
) -> tuple[np.ndarray, np.ndarray]:
    """(crop uint8 RGB, 2x3 matrix) from the mean detector-like box, no augmentation."""
    centre, side = crop_box(detector_box(face.points, stats, None), crop.scale, crop.shift_y)
    matrix = crop_matrix(centre, side, crop.size)
    return warp_crop(face.image, matrix, crop.size), matrix


def photometric(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour, grey, blur, noise and occlusion, each at random."""
    img = image.astype(np.float32)
    if rng.random() < 0.8:  # brightness, contrast, per-channel colour
        img = img * rng.uniform(0.6, 1.4) + rng.uniform(-40, 40)
        img = img * rng.uniform(0.85, 1.15, size=3)
        mean = img.mean()
        img = (img - mean) * rng.uniform(0.6, 1.4) + mean
    if rng.random() < 0.15:
        img[:] = img.mean(axis=2, keepdims=True)
    if rng.random() < 0.25:
        k = int(rng.choice([3, 5, 7]))
        img = cv2.GaussianBlur(img, (k, k), 0)
    if rng.random() < 0.25:
        img = img + rng.normal(0, rng.uniform(3, 15), img.shape)
    if rng.random() < 0.3:  # occluding patch of random colour or noise
        h, w = rng.integers(30, 110, size=2)
        y, x = rng.integers(0, image.shape[0] - h), rng.integers(0, image.shape[1] - w)
        fill = rng.uniform(0, 255, 3) if rng.random() < 0.5 else rng.uniform(0, 255, (h, w, 3))
        img[y : y + h, x : x + w] = fill
    return np.clip(img, 0, 255).astype(np.uint8)
