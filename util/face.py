"""The product's own data types: a found ``Face`` and the per-stage ``StageTimes``.

They sit below every stage (this module imports only numpy and the data-only modules
head_pose and schema), so ``draw``, ``smooth``, the tracker and the aligner can all name
them without importing the aligner.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .aligned_crop import DEFAULT_SIZES, aligned_matrix, warp
from .head_pose import HeadPose
from .schema import face_json


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
    pose: HeadPose | None = None  # with 3D: head pose (util.head_pose)
    # The landmark model's crop: (2x3 image-to-crop matrix, crop side in pixels).
    landmark_crop: tuple[np.ndarray, int] | None = None
    # What the command line wrote of this face's aligned crop (util.schema's "crop").
    crop_info: dict | None = None

    @property
    def points(self) -> np.ndarray:
        """(68, 3) landmarks with depth, else (68, 2): what the FAN-style calls give."""
        return self.landmarks if self.landmarks_3d is None else self.landmarks_3d

    def crop(
        self, image: np.ndarray, template: str = "arcface", size: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(aligned crop, its 2x3 image-to-crop matrix) of this face in ``image`` (the
        image it was found in): ``template`` "arcface", "ffhq" or "square" (the landmark
        model's crop), ``size`` pixels (default 112, 1024, 256). util.aligned_crop
        has the formulas, and paste_back the way back."""
        size = DEFAULT_SIZES[template] if size is None and template in DEFAULT_SIZES else size
        if size is None or int(size) < 1:
            raise ValueError(f"crop size must be a positive number of pixels, not {size!r}")
        matrix = aligned_matrix(self.landmarks, template, int(size), self.landmark_crop)
        return warp(np.asarray(image), matrix, int(size), reflect=template == "ffhq"), matrix

    def to_json(self) -> dict:
        """The face's JSON object (util.schema's face fields)."""
        return face_json(self)


@dataclass
class StageTimes:
    """Wall-clock seconds spent per stage, accumulated over calls (the latest
    STAGE_SAMPLES per stage at most)."""

    seconds: dict[str, list[float]] = field(default_factory=dict)

    def __repr__(self) -> str:
        """Per stage: calls and median milliseconds (not every sample)."""
        parts = [
            f"{stage}: {len(v)} x {1e3 * float(np.median(v)):.2f} ms"
            for stage, v in self.seconds.items()
            if v
        ]
        return f"StageTimes({', '.join(parts)})"

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
