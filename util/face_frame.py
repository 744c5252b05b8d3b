"""The face's own frame: x along the eye line, from the 68 landmarks.

Crops are turned by this roll to make faces upright, the tracker follows it from frame
to frame, and a model's per-landmark calibration is stored in this frame so that it
turns with the face.
"""

from __future__ import annotations

import numpy as np


def face_roll(points: np.ndarray) -> float:
    """In-plane angle (radians) of the line from the right-eye centre (points 36-41) to
    the left-eye centre (42-47): 0 for an upright face."""
    dx, dy = np.asarray(points[42:48]).mean(0) - np.asarray(points[36:42]).mean(0)
    return float(np.arctan2(dy, dx))


def angle_difference(a: float, b: float) -> float:
    """a - b in degrees, wrapped into [-180, 180): how far one roll is from another."""
    return (a - b + 180.0) % 360.0 - 180.0


def face_rotation(points: np.ndarray) -> np.ndarray:
    """2x2 rotation from the face's own frame (x along the eye line) to the image's:
    ``vectors @ R.T`` turns face-frame vectors into image ones, ``vectors @ R`` back."""
    angle = face_roll(points)
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def apply_offsets(points: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Add per-landmark offsets given in the face's own frame (x along the eye line),
    rotated by the face's roll: a model's calibration, measured on its training set."""
    rotation = face_rotation(points)
    return np.asarray(points, dtype=np.float64) + np.asarray(offsets) @ rotation.T
