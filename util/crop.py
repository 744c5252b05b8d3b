"""Crop a face: a square around a detection, warped to the model's input by an affine.

Coordinates everywhere are 0-based with pixel centres at integers (as iBUG .pts and
OpenCV's warpAffine). The 2x3 matrix maps original-image points to crop points; its
inverse maps the results back.
"""

from __future__ import annotations

import cv2
import numpy as np


def crop_box(bbox: np.ndarray, scale: float, shift_y: float) -> tuple[np.ndarray, float]:
    """Centre and side of the square crop for a detection box (x1, y1, x2, y2).

    side = scale * sqrt(box area); the centre moves down by ``shift_y`` * that size,
    because face detectors' boxes sit higher than the 68 landmarks.
    """
    x1, y1, x2, y2 = (float(v) for v in bbox[:4])
    size = float(np.sqrt(max(x2 - x1, 1e-6) * max(y2 - y1, 1e-6)))
    centre = np.array([(x1 + x2) / 2.0, (y1 + y2) / 2.0 + shift_y * size], dtype=np.float64)
    return centre, scale * size


def crop_matrix(
    centre: np.ndarray, side: float, out_size: int, angle_deg: float = 0.0
) -> np.ndarray:
    """2x3 affine taking the square (centre, side), rotated by ``angle_deg``, to out_size^2."""
    zoom = out_size / side
    rad = np.deg2rad(angle_deg)
    cos, sin = np.cos(rad) * zoom, np.sin(rad) * zoom
    half = (out_size - 1) / 2.0
    cx, cy = float(centre[0]), float(centre[1])
    return np.array(
        [
            [cos, sin, half - cos * cx - sin * cy],
            [-sin, cos, half + sin * cx - cos * cy],
        ],
        dtype=np.float64,
    )


def invert_matrix(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine."""
    return cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine to (N, 2) points."""
    pts = np.asarray(points, dtype=np.float64)[:, :2]
    return pts @ matrix[:, :2].T + matrix[:, 2]


def warp_crop(image: np.ndarray, matrix: np.ndarray, out_size: int) -> np.ndarray:
    """The crop itself; outside the image is black, as the model saw in training."""
    return cv2.warpAffine(
        image,
        matrix,
        (out_size, out_size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


def box_from_landmarks(
    points: np.ndarray, centre_dx: float, centre_dy: float, size_ratio: float
) -> np.ndarray:
    """The detector box (x1, y1, x2, y2) expected for these 68 landmarks.

    Offsets and size are in landmark-box sizes (sqrt of its area), as measured for a
    detector on annotated faces; used to follow faces from frame to frame on video
    and to make detector-like training crops.
    """
    lo, hi = points[:, :2].min(0), points[:, :2].max(0)
    size = float(np.sqrt(max(float(np.prod(hi - lo)), 1.0)))
    centre = (lo + hi) / 2 + np.array([centre_dx, centre_dy]) * size
    half = size_ratio * size / 2
    return np.array([centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half])
