"""Video: landmarks frame after frame, like MediaPipe's VIDEO running mode.

    from .tracker import FaceTracker
    tracker = FaceTracker(aligner, redetect=10, smooth=True, rate=30.0)
    for frame_rgb in frames:
        faces = tracker.process(frame_rgb)
    for frame_rgb, faces in tracker.process_frames(frames, workers=2):  # a video file
        ...

Each face is followed from the previous frame's landmarks (``FaceAligner.follow``), with
its roll: faster and steadier than detecting it again. The detector runs on the first
frame, then every ``redetect`` frames to pick up new faces, and at once when a face looks
lost. With ``smooth``, a One Euro filter per face takes out the remaining jitter.

``process_frames`` with two workers keeps two frames in flight, each followed from the
last two frames done (two and three back, their points averaged): a landmark call on
one onnxruntime thread per frame, two at a time, gave 1.5-1.8x the calls per second of
one call on two threads (the compact models are too small to split well), at the cost
of a staler crop. For video files, whose frames are all there; a camera's come one by
one. Followed from the last frame done alone, even and odd frames formed two chains
that settled apart (still jitter 0.458 against 0.421 % one frame at a time, benchmarks/tracking.py
--tune); from the mean of the last two frames' points, 0.388 (0.298 against 0.337 on
20 clips), the moving error unchanged (3.58 against 3.56 %; 4.16 against 4.17).
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from .aligner import FaceAligner
from .crop import box_from_landmarks
from .detect import box_iou
from .face import Face
from .face_frame import face_roll
from .model_facts import BOX_STATS_KEY
from .runtime import ModelError
from .smooth import FaceSmoother

DEFAULT_REDETECT = 10  # frames between detections: the command line's --redetect default


def roll_degrees(points: np.ndarray) -> float:
    """In-plane angle of the eye line (right-eye centre, points 36-41, to the left-eye
    centre, 42-47), in degrees, image y down: positive when the face's left eye (on the
    image's right) is lower."""
    return float(np.degrees(face_roll(points)))


class FaceTracker:
    """Faces of consecutive video frames: follow the faces from their landmarks, detect
    new ones every ``redetect`` frames, optionally smooth them over time."""

    def __init__(
        self,
        aligner: FaceAligner,
        redetect: int = DEFAULT_REDETECT,
        smooth: bool = False,
        rate: float = 30.0,
        smoother: FaceSmoother | None = None,
    ) -> None:
        """``redetect`` = 1 detects on every frame. ``rate`` is the frame rate (Hz) the
        smoother assumes; ``smoother`` replaces the default one (implies ``smooth``).

        A ModelError when the detector's spec lacks its box statistics: following a
        face places the box the detector would give, and without them the tracker would
        quietly detect on every frame instead."""
        detector = aligner.detector
        if detector.box_stats is None:
            raise ModelError(
                f"{detector.model.path}: no {BOX_STATS_KEY} in its spec, which video "
                "following needs (python -m training.detector_box_stats --detector PATH)"
            )
        self.aligner = aligner
        self.redetect = max(1, int(redetect))
        self.smoother = smoother or (FaceSmoother(rate=rate) if smooth else None)
        self.frames = 0  # frames processed
        self.detections = 0  # frames on which the detector ran
        self.raw: list[Face] = []  # the last frame's faces before smoothing
        self._since_detect = 0
        self._planned = 0  # frames handed out (process_frames: ahead of self.frames)
        self._older: list[Face] = []  # the faces of the frame before self.raw

    def process(self, frame_rgb: np.ndarray) -> list[Face]:
        """The faces of the next frame (uint8 RGB), smoothed when asked for."""
        index, previous, detect = self._plan()
        return self._commit(index, *self._step(frame_rgb, previous, detect))

    def process_frames(
        self, frames: Iterable[np.ndarray], workers: int = 1
    ) -> Iterator[tuple[np.ndarray, list[Face]]]:
        """(frame, its faces) for each frame, in order. ``workers`` > 1 keeps that many
        frames in flight in threads, each followed from the faces of the last two frames
        done, their points averaged (the aligner's sessions should then have one thread
        each). Stopping early waits for the frames under way."""
        if workers <= 1:
            for frame in frames:
                yield frame, self.process(frame)
            return
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="track")
        pending: deque[tuple[np.ndarray, int, Future]] = deque()
        try:
            for frame in frames:
                index, previous, detect = self._plan()
                previous = _coupled(previous, self._older)
                pending.append((frame, index, pool.submit(self._step, frame, previous, detect)))
                if len(pending) >= workers:
                    done, index, future = pending.popleft()
                    yield done, self._commit(index, *future.result())
            while pending:
                done, index, future = pending.popleft()
                yield done, self._commit(index, *future.result())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _plan(self) -> tuple[int, list[Face], bool]:
        """(the frame's number, the faces to follow, whether the detector is due) for
        the next frame. The detection schedule advances here, so that frames in flight
        do not all detect."""
        index = self._planned
        self._planned += 1
        due = self._since_detect >= self.redetect
        self._since_detect = 1 if due else self._since_detect + 1
        return index, self.raw, due

    def _step(
        self, frame_rgb: np.ndarray, previous: list[Face], detect: bool
    ) -> tuple[list[Face], bool, bool]:
        """(faces of the frame, True when it fell back to detecting them all, True when
        the detector looked for new ones). Changes no state: frames run side by side."""
        faces = None
        if previous:
            rolls = [roll_degrees(face.landmarks) for face in previous]
            faces = self.aligner.follow(frame_rgb, previous, rolls=rolls)
        if faces is None:
            return self.aligner.align(frame_rgb), True, False
        faces = _distinct([self._box_on_points(face) for face in faces])
        if detect:
            faces += self._new_faces(frame_rgb, faces)
        return faces, False, detect

    def _commit(
        self, index: int, faces: list[Face], detected_all: bool, detected_new: bool
    ) -> list[Face]:
        """Record frame ``index``'s faces, in frame order: the next plans follow them."""
        self.detections += detected_all or detected_new
        if detected_all:  # the schedule counts from this frame (frames planned since)
            self._since_detect = self._planned - index
        self.frames += 1
        self._older, self.raw = self.raw, faces
        return self.smoother(faces) if self.smoother is not None else faces

    def reset(self) -> None:
        """Forget every face (a cut in the video): the next frame is detected afresh."""
        self.raw = []
        self._older = []
        self._since_detect = 0
        if self.smoother is not None:
            self.smoother.reset()

    def _new_faces(self, frame_rgb: np.ndarray, followed: list[Face]) -> list[Face]:
        """Faces the detector finds that are not followed yet. A followed face keeps its
        crop from its landmarks: replacing it by the detector's every few frames made
        the points jump (3x the jitter of following alone, benchmarks/tracking.py)."""
        start = time.perf_counter()
        detections = self.aligner.detector.detect(frame_rgb)
        self.aligner.times.add("detect", time.perf_counter() - start)
        new = []
        for detection in detections:
            if any(_same_face(detection.bbox, face.bbox) for face in followed):
                continue
            (face,) = self.aligner.align(frame_rgb, bboxes=[detection.bbox])
            new.append(dataclasses.replace(face, score=float(detection.score)))
        return new

    def _box_on_points(self, face: Face) -> Face:
        """A followed face keeps the box the detector would give for its new landmarks,
        not the crop box made from the previous frame's, which trails a moving face."""
        stats = self.aligner.detector.box_stats
        box = box_from_landmarks(
            face.landmarks, stats["centre_dx"], stats["centre_dy"], stats["size_ratio"]
        )
        return dataclasses.replace(face, bbox=box)


def _coupled(faces: list[Face], older: list[Face]) -> list[Face]:
    """Each face with its landmarks averaged with the same face one frame before, when
    there: frames in flight follow from these, so even and odd frames do not form two
    chains that settle apart."""
    out = []
    for face in faces:
        match = next((o for o in older if _same_face(face.bbox, o.bbox)), None)
        if match is None:
            out.append(face)
        else:
            out.append(dataclasses.replace(face, landmarks=(face.landmarks + match.landmarks) / 2))
    return out


def _distinct(faces: list[Face]) -> list[Face]:
    """Without a face that has come onto another one (two tracks on one face)."""
    kept: list[Face] = []
    for face in faces:
        if not any(_same_face(face.bbox, other.bbox) for other in kept):
            kept.append(face)
    return kept


def _same_face(box: np.ndarray, other: np.ndarray) -> bool:
    """Boxes that overlap (IoU over 0.3) or where one's centre is inside the other."""
    if float(box_iou(np.asarray(box[:4]), np.asarray(other[:4]))[0]) > 0.3:
        return True
    return any(
        a[0] <= (b[0] + b[2]) / 2 <= a[2] and a[1] <= (b[1] + b[3]) / 2 <= a[3]
        for a, b in ((box, other), (other, box))
    )
