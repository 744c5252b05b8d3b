"""The 68-point iBUG / Multi-PIE scheme: groups, mirror pairs, .pts files, metrics.

Point i is landmark i (0-based). "Right" and "left" are the subject's: the right eye
(36-41) appears on the image's left in a frontal photo.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

NUM_LANDMARKS = 68

# Contour groups, in drawing order; closed groups are drawn as loops.
GROUPS: dict[str, tuple[range, bool]] = {
    "jaw": (range(0, 17), False),
    "right_brow": (range(17, 22), False),
    "left_brow": (range(22, 27), False),
    "nose_bridge": (range(27, 31), False),
    "nose_base": (range(31, 36), False),
    "right_eye": (range(36, 42), True),
    "left_eye": (range(42, 48), True),
    "outer_lips": (range(48, 60), True),
    "inner_lips": (range(60, 68), True),
}


def _mirror_permutation() -> np.ndarray:
    """Index map so that ``points[perm]`` of a mirrored face is in iBUG order again."""
    pairs = [(i, 16 - i) for i in range(8)]  # jaw
    pairs += [(17 + i, 26 - i) for i in range(5)]  # brows
    pairs += [(31, 35), (32, 34)]  # nostrils
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(48, 54), (49, 53), (50, 52), (59, 55), (58, 56)]  # outer lips
    pairs += [(60, 64), (61, 63), (67, 65)]  # inner lips
    perm = np.arange(NUM_LANDMARKS)
    for a, b in pairs:
        perm[a], perm[b] = b, a
    perm.setflags(write=False)  # a fact of the scheme, shared: nobody may change it
    return perm


MIRROR_PERMUTATION = _mirror_permutation()


def read_pts(path: str | os.PathLike) -> np.ndarray:
    """Read an iBUG .pts file into a float32 (N, 2) array."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "{")
        end = next(i for i, line in enumerate(lines) if line.strip() == "}")
        points = [[float(v) for v in line.split()[:2]] for line in lines[start + 1 : end]]
    except (StopIteration, ValueError, IndexError):
        raise ValueError(f"{path}: not an iBUG .pts file") from None
    return np.asarray(points, dtype=np.float32).reshape(-1, 2)


def format_pts(points: np.ndarray) -> str:
    """iBUG .pts text for (N, 2) points (extra columns, e.g. z, are left out)."""
    body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in np.asarray(points)[:, :2])
    return f"version: 1\nn_points:  {len(points)}\n{{\n{body}\n}}\n"


def write_pts(path: str | os.PathLike, points: np.ndarray) -> None:
    """Write (N, 2) points as an iBUG .pts file, atomically."""
    from .io import write_bytes_atomic

    write_bytes_atomic(path, format_pts(points).encode("utf-8"))


def inter_ocular(points: np.ndarray) -> float:
    """Outer-eye-corner distance (points 36 and 45), the 300-W normaliser."""
    return float(np.linalg.norm(points[36, :2] - points[45, :2]))


def box_size(points: np.ndarray) -> float:
    """Square root of the landmark bounding-box area (the FAN paper's normaliser)."""
    span = points[:, :2].max(0) - points[:, :2].min(0)
    return float(np.sqrt(max(span[0] * span[1], 1e-12)))


def nme(pred: np.ndarray, truth: np.ndarray, norm: float) -> float:
    """Mean point-to-point distance over ``norm``."""
    return float(np.linalg.norm(pred[:, :2] - truth[:, :2], axis=1).mean() / norm)
