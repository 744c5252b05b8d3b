"""The product's own data types: a found ``Face`` and the per-stage ``StageTimes``.

They sit below every stage (this module imports only numpy), so ``draw``, ``smooth``,
the tracker and the aligner can all name them without importing the aligner.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Face:
    """One face: its detection and its 68 landmarks (original-image pixels)."""

    bbox: np.ndarray  # (4,) x1, y1, x2, y2
    score: float  # detection score
    landmarks: np.ndarray  # (68, 2)
    landmark_scores: np.ndarray  # (68,) heatmap peaks
    # (68, 3): x, y of the 3D-convention model, z zero-mean, larger = closer
    landmarks_3d: np.ndarray | None = None
    heatmaps: np.ndarray | None = None  # (68, 64, 64) when asked for
    presence: float | None = None  # the 2D model's face probability (None: no such output)
    roll: float = 0.0  # degrees the crop was turned to make the face upright

    @property
    def points(self) -> np.ndarray:
        """(68, 3) landmarks with depth, else (68, 2): what the FAN-style calls give."""
        return self.landmarks if self.landmarks_3d is None else self.landmarks_3d

    def to_json(self) -> dict:
        # numpy rounds whole arrays: 68 x 2 Python round() calls were 3 % of a video
        # frame's CPU (benchmarks.cpu_profile video).
        data = {
            "bbox": _rounded(self.bbox, 2),
            "score": round(float(self.score), 4),
            "presence": None if self.presence is None else round(float(self.presence), 4),
            "landmarks": _rounded(self.landmarks, 2),
            "landmark_scores": _rounded(self.landmark_scores, 4),
        }
        if self.landmarks_3d is not None:
            data["landmarks_3d"] = _rounded(self.landmarks_3d, 2)
        return data


def _rounded(values: np.ndarray, decimals: int) -> list:
    """Nested lists of Python floats rounded to ``decimals``, as JSON writes them."""
    return np.round(np.asarray(values, dtype=np.float64), decimals).tolist()


@dataclass
class StageTimes:
    """Wall-clock seconds spent per stage, accumulated over calls (the latest
    STAGE_SAMPLES per stage at most)."""

    seconds: dict[str, list[float]] = field(default_factory=dict)

    def add(self, stage: str, elapsed: float) -> None:
        values = self.seconds.setdefault(stage, [])
        values.append(elapsed)
        if len(values) > STAGE_SAMPLES:
            # Every call of a folder or video run lands here: unbounded, the lists grew
            # by about 100 bytes per image for good (1 GB over 10 million images).
            # Halving keeps the cut rare (once per STAGE_SAMPLES / 2 calls).
            del values[: len(values) - STAGE_SAMPLES // 2]


# Samples StageTimes keeps per stage: plenty for medians (-b, benchmarks), bounded memory.
STAGE_SAMPLES = 100_000
