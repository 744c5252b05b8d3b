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
        data = {
            "bbox": [round(float(v), 2) for v in self.bbox],
            "score": round(float(self.score), 4),
            "presence": None if self.presence is None else round(float(self.presence), 4),
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
            "landmark_scores": [round(float(s), 4) for s in self.landmark_scores],
        }
        if self.landmarks_3d is not None:
            data["landmarks_3d"] = [[round(float(v), 2) for v in p] for p in self.landmarks_3d]
        return data


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
