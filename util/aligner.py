"""The Python API: ``FaceAligner`` runs detect -> crop -> heatmaps -> decode -> depth.

With ``active_3d`` a second landmark model, in the 3D convention (3DFAN-4's: the
projections of the 3D points, the far jaw seen through the cheek), gives the x, y of
``landmarks_3d`` and the depth stage its z; ``landmarks`` stay the 2D model's
(300-W's convention: the jaw on the visible outline).

    from face_alignment import FaceAligner
    aligner = FaceAligner(active_3d=True)
    for face in aligner.align(image_rgb):
        print(face.bbox, face.landmarks, face.landmarks_3d)

Importing this module loads nothing; models are loaded when an aligner is made.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from . import crop_policy
from .crop_policy import RECROP_IOU, SAME_FACE_IOU, better_readings, is_upright, same_reading
from .detect import Candidate, FaceDetector, default_detector_path
from .detection_search import DetectionSearch
from .face import Face, StageTimes
from .face_frame import face_roll
from .io import InputError, expand_inputs, read_image
from .landmark_stage import (
    ORIGINAL_FAN_SPEC,
    FaceCrop,
    PresenceGate,
    load_landmark_model,
    load_mirror_model,
)
from .paths import MODELS_DIR
from .prefetch import prefetched
from .profile_rescue import ProfileRescue
from .runtime import model_for_precision, resolve_runtime
from .stage_3d import Stage3D

# Running modes, as MediaPipe's: the default 2D model of each. Video takes the accurate
# one too: fan2d_fast runs 90 fps against its 77 on 2 threads, one frame at a time, and
# 131 against 104 with two frames in flight (all over twice a
# camera's rate), but on 20 tracked clips (benchmarks/tracking.py --faces 20) it erred
# more (4.33 against 4.17 % NME moving, 4.23 against 4.08 still) and jittered more
# (0.366 against 0.337 %). --model-2d models/fan2d_fast.int8.onnx picks it.
DEFAULT_MODELS_2D = {
    "image": MODELS_DIR / "fan2d_compact.onnx",
    "video": MODELS_DIR / "fan2d_compact.onnx",
}
RUNNING_MODES = tuple(DEFAULT_MODELS_2D)
DEFAULT_MODEL_2D = DEFAULT_MODELS_2D["image"]
DEFAULT_MODEL_DEPTH = MODELS_DIR / "depth_compact.onnx"
# Images read and detected ahead of the landmark model in a folder (iter_paths): two
# keep the background thread busy while the model runs, and hold two decoded images.
PREFETCH_IMAGES = 2


def default_model_2d(running_mode: str) -> Path:
    """The 2D model a running mode loads by default; the image one when the video one is
    not there (a trimmed install)."""
    if running_mode not in DEFAULT_MODELS_2D:
        raise ValueError(f"unknown running mode {running_mode!r} ({' or '.join(RUNNING_MODES)})")
    path = DEFAULT_MODELS_2D[running_mode]
    return path if path.is_file() else DEFAULT_MODEL_2D


class FaceAligner:
    """Finds every face and its 68 landmarks, in 2D or (``active_3d``) 3D."""

    def __init__(
        self,
        model_2d: str | os.PathLike | None = None,
        model_depth: str | os.PathLike | None = None,
        detector_model: str | os.PathLike | None = None,
        model_3d: str | os.PathLike | None = None,
        active_3d: bool = False,
        runtime: str = "onnxruntime",
        env_id: int = -1,
        threads: int = 0,
        min_score: float | None = None,
        flip: bool | None = None,
        any_roll: bool = True,
        max_pixels: int | None = None,
        precision: str = "int8",
        recrop_iou: float = RECROP_IOU,
        running_mode: str = "image",
    ) -> None:
        """``running_mode`` "image" (stills) or "video" (frames of one stream, with
        util.tracker.FaceTracker) picks the defaults: the 2D model when ``model_2d`` is
        not given (DEFAULT_MODELS_2D: the accurate one for both, as measured) and
        ``flip`` when it is None (for images the mirror policy below, for video off,
        where mirror views would halve the frame rate).

        ``flip`` True averages each face with its mirror image: more accurate, twice the
        landmark cost. None for images (``--flip auto``) averages two views at less
        cost: a face the policy crops again near its first box (crop_policy.
        probe_can_stand_in) keeps its first crop's unmirrored reading (the probe, which
        decided the new crop) and adds its new crop's mirror view; the others' mirror
        view is read by the cheaper network the 2D model's spec names (``mirror_model``:
        models/fan2d_fast for the shipped one), when it is there, and their presence is
        the mean of both views'. docs/experiments.md has what each costs and saves. False reads
        one view per crop.

        ``any_roll`` looks for faces in the image turned by each quarter turn too (four
        detector passes), so faces at any in-plane angle are found. ``max_pixels``:
        larger image files are refused when read (default util.io.MAX_PIXELS).
        ``precision``: the default models' int8 versions when they are there ("int8"),
        or the fp32 files ("fp32"); model paths given are used as given.

        ``active_3d``: x, y from ``model_3d`` (default models/fan3d_compact.onnx; the
        original 3DFAN-4.onnx loads too), z from the shape prior fitted to them, or from
        the depth network ``model_depth`` when one is given (FAN's 71-channel contract).

        ``recrop_iou``: when the box the landmarks imply (placed as the detector would
        place it) overlaps the detector's box less than this, the face is cropped again
        from the landmarks' box (0: never; util.crop_policy.RECROP_IOU says why 0.85).

        ``min_score`` None takes the detection threshold the 2D model's spec gives for
        use with its presence check (lower than the detector's own: the check drops what
        is not a face), or the detector's own for models without presence output.
        """
        default_model_2d(running_mode)  # an unknown mode fails here, model given or not
        self.running_mode = running_mode
        self.flip = (running_mode == "image") if flip is None else flip
        # --flip auto: a re-cropped face's probe stands in for its new crop's unmirrored
        # view, and the mirror model (below) reads the others' mirror views.
        self.flip_auto = flip is None and running_mode == "image"
        self.recrop_iou = recrop_iou
        self.max_pixels = max_pixels
        self.runtime = resolve_runtime(runtime)
        self.times = StageTimes()
        common = {"runtime": self.runtime, "env_id": env_id, "threads": threads}
        if model_2d is None:
            model_2d = model_for_precision(default_model_2d(running_mode), precision, self.runtime)
        # landmarks (with the presence check)
        self.landmark_model = load_landmark_model(
            model_2d, default_spec=ORIGINAL_FAN_SPEC, expected_kind="fan2d", **common
        )
        self.mirror_model = (
            load_mirror_model(self.landmark_model, **common) if self.flip_auto else None
        )
        # detect: the threshold the 2D model's presence check was chosen with
        if min_score is None and self.landmark_model.presence_threshold is not None:
            min_score = self.landmark_model.facts.detector_min_score
        self.detector = FaceDetector(
            detector_model or default_detector_path(), min_score=min_score, **common
        )
        self.search = DetectionSearch(self.detector, any_roll, self.times)
        # The last pass when nothing is found (profiles): only with a presence check,
        # which has the last word on what it brings.
        self.profile_rescue = (
            ProfileRescue(self.detector, self.landmark_model)
            if self.landmark_model.has_presence
            else None
        )
        # 3D and pose
        self.stage_3d = (
            Stage3D.load(model_3d, model_depth, precision, self.times, **common)
            if active_3d
            else None
        )
        # Median heatmap peak below which a followed face counts as lost (video).
        self.follow_min_score = self.landmark_model.facts.follow_min_score

    @property
    def flip_mode(self) -> str:
        """The ``--flip`` this aligner reads with: "auto" (the mirror policy), "on", "off"."""
        return "auto" if self.flip_auto else ("on" if self.flip else "off")

    @property
    def quarter_turns(self) -> tuple[int, ...]:
        """The quarter turns the detector looks at the image in."""
        return self.search.quarter_turns

    def sources(self) -> dict[str, str]:
        """What each stage runs: model files, or the method without one."""
        out = {
            "detector": str(self.detector.model.path),
            "2D model": str(self.landmark_model.model.path),
        }
        if self.mirror_model is not None:  # --flip auto
            out["mirror views"] = str(self.mirror_model.model.path)
        return out | (self.stage_3d.sources() if self.stage_3d else {})

    # -- the pipeline -------------------------------------------------------------------

    def align(
        self,
        image: np.ndarray | str | os.PathLike,
        keep_heatmaps: bool = False,
        bboxes: list[np.ndarray] | None = None,
        check_presence: bool = True,
    ) -> list[Face]:
        """Every face in a uint8 RGB image array, or an image file (read with
        util.io.read_image); ``bboxes`` skips detection. ``check_presence`` False
        reads every given box, in order (FAN's contract for given boxes), whatever the
        presence output says of it.

        Each face's crop is turned upright by the roll of the detector's eye keypoints.
        With a presence output, detections it does not take for a face are dropped.
        When nothing is left (or nothing was found), the detector looks again
        (util.detection_search): zoomed out, then in the image turned by each quarter
        turn, then the profile pass (util.profile_rescue).
        """
        if isinstance(image, str | os.PathLike):
            image = read_image(image, self.max_pixels)
        image_rgb = _check_image(image)
        if bboxes is not None:
            # FAN's boxes may carry the detector's score as a fifth value: kept.
            given = [
                Candidate(np.asarray(b[:4], np.float64), float(b[4]) if len(b) > 4 else 1.0)
                for b in bboxes
            ]
            return self.read_faces(image_rgb, given, keep_heatmaps, check_presence=check_presence)
        return self.align_found(image_rgb, self.detect_first(image_rgb), keep_heatmaps)

    def detect_first(self, image_rgb: np.ndarray) -> list[Candidate]:
        """The first detector pass, which finds the faces of most photos; ``iter_paths``
        runs it ahead of the landmark model. The later passes depend on what the model
        accepts (``align_found``)."""
        return self.search.first(_check_image(image_rgb))

    def align_found(
        self, image_rgb: np.ndarray, first: list[Candidate], keep_heatmaps: bool = False
    ) -> list[Face]:
        """Faces from the first pass's detections ``first``, else from the next passes.

        A face that an upright pass finds but that stands turned past UPRIGHT_DEGREES
        sends the search on to the turned passes at the same zoom, and their faces join
        the upright pass's (of two readings of one face, the one the model reads
        better stays): BlazeFace's keypoints are unreliable that far from upright, so
        the crop may be a quarter turn off, and a photo with one turned face may hold
        more that the upright pass missed."""
        passes = self.search.passes()
        # Only for models with a presence output: the readings are compared by it, as
        # measured; FAN files without it (and the tests' random models, whose rolls are
        # noise) keep the previous search.
        turned_passes = {
            canvas: turns
            for canvas, turns in passes
            if turns != (0,) and self.landmark_model.has_presence
        }
        for k, (canvas, turns) in enumerate(passes):
            found = first if k == 0 else self.search.run(image_rgb, (canvas, turns))
            faces = self.read_faces(image_rgb, found, keep_heatmaps)
            if turns == (0,) and canvas in turned_passes and not all(map(is_upright, faces)):
                more = self.search.run(image_rgb, (canvas, turned_passes[canvas]))
                # A turned pass that agrees with a reading we have would crop the same:
                # it confirms that reading (which then replaces worse-read faces on
                # the same spot), and only the others go through the model (faces
                # near 45 deg paid twice).
                # Same crop: the roll within ROLL_RECROP_DEGREES and the boxes as close
                # as recrop_iou asks of a box and its landmarks (an upside-down face's
                # upright-pass box can sit 100 px off while its roll agrees).
                iou = max(self.recrop_iou, SAME_FACE_IOU)
                confirmed = [(f, d.bbox) for d in more for f in faces if same_reading(d, f, iou)]
                more = [d for d in more if not any(same_reading(d, f, iou) for f in faces)]
                read = self.read_faces(image_rgb, more, keep_heatmaps)
                faces = better_readings(faces, confirmed + [(f, f.bbox) for f in read])
            if faces:
                return faces
        if self.profile_rescue is None:
            return []
        start = time.perf_counter()
        rescued = self.profile_rescue(image_rgb)
        self.times.add("detect", time.perf_counter() - start)
        # Read where the rescue placed them: the 2D landmarks of a profile imply a box
        # and roll that crop it worse (measured on the AFLW2000-3D dev faces).
        return self.read_faces(
            image_rgb, rescued, keep_heatmaps, upside_down_check=False, recrop=False
        )

    def read_faces(
        self,
        image_rgb: np.ndarray,
        candidates: list[Candidate],
        keep_heatmaps: bool = False,
        upside_down_check: bool = True,
        check_presence: bool = True,
        recrop: bool = True,
    ) -> list[Face]:
        """crop -> landmarks -> presence -> decode (-> 3D): the faces the model accepts
        among ``candidates``.

        Each crop is read once unmirrored (the probe), and the probe decides whether the
        face is cropped again (util.crop_policy); only then do the mirror views run, of
        the crop each face ends with. Measured on 60 val photos: a third of the faces
        are cropped again, and reading their first crop's mirror view too cost a tenth
        of the landmark step."""
        if not candidates:
            return []
        model = self.landmark_model
        start = time.perf_counter()
        crops = [model.crop(image_rgb, c.bbox, c.roll) for c in candidates]
        if upside_down_check and len(self.quarter_turns) > 1:
            crops, probes = crop_policy.upright_or_upside_down(model, image_rgb, candidates, crops)
        else:
            probes = model.run_crops(crops)
        gate = PresenceGate(model.presence_threshold if check_presence else None)

        # (candidate, crop it ends with, box of that crop, the probe's reading of that
        # crop decoded, or None when the face was cropped again)
        ends = []
        probe_points = {}  # of the faces cropped again, when their probe stands in
        for candidate, crop, probe in zip(candidates, crops, probes, strict=True):
            if gate.rejects(probe[1]):
                continue
            points, scores = model.landmarks(probe[0], crop)
            again = (
                crop_policy.recrop_place(
                    points, candidate, crop, self.detector.box_stats, self.recrop_iou
                )
                if recrop
                else None
            )
            if again is not None:
                box, roll = again
                if self.flip_auto and crop_policy.probe_can_stand_in(candidate.bbox, box):
                    probe_points[len(ends)] = (points, scores)
                ends.append((candidate, model.crop(image_rgb, box, roll), box, None))
            else:
                ends.append((candidate, crop, candidate.bbox, (probe, points, scores)))
        # Read again: the new crops (with flip, both views; under --flip auto, near the
        # first crop, the mirror view only, the probe standing in for the other), and
        # with flip the mirror view of the others (by the mirror model when
        # there is one); without flip the others' probe is their reading.
        again = [i for i, end in enumerate(ends) if end[3] is None]
        mirror = [i for i, end in enumerate(ends) if end[3] is not None] if self.flip else []
        reads: dict[int, tuple[np.ndarray, float | None]] = {}
        # the mirror model's reading: (points, scores, presence)
        second: dict[int, tuple[np.ndarray, np.ndarray, float | None]] = {}
        if mirror and self.mirror_model is not None:
            other = self.mirror_model
            read = other.mirror_views([ends[i][1] for i in mirror])
            second = {
                i: (*other.landmarks(views, ends[i][1]), presence)
                for i, (views, presence) in zip(mirror, read, strict=True)
            }
        elif mirror:
            probed = [ends[i][3][0] for i in mirror]
            mirrored = model.with_mirror_views([ends[i][1] for i in mirror], probed)
            reads |= dict(zip(mirror, mirrored, strict=True))
        stood_in = [i for i in again if i in probe_points]
        again = [i for i in again if i not in probe_points]
        if stood_in:
            read = model.mirror_views([ends[i][1] for i in stood_in])
            reads |= dict(zip(stood_in, read, strict=True))
        if again:
            read = model.run_crops([ends[i][1] for i in again], flip=self.flip)
            reads |= dict(zip(again, read, strict=True))
        faces: list[Face] = []
        face_crops: list[FaceCrop] = []
        crop_boxes: list[np.ndarray] = []
        for i, (candidate, crop, box, first) in enumerate(ends):
            if i in reads:
                views, presence = reads[i]
                # The crop a face ends with has the last word: the threshold was chosen
                # on the presence faces end with (training/choose_presence.py), and a
                # face reported below it broke the contract (the coffee cup's 0.44).
                if gate.rejects(presence):
                    continue
                points, scores = model.landmarks(views, crop)
                if i in probe_points:  # two views, as flip's, from two crops of the face
                    points = (points + probe_points[i][0]) / 2.0
                    scores = (scores + probe_points[i][1]) / 2.0
            else:  # the probe is the reading, judged and decoded above
                (views, presence), points, scores = first
                if i in second:  # with the mirror model's view, judged on both views
                    other_points, other_scores, other_presence = second[i]
                    if presence is not None and other_presence is not None:
                        presence = (presence + other_presence) / 2.0
                    if gate.rejects(presence):
                        continue
                    points = (points + other_points) / 2.0
                    scores = (scores + other_scores) / 2.0
            faces.append(
                Face(
                    np.asarray(candidate.bbox, dtype=np.float64),
                    float(candidate.score),
                    points,
                    scores,
                    heatmaps=views.mean(axis=0) if keep_heatmaps else None,
                    presence=presence,
                    roll=crop.roll,
                    landmark_crop=(crop.matrix, crop.image.shape[0]),
                )
            )
            face_crops.append(crop)
            crop_boxes.append(box)
        self.times.add("landmarks", time.perf_counter() - start)
        if self.stage_3d is not None:
            self.stage_3d.add(image_rgb, faces, face_crops, crop_boxes, self.flip)
        return faces

    def follow(
        self,
        image_rgb: np.ndarray,
        previous: list[Face],
        rolls: list[float] | None = None,
    ) -> list[Face] | None:
        """Video: align the faces where the previous frame's landmarks were, without the
        detector, each crop turned by the previous landmarks' roll (or ``rolls``, in
        degrees, when the caller has them). None when a face looks lost (low heatmap
        peaks, or no face by the presence output): detect again then."""
        image_rgb = _check_image(image_rgb)
        if rolls is not None and len(rolls) != len(previous):
            raise ValueError(f"{len(rolls)} rolls for {len(previous)} faces")
        stats = self.detector.box_stats
        if not previous or stats is None:
            return None
        candidates = []
        for i, face in enumerate(previous):
            roll = float(np.degrees(face_roll(face.landmarks))) if rolls is None else rolls[i]
            box = crop_policy.upright_box(face.landmarks, roll, stats)
            candidates.append(Candidate(box, face.score, roll))
        # The previous frame's roll is trusted: no upside-down check while following.
        faces = self.read_faces(image_rgb, candidates, upside_down_check=False)
        if len(faces) < len(previous):
            return None
        if any(float(np.median(f.landmark_scores)) < self.follow_min_score for f in faces):
            return None
        return faces

    # -- FAN-library style conveniences -------------------------------------------------

    def get_landmarks_from_image(
        self,
        image: np.ndarray | str | os.PathLike,
        detected_faces: list[np.ndarray] | None = None,
        return_bboxes: bool = False,
        return_landmark_score: bool = False,
    ):
        """Landmarks ((68, 2), or (68, 3) with active_3d) of every face, as FAN does.

        With ``return_bboxes`` / ``return_landmark_score`` returns a tuple
        (landmarks, landmark_scores, bboxes) like the FAN reference library.
        """
        faces = self.align(image, bboxes=detected_faces)
        landmarks = [f.points for f in faces]
        if not (return_bboxes or return_landmark_score):
            return landmarks
        scores = [f.landmark_scores for f in faces] if return_landmark_score else None
        boxes = [np.append(f.bbox, f.score) for f in faces] if return_bboxes else None
        return landmarks, scores, boxes

    def get_landmarks_from_batch(self, images: list[np.ndarray]) -> list[list[np.ndarray]]:
        """Landmarks of every face of each image in a list."""
        return [self.get_landmarks_from_image(image) for image in images]

    def get_landmarks_from_directory(
        self, path: str | os.PathLike, show_progress_bar: bool = True
    ) -> dict[str, list[np.ndarray] | None]:
        """{image path: landmarks of every face, or None if it could not be read}."""
        results: dict[str, list[np.ndarray] | None] = {}
        for image_path, _, faces, error in self.iter_paths([str(path)], show_progress_bar):
            if error:
                warnings.warn(error, stacklevel=2)
            results[str(image_path)] = None if error else [f.points for f in faces]
        return results

    def iter_paths(
        self,
        inputs: list[str],
        show_progress_bar: bool = False,
        keep_heatmaps: bool = False,
        prefetch: int = PREFETCH_IMAGES,
        workers: int = 1,
    ) -> Iterator[tuple[Path, np.ndarray | None, list[Face], str | None]]:
        """(path, image or None, faces, error or None) per image, in the inputs' order;
        bad files do not stop it.

        ``prefetch``: images read (and, with onnxruntime, put through the detector's
        first pass) in a background thread ahead of the landmark model; 0 does all in
        this thread. ``workers`` > 1 (onnxruntime; ``prefetch`` > 0): that many threads
        each take a whole image, read to landmarks, side by side; best with sessions of
        one thread each (``threads=1``), see util.cli.folder_threads. Close the iterator
        (or finish it) to stop the threads.
        """
        from tqdm import tqdm

        paths = expand_inputs(inputs)
        # onnxruntime sessions may run from two threads at once (the fallback passes of
        # one image here, the next image's first pass there); ailia's are not said to.
        detect_ahead = self.runtime == "onnxruntime"

        def read(path: Path) -> tuple[Path, np.ndarray | None, list[Candidate] | None, str | None]:
            try:
                image = read_image(path, self.max_pixels)
            except InputError as exc:
                return path, None, None, str(exc)
            return path, image, self.detect_first(image) if detect_ahead else None, None

        if workers > 1 and detect_ahead and prefetch > 0:

            def whole(path: Path) -> tuple[Path, np.ndarray | None, list[Face], str | None]:
                path, image, first, error = read(path)
                if image is None:
                    return path, None, [], error
                return path, image, self.align_found(image, first, keep_heatmaps), None

            done = prefetched(whole, paths, prefetch, workers)
            bar = tqdm(
                done, total=len(paths), disable=not show_progress_bar or len(paths) < 2, unit="img"
            )
            try:
                yield from bar
            finally:
                bar.close()
                done.close()
            return
        ahead = prefetched(read, paths, prefetch)
        bar = tqdm(
            ahead, total=len(paths), disable=not show_progress_bar or len(paths) < 2, unit="img"
        )
        try:
            for path, image, first, error in bar:
                if image is None:
                    yield path, None, [], error
                    continue
                if first is None:
                    first = self.detect_first(image)
                yield path, image, self.align_found(image, first, keep_heatmaps), None
        finally:
            bar.close()
            ahead.close()


def _check_image(image: np.ndarray) -> np.ndarray:
    """Accept uint8 HxWx3 RGB (or grey HxW) arrays; anything else is a clear error."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or 0 in image.shape[:2]:
        raise InputError(f"image array of shape {image.shape}: expected HxWx3 RGB")
    if image.dtype != np.uint8:
        raise InputError(f"image array of dtype {image.dtype}: expected uint8")
    return np.ascontiguousarray(image[..., :3])
