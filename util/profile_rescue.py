"""The last detection pass, for photos where every other pass found no face that the
landmark model accepts: mostly profiles.

BlazeFace does fire on most profiles, but its two eye keypoints fall on one side of the
face and their line (the crop's roll) points anywhere: on the AFLW2000-3D dev faces it
missed, -137, -101 and -90 degrees on faces it had found upright. So the crop is
turned wrong and the presence check rejects it. This pass takes the detector's best few
boxes at a lower threshold, reads each at the rolls its keypoints allow (the eyes' line,
the line from the eyes down to the mouth, and upright), and hands the aligner the roll
the model reads best; the presence check still has the last word on every face.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .detect import Candidate, Detection, FaceDetector

# Detector threshold of this pass: BlazeFace scores some profiles 0.2-0.5 (AFLW2000-3D
# dev faces), below the first passes' threshold; the presence check drops non-faces.
# 0.15 found 3 more of the 1000 dev faces but made 2 of the 22 non-face pictures faces
# (training/evaluate.py --wild --parts non-faces); 0.3 makes none.
RESCUE_MIN_SCORE = 0.3
# Boxes read, best score first: a photo where nothing was found rarely holds more.
RESCUE_CANDIDATES = 3
# Rolls closer than this are read once.
SAME_ROLL_DEGREES = 15.0


@dataclass(frozen=True)
class ProfileRescueSettings:
    min_score: float = RESCUE_MIN_SCORE
    candidates: int = RESCUE_CANDIDATES


def candidate_rolls(detection: Detection) -> list[float]:
    """The rolls to read a detection at: its eye line's, its eyes-to-mouth line's, and
    the upright of the image turn it was found in."""
    rolls: list[float] = []
    for roll in (detection.roll, detection.mouth_roll, 90.0 * detection.quarter_turns):
        if all(abs((roll - r + 180.0) % 360.0 - 180.0) > SAME_ROLL_DEGREES for r in rolls):
            rolls.append(roll)
    return rolls


class ProfileRescue:
    """``__call__(image)``: the Candidates to read, each at its best
    roll (the landmark model's reading quality decides)."""

    def __init__(self, detector: FaceDetector, landmark_model, settings=None) -> None:  # noqa: ANN001
        self.detector = detector
        self.model = landmark_model
        self.settings = settings or ProfileRescueSettings()

    def __call__(self, image_rgb: np.ndarray) -> list[Candidate]:
        found = self.detector.detect(image_rgb, (0,), min_score=self.settings.min_score)
        chosen = []
        for detection in found[: self.settings.candidates]:
            rolls = candidate_rolls(detection)
            crops = [self.model.crop(image_rgb, detection.bbox, roll) for roll in rolls]
            reads = self.model.run_crops(crops, flip=False)
            quality = [self.model.reading_quality(*read) for read in reads]
            chosen.append(detection.candidate(rolls[int(np.argmax(quality))]))
        return chosen
