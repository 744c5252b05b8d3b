"""Temporal smoothing of faces on video: a One Euro filter per tracked face.

One Euro (Casiez et al., CHI 2012) is a low-pass filter whose cutoff rises with the
speed of the signal: strong smoothing while a face is still, little while it moves. The
default settings were chosen on benchmarks/tracking.py (clips with known motion, faces
with eyes 70 px apart moving 4 px and 1 degree per frame): there they take the jitter
of a still face to a third of the raw one, and the error while moving to 1.06 times the
raw one, the points 0.2 frame behind (benchmarks/results/tracking.md).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from .face import Face
from .head_pose import HeadPose

# Chosen by `python benchmarks/tracking.py --tune` (see benchmarks/results/tracking.md).
# Cutoffs in Hz; beta in Hz per face size per second (the face size: sqrt of box area).
MIN_CUTOFF = 0.1
BETA = 30.0
D_CUTOFF = 2.0
# Face sizes the points move per radian of head turn (the pose is filtered in them).
POSE_LEVER = 0.5


@dataclass
class OneEuroFilter:
    """Filters an array signal sampled at ``rate`` Hz (cutoffs in Hz, ``beta`` in Hz per
    signal unit per second)."""

    rate: float = 30.0
    min_cutoff: float = MIN_CUTOFF
    beta: float = BETA
    d_cutoff: float = D_CUTOFF
    _value: np.ndarray | None = field(default=None, repr=False)
    _derivative: np.ndarray | None = field(default=None, repr=False)

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, rate: float) -> np.ndarray | float:
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau * rate)

    def __call__(self, value: np.ndarray) -> np.ndarray:
        value = np.asarray(value, dtype=np.float64)
        if self._value is None:
            self._value, self._derivative = value.copy(), np.zeros_like(value)
            return value.copy()
        derivative = (value - self._value) * self.rate
        a_d = self._alpha(self.d_cutoff, self.rate)
        self._derivative = a_d * derivative + (1 - a_d) * self._derivative
        cutoff = self.min_cutoff + self.beta * np.abs(self._derivative)
        a = self._alpha(cutoff, self.rate)
        self._value = a * value + (1 - a) * self._value
        return self._value.copy()


@dataclass
class _Track:
    centre: np.ndarray  # last raw box centre, to match the next frame's faces
    origin: np.ndarray  # fixed reference centre and size: box jitter must not pass
    size: float  # through the normalisation into the filter
    filter: OneEuroFilter
    # The head pose's rotation, filtered as a 3x3 array (times POSE_LEVER: a turn of one
    # radian moves the points about half a face size, the unit the points are filtered
    # in) and made a rotation again.
    pose_filter: OneEuroFilter


@dataclass
class FaceSmoother:
    """Matches faces frame to frame by box centre and filters each face's landmarks (2D
    and 3D) together with its box, so the drawn box moves with the points.

    Coordinates are divided by the face size before filtering, so the same settings suit
    small and large faces. Returns new Face objects; the input faces are left as they are.
    """

    rate: float = 30.0
    min_cutoff: float = MIN_CUTOFF
    beta: float = BETA
    d_cutoff: float = D_CUTOFF
    max_jump: float = 0.5  # of the face size; farther means a new face
    _tracks: list[_Track] = field(default_factory=list, repr=False)

    def reset(self) -> None:
        """Forget every track (a cut in the video)."""
        self._tracks = []

    def __call__(self, faces: list[Face]) -> list[Face]:
        tracks, free, out = [], list(self._tracks), []
        for face in faces:
            centre = (face.bbox[:2] + face.bbox[2:4]) / 2
            size = float(np.sqrt(max(np.prod(face.bbox[2:4] - face.bbox[:2]), 1.0)))
            track = min(free, key=lambda t: np.linalg.norm(t.centre - centre), default=None)
            if track is None or np.linalg.norm(track.centre - centre) > self.max_jump * size:
                track = _Track(centre, centre, size, self._new_filter(), self._new_filter())
            else:
                free.remove(track)
            track.centre = centre
            out.append(self._smooth(face, track))
            tracks.append(track)
        self._tracks = tracks
        return out

    def _new_filter(self) -> OneEuroFilter:
        return OneEuroFilter(self.rate, self.min_cutoff, self.beta, self.d_cutoff)

    @staticmethod
    def _smooth(face: Face, track: _Track) -> Face:
        points = face.landmarks_3d if face.landmarks_3d is not None else face.landmarks
        dims = points.shape[1]
        corners = np.zeros((2, dims))
        corners[:, :2] = np.reshape(face.bbox[:4], (2, 2))
        origin = np.zeros(dims)
        origin[:2] = track.origin
        signal = np.vstack([points, corners])
        smoothed = track.filter((signal - origin) / track.size) * track.size + origin
        points, corners = smoothed[:-2], smoothed[-2:, :2]
        pose = face.pose
        if pose is not None:
            filtered = track.pose_filter(pose.rotation * POSE_LEVER) / POSE_LEVER
            pose = HeadPose.from_rotation(filtered)
        return dataclasses.replace(
            face,
            pose=pose,
            bbox=np.concatenate([corners.ravel(), np.asarray(face.bbox[4:], np.float64)]),
            landmarks=points[:, :2].copy(),
            landmarks_3d=points.copy() if face.landmarks_3d is not None else None,
        )
