"""The AFLW2000-3D dev half (``../shared/data/aflw2000``): its split, its labels, and the
benchmark's scoring (3DDFA-V2's: x, y of the 3D points against ``pt3d_68``, NME over
sqrt(w * h) of the ground-truth box, balanced over |yaw| bins; head pose as head-pose
papers score it, the mean absolute error of yaw, pitch and roll).

The split is one rule, written here only: within each |yaw| bin, faces in name order,
every fourth (the 4th, 8th, ...) is a validation face, the rest train. So both parts keep
the bins' shares (656 / 191 / 153 faces: 164 / 47 / 38 for validation).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.paths import DATA_ROOT

AFLW_DIR = DATA_ROOT / "aflw2000"
AFLW_SHAPES = DATA_ROOT / "aflw2000_3d_shapes.npy"
YAW_BINS = ((0.0, 30.0), (30.0, 60.0), (60.0, 90.0))
VAL_EVERY = 4
# Head-pose benchmarks keep faces whose every |angle| is at most this (degrees).
POSE_RANGE = 99.0


@dataclass(frozen=True)
class AflwLabels:
    names: np.ndarray  # (N,) str
    pt3d: np.ndarray  # (N, 68, 3) x, y image pixels, z toward the camera
    pose: np.ndarray  # (N, 3) pitch, yaw, roll in degrees (Pose_Para)

    def __len__(self) -> int:
        return len(self.names)

    def take(self, index: np.ndarray) -> AflwLabels:
        return AflwLabels(self.names[index], self.pt3d[index], self.pose[index])

    def image_path(self, i: int) -> Path:
        return AFLW_DIR / "images" / f"{self.names[i]}.jpg"

    @property
    def yaw_bin(self) -> np.ndarray:
        """Index into YAW_BINS of each face's |yaw|."""
        return yaw_bins(self.pose[:, 1])


def yaw_bins(yaw_degrees: np.ndarray) -> np.ndarray:
    edges = np.array([high for _, high in YAW_BINS[:-1]])
    return np.searchsorted(edges, np.abs(yaw_degrees), side="right")


def load_labels(folder: Path = AFLW_DIR) -> AflwLabels:
    with np.load(folder / "labels.npz") as data:
        return AflwLabels(
            names=data["names"].astype(str),
            pt3d=data["pt3d_68"].astype(np.float64),
            pose=np.degrees(data["pose_para"][:, :3].astype(np.float64)),
        )


def split_mask(labels: AflwLabels) -> np.ndarray:
    """True for the validation faces (the module docstring's rule)."""
    val = np.zeros(len(labels), bool)
    bins = labels.yaw_bin
    for b in range(len(YAW_BINS)):
        members = np.flatnonzero(bins == b)
        members = members[np.argsort(labels.names[members], kind="stable")]
        val[members[VAL_EVERY - 1 :: VAL_EVERY]] = True
    return val


def split(part: str, labels: AflwLabels | None = None) -> AflwLabels:
    """The "train", "val" or "all" faces."""
    labels = load_labels() if labels is None else labels
    if part == "all":
        return labels
    if part not in ("train", "val"):
        raise ValueError(f"unknown part {part!r}")
    mask = split_mask(labels)
    return labels.take(np.flatnonzero(mask if part == "val" else ~mask))


def gt_box_size(pt3d: np.ndarray) -> np.ndarray:
    """sqrt(w * h) of the x, y box of the ground-truth 3D points (3DDFA-V2's normaliser)."""
    span = pt3d[..., :2].max(-2) - pt3d[..., :2].min(-2)
    return np.sqrt(span[..., 0] * span[..., 1])


def nearest_face(centres: list[np.ndarray], pt3d: np.ndarray) -> int | None:
    """Index of the found face over the labelled one: the one whose points' centre
    (``centres``) lies nearest the labels' centre, within half the labels' box; None
    when none does."""
    centre, best, best_distance = pt3d[:, :2].mean(0), None, 0.5 * float(gt_box_size(pt3d))
    for k, found in enumerate(centres):
        distance = float(np.linalg.norm(np.asarray(found)[:2] - centre))
        if distance < best_distance:
            best, best_distance = k, distance
    return best


def balanced(values: np.ndarray, bins: np.ndarray) -> tuple[list[float], float]:
    """Per-bin means (NaN for empty bins) and their mean."""
    means = [
        float(values[bins == b].mean()) if np.any(bins == b) else float("nan")
        for b in range(len(YAW_BINS))
    ]
    return means, float(np.nanmean(means))


def pose_mae(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """|predicted - truth| of (N, 3) angles in degrees, wrapped to [0, 180]."""
    return np.abs((predicted - truth + 180.0) % 360.0 - 180.0)


# Times each training face of a |yaw| bin is seen per epoch (0-30, 30-60, 60-90 deg):
# the benchmark weighs the bins alike, the data holds 4x as many near-frontal faces.
TRAIN_REPEATS = (1, 2, 3)


def real_faces(part: str, records: Path | None = None) -> tuple[list, np.ndarray, np.ndarray]:
    """(faces, (N, 68, 3) 3D-convention labels, yaw bins) of a part, for training the 3D
    maps. Each face's ``points`` place its crop as training/data.py places all crops: on
    the tool's own 2D landmarks of the face (``records``, the CLI's JSON Lines of these
    images, as evaluate_aflw --json writes them), since at run time the 3D crop is the
    2D pipeline's; faces the records miss, or without records, on the labels' x, y."""
    import cv2

    from training.data import Face
    from training.evaluate_aflw import match_face, read_records

    labels = split(part)
    found = read_records(records) if records is not None else {}
    faces = []
    for i, name in enumerate(labels.names):
        image = cv2.imread(str(labels.image_path(i)), cv2.IMREAD_COLOR)
        if image is None:
            raise SystemExit(f"{labels.image_path(i)}: cannot be read")
        face = match_face(found.get(name), labels.pt3d[i])
        points = labels.pt3d[i, :, :2] if face is None else np.asarray(face["landmarks"])
        faces.append(Face(name, image[..., ::-1].copy(), points.astype(np.float32)))
    return faces, labels.pt3d.astype(np.float32), labels.yaw_bin
