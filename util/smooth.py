"""Temporal smoothing of landmarks on video: a One Euro filter per tracked face.

One Euro (Casiry et al., CHI 2012) smooths strongly when points are still and little
when they move fast, so it removes jitter without lagging behind motion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class OneEuroFilter:
    """Filters an array signal sampled at ``rate`` Hz."""

    rate: float = 30.0
    min_cutoff: float = 1.0
    beta: float = 0.05
    derivative_cutoff: float = 1.0
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
            return value
        derivative = (value - self._value) * self.rate
        a_d = self._alpha(self.derivative_cutoff, self.rate)
        self._derivative = a_d * derivative + (1 - a_d) * self._derivative
        cutoff = self.min_cutoff + self.beta * np.abs(self._derivative)
        a = self._alpha(cutoff, self.rate)
        self._value = a * value + (1 - a) * self._value
        return self._value.copy()


@dataclass
class FaceSmoother:
    """Matches faces frame to frame by box centre and filters each track's points.

    Points are normalised by the face size before filtering, so the same settings
    suit small and large faces.
    """

    rate: float = 30.0
    max_jump: float = 0.5  # of the face size; farther means a new face
    # (last box centre, reference centre, reference size, filter) per track
    _tracks: list[tuple[np.ndarray, np.ndarray, float, OneEuroFilter]] = field(default_factory=list)

    def reset(self) -> None:
        self._tracks = []

    def __call__(self, faces: list) -> list:
        tracks = []
        free = list(self._tracks)
        for face in faces:
            centre = (face.bbox[:2] + face.bbox[2:4]) / 2
            size = float(np.sqrt(max(np.prod(face.bbox[2:4] - face.bbox[:2]), 1.0)))
            match = min(free, key=lambda t: np.linalg.norm(t[0] - centre), default=None)
            if match is None or np.linalg.norm(match[0] - centre) > self.max_jump * size:
                match = (centre, centre, size, OneEuroFilter(self.rate))
            else:
                free.remove(match)
            _, ref_centre, ref_size, filt = match
            # A fixed reference per track: box jitter must not pass through the filter.
            points = face.landmarks_3d if face.landmarks_3d is not None else face.landmarks
            origin = np.append(ref_centre, 0.0)[: points.shape[1]]
            smoothed = filt((points - origin) / ref_size) * ref_size + origin
            face.landmarks = smoothed[:, :2]
            if face.landmarks_3d is not None:
                face.landmarks_3d = smoothed
            tracks.append((centre, ref_centre, ref_size, filt))
        self._tracks = tracks
        return faces
