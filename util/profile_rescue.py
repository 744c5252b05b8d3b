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

from .crop_policy import SAME_FACE_IOU
from .detect import Candidate, Detection, FaceDetector, box_iou
from .face_frame import angle_difference

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
    # The passes: the image as it is and zoomed out (canvas 1.5), each also mirrored.
    # BlazeFace's box on a profile is lopsided, so the mirrored image's box, mirrored
    # back, and the zoomed-out one often crop it better: on the 18 AFLW2000-3D dev faces
    # the earlier passes missed, one pass found none of them, these four 8
    # (/tmp probe, read as the aligner reads them).
    canvases: tuple[float, ...] = (1.0, 1.5)
    mirrored: bool = True


def candidate_rolls(detection: Detection) -> list[float]:
    """The rolls to read a detection at: its eye line's, its eyes-to-mouth line's, and
    the upright of the image turn it was found in."""
    rolls: list[float] = []
    for roll in (detection.roll, detection.mouth_roll, 90.0 * detection.quarter_turns):
        if all(abs(angle_difference(roll, r)) > SAME_ROLL_DEGREES for r in rolls):
            rolls.append(roll)
    return rolls


class ProfileRescue:
    """``__call__(image)``: the Candidates to read, each at its best roll (the landmark
    model's reading quality decides), best first."""

    def __init__(self, detector: FaceDetector, landmark_model, settings=None) -> None:  # noqa: ANN001
        self.detector = detector
        self.model = landmark_model
        self.settings = settings or ProfileRescueSettings()

    def _detections(self, image_rgb: np.ndarray) -> list[tuple[np.ndarray, float, list[float]]]:
        """(box, score, rolls to read it at) of every pass, in the image's frame."""
        width = image_rgb.shape[1]
        views = [(image_rgb, False)]
        if self.settings.mirrored:
            views.append((np.ascontiguousarray(image_rgb[:, ::-1]), True))
        found = []
        for view, mirrored in views:
            for canvas in self.settings.canvases:
                for d in self.detector.detect(
                    view, (0,), canvas=canvas, min_score=self.settings.min_score
                )[: self.settings.candidates]:
                    rolls = candidate_rolls(d)
                    if not mirrored:
                        found.append((d.bbox, d.score, rolls))
                        continue
                    # Mirrored back: x -> width - 1 - x, and a roll turns the other way.
                    x1, y1, x2, y2 = d.bbox
                    box = np.array([width - 1 - x2, y1, width - 1 - x1, y2])
                    found.append((box, d.score, [-r for r in rolls]))
        return found

    def __call__(self, image_rgb: np.ndarray) -> list[Candidate]:
        found = self._detections(image_rgb)
        crops = [self.model.crop(image_rgb, box, r) for box, _, rolls in found for r in rolls]
        reads = iter(self.model.run_crops(crops, flip=False)) if crops else iter(())
        read = []  # (quality, candidate) of each detection at its best roll
        for box, score, rolls in found:
            quality = [self.model.reading_quality(*next(reads)) for _ in rolls]
            k = int(np.argmax(quality))
            read.append((quality[k], Candidate(box, score, rolls[k])))
        # One candidate per spot (the passes find one face several times): the best read.
        chosen: list[tuple[float, Candidate]] = []
        for quality, candidate in sorted(read, key=lambda t: -t[0]):
            if all(box_iou(c.bbox, candidate.bbox[None])[0] <= SAME_FACE_IOU for _, c in chosen):
                chosen.append((quality, candidate))
        return [c for _, c in chosen[: self.settings.candidates]]
