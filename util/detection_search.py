"""The detection search: the detector passes an image gets, in the order they are tried.

Upright first, with the image zoomed out next (faces that fill the frame are missed at
first, or found as small false "faces" inside them), then in the image turned by each
quarter turn (faces lying on their side or upside down). A photo with upright faces
never pays for the later passes. Which pass is needed depends on what the landmark
model accepts, so FaceAligner walks the passes; this stage runs them.
"""

from __future__ import annotations

import time

import numpy as np

from .detect import ALL_QUARTER_TURNS, Candidate, FaceDetector
from .face import StageTimes

# (canvas, quarter turns) of one detector pass: the image shrunk to 1/canvas inside the
# detector's input, and looked at turned by each of these quarter turns.
DetectorPass = tuple[float, tuple[int, ...]]


class DetectionSearch:
    """The detector's passes over an image. ``any_roll``: the quarter-turned passes too."""

    def __init__(self, detector: FaceDetector, any_roll: bool, times: StageTimes) -> None:
        self.detector = detector
        self.quarter_turns = ALL_QUARTER_TURNS if any_roll else (0,)
        self.times = times

    def passes(self) -> list[DetectorPass]:
        """Every pass, in the order they are tried."""
        retry = self.detector.retry_canvas
        canvases = (1.0, retry) if retry is not None and retry > 1 else (1.0,)
        # Upright first, zoomed out next, quarter turns last: in close-ups the turned
        # passes find parts of the face at wrong rolls (measured on close-ups of
        # 300w/val: 12 of 291 missed and 16 % NME when all turns ran at once).
        stages = [(canvas, (0,)) for canvas in canvases]
        if len(self.quarter_turns) > 1:
            turns = tuple(k for k in self.quarter_turns if k % 4)
            stages += [(canvas, turns) for canvas in canvases]
        return stages

    def first(self, image_rgb: np.ndarray) -> list[Candidate]:
        """The first pass (upright, the image as it is), which finds the faces of most
        photos; a folder runs it ahead of the landmark model."""
        return self.run(image_rgb, self.passes()[0])

    def run(self, image_rgb: np.ndarray, detector_pass: DetectorPass) -> list[Candidate]:
        """One pass's detections, each at its eye line's roll."""
        canvas, turns = detector_pass
        start = time.perf_counter()
        found = self.detector.detect(image_rgb, turns, canvas=canvas)
        self.times.add("detect", time.perf_counter() - start)
        return [d.candidate() for d in found]
