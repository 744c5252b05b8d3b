"""Head pose: yaw, pitch and roll in AFLW2000-3D's ``Pose_Para`` convention, the one
head-pose benchmarks (HopeNet, FSA-Net, 6DRepNet, 3DDFA) compare against.

The convention (3DDFA's matrices): ``rotation = Rx(pitch) @ Ry(yaw) @ Rz(roll)`` with

    Rx(a) = [[1, 0, 0], [0, cos a, sin a], [0, -sin a, cos a]]
    Ry(a) = [[cos a, 0, -sin a], [0, 1, 0], [sin a, 0, cos a]]
    Rz(a) = [[cos a, sin a, 0], [-sin a, cos a, 0], [0, 0, 1]]

acting on head coordinates with x to the image's right, y UP and z toward the camera.
In the image frame of the landmarks (y down), the same rotation is
``F @ rotation @ F`` with ``F = diag(1, -1, 1)``. Signs, in degrees: yaw > 0 when the
nose turns toward the image's left (the subject turns to their right), pitch > 0 when
the face looks up, roll > 0 when the face is turned clockwise in the image (the eye
on the image's left higher). Measured on the AFLW2000-3D dev faces' labels.

The shape fit (util.shape_prior) gives the rotation of the prior's canonical frame into
the image frame; ``ShapePrior.pose_frame`` is the fixed rotation of that canonical
frame relative to the benchmark's frontal head (measured when the prior is built).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .shape_prior import Fit, ShapePrior, fit_to_2d

# The shape fits the pose is read from keep this close to the prior (as the depth fit).
POSE_REGULARISER = 10.0
# The 2D convention's inner points (brows, eyes, nose, mouth): its jaw follows the face's
# outline, not where the 3D points project, so the fit leaves it out.
INNER_POINTS = np.arange(17, 68)

_FLIP_Y = np.diag([1.0, -1.0, 1.0])


def rotation_from_angles(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """``Rx(pitch) @ Ry(yaw) @ Rz(roll)`` (module docstring) for angles in degrees."""
    p, y, r = np.radians([pitch, yaw, roll])
    rx = np.array([[1, 0, 0], [0, np.cos(p), np.sin(p)], [0, -np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(y), 0, -np.sin(y)], [0, 1, 0], [np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), np.sin(r), 0], [-np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rx @ ry @ rz


def angles_from_rotation(rotation: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of a rotation in the module's convention."""
    r = np.asarray(rotation, np.float64)
    yaw = np.arcsin(np.clip(-r[0, 2], -1.0, 1.0))
    pitch = np.arctan2(r[1, 2], r[2, 2])
    roll = np.arctan2(r[0, 1], r[0, 0])
    return tuple(float(v) for v in np.degrees([yaw, pitch, roll]))


def nearest_rotation(matrix: np.ndarray) -> np.ndarray:
    """The proper rotation nearest a 3x3 matrix (e.g. an average of rotations)."""
    u, _, vt = np.linalg.svd(np.asarray(matrix, np.float64))
    if np.linalg.det(u @ vt) < 0:
        u[:, 2] *= -1
    return u @ vt


@dataclass(frozen=True, eq=False)
class HeadPose:
    """A face's head pose: angles in degrees and their rotation (module docstring)."""

    yaw: float
    pitch: float
    roll: float
    rotation: np.ndarray  # (3, 3), Rx(pitch) Ry(yaw) Rz(roll)

    @classmethod
    def from_rotation(cls, rotation: np.ndarray) -> HeadPose:
        rotation = nearest_rotation(rotation)
        return cls(*angles_from_rotation(rotation), rotation=rotation)

    @classmethod
    def from_fit(cls, fit_rotation: np.ndarray, pose_frame: np.ndarray) -> HeadPose:
        """The pose of a shape fit's rotation (prior frame -> image frame, y down), with
        the prior's ``pose_frame``."""
        rotation = _FLIP_Y @ np.asarray(fit_rotation, np.float64) @ pose_frame.T @ _FLIP_Y
        return cls.from_rotation(rotation)

    @property
    def image_rotation(self) -> np.ndarray:
        """The rotation in the landmarks' image frame (x right, y down, z toward the
        camera): its columns are the head's axes as seen in the image."""
        return _FLIP_Y @ self.rotation @ _FLIP_Y


def pose_fit(
    prior: ShapePrior,
    points_3d: np.ndarray,
    points_2d: np.ndarray,
    from_3d: Fit | None = None,
) -> tuple[Fit, np.ndarray]:
    """(the prior's fit to the 3D-convention x, y, the fit rotation a face's head pose is
    read from). The rotation (prior frame -> image frame) is the mean of that fit's and
    of the fit to the 2D model's inner points, made a rotation again: the two networks
    err differently. On the AFLW2000-3D validation faces (training/pose_frame.py), 5.5 deg
    MAE from the 3D points alone, 4.5 from the 2D points' inner ones, 4.0 from both
    (version 11's 3D file). The first fit also gives z at that rotation (util.depth).
    ``from_3d``: that first fit, when the caller has made it already (the same x, y at
    POSE_REGULARISER)."""
    if from_3d is None:
        from_3d = fit_to_2d(prior, np.asarray(points_3d)[:, :2], regulariser=POSE_REGULARISER)
    from_2d = fit_to_2d(prior, np.asarray(points_2d)[:, :2], regulariser=POSE_REGULARISER,
                        visible=INNER_POINTS)  # fmt: skip
    return from_3d, nearest_rotation(from_3d.rotation + from_2d.rotation)


def pose_frame_from_fits(fit_rotations: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """The fixed rotation from a prior's canonical frame to the benchmark's frontal head:
    the rotation nearest the mean of ``true.T @ fit`` over faces whose fitted rotations
    (N, 3, 3) and true (yaw, pitch, roll) (N, 3) in degrees are given."""
    total = np.zeros((3, 3))
    for fit, (yaw, pitch, roll) in zip(fit_rotations, angles, strict=True):
        true = _FLIP_Y @ rotation_from_angles(yaw, pitch, roll) @ _FLIP_Y
        total += true.T @ fit
    return nearest_rotation(total)
