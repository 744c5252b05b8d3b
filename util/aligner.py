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

from .crop import box_from_landmarks
from .depth import ORIGINAL_DEPTH_SPEC, DepthModel, ShapeFitDepth
from .detect import ALL_QUARTER_TURNS, FaceDetector, box_iou, default_detector_path
from .face import Face, StageTimes
from .face_frame import face_roll
from .head_pose import HeadPose, pose_fit, spec_pose_frame
from .io import InputError, expand_inputs, read_image
from .landmark_stage import (
    ORIGINAL_FAN3D_SPEC,
    ORIGINAL_FAN_SPEC,
    LandmarkModel,
    load_landmark_model,
)
from .paths import MODELS_DIR
from .prefetch import prefetched
from .profile_rescue import ProfileRescue
from .runtime import load_model, model_for_precision, resolve_runtime
from .shape_prior import ShapePrior

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
DEFAULT_MODEL_3D = MODELS_DIR / "fan3d_compact.onnx"
DEFAULT_MODEL_DEPTH = MODELS_DIR / "depth_compact.onnx"
SHAPE_PRIOR = MODELS_DIR / "shape_prior.npz"
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
        recrop_iou: float = 0.85,
        running_mode: str = "image",
    ) -> None:
        """``running_mode`` "image" (stills) or "video" (frames of one stream, with
        util.tracker.FaceTracker) picks the defaults: the 2D model when ``model_2d`` is
        not given (DEFAULT_MODELS_2D: the accurate one for both, as measured) and
        ``flip`` when it is None (on for images, off for video, where it would halve
        the frame rate).

        ``flip`` averages each face with its mirror image: more accurate, twice the
        landmark cost. ``any_roll`` looks for faces in the image turned by each
        quarter turn too (four detector passes), so faces at any in-plane angle are
        found. ``max_pixels``: larger image files are refused when read (default
        util.io.MAX_PIXELS). ``precision``: the default models' int8 versions when they
        are there ("int8"), or the fp32 files ("fp32"); model paths given are used as
        given.

        ``active_3d``: x, y from ``model_3d`` (default models/fan3d_compact.onnx; the
        original 3DFAN-4.onnx loads too), z from the shape prior fitted to them, or from
        the depth network ``model_depth`` when one is given (FAN's 71-channel contract).

        ``recrop_iou``: when the box the landmarks imply (placed as the detector would
        place it) overlaps the detector's box less than this, the face is cropped again
        from the landmarks' box (0: never). Measured on 120 HELEN close-ups of
        300w/val (evaluate.py --wild --close-ups-only --recrop-iou X): NME 7.37 % never,
        5.98 % at 0.7, 5.73 % at 0.85, 5.72 % at 0.95; the whole photos 3.95, 3.95, 3.93,
        3.91 %.

        ``min_score`` None takes the detection threshold the 2D model's spec gives for
        use with its presence check (lower than the detector's own: the check drops what
        is not a face), or the detector's own for models without presence output.
        """
        default_model_2d(running_mode)  # an unknown mode fails here, model given or not
        self.running_mode = running_mode
        self.flip = (running_mode == "image") if flip is None else flip
        self.recrop_iou = recrop_iou
        self.quarter_turns = ALL_QUARTER_TURNS if any_roll else (0,)
        self.max_pixels = max_pixels
        self.runtime = resolve_runtime(runtime)
        common = {"runtime": self.runtime, "env_id": env_id, "threads": threads}
        if model_2d is None:
            model_2d = model_for_precision(default_model_2d(running_mode), precision, self.runtime)
        self.landmark_model = load_landmark_model(
            model_2d, default_spec=ORIGINAL_FAN_SPEC, expected_kind="fan2d", **common
        )
        if min_score is None and self.landmark_model.presence_threshold is not None:
            min_score = self.landmark_model.model.spec.extra.get("detector_min_score")
        self.detector = FaceDetector(
            detector_model or default_detector_path(), min_score=min_score, **common
        )
        # The last pass when nothing is found (profiles): only with a presence check,
        # which has the last word on what it brings.
        self.profile_rescue = (
            ProfileRescue(self.detector, self.landmark_model)
            if self.landmark_model.has_presence
            else None
        )
        self.landmark_model_3d: LandmarkModel | None = None
        self.depth_model: DepthModel | ShapeFitDepth | None = None
        self.prior: ShapePrior | None = None
        self.pose_frame: np.ndarray | None = None
        if active_3d:
            if model_3d is None and DEFAULT_MODEL_3D.is_file():
                model_3d = model_for_precision(DEFAULT_MODEL_3D, precision, self.runtime)
            if model_3d is not None:
                self.landmark_model_3d = LandmarkModel(
                    load_model(
                        model_3d,
                        default_spec=ORIGINAL_FAN3D_SPEC,
                        expected_kind="fan3d",
                        **common,
                    )
                )
            if model_depth is not None:
                self.depth_model = DepthModel(
                    load_model(
                        model_depth,
                        default_spec=ORIGINAL_DEPTH_SPEC,
                        expected_kind="depth",
                        **common,
                    )
                )
            # The fit's regulariser suits the points' noise: a fact of the 3D model. With
            # a depth network it still gives the head pose.
            prior = self.prior = ShapePrior.load(SHAPE_PRIOR)
            spec_3d = self.landmark_model_3d.model if self.landmark_model_3d else None
            # The 3D model's own frame when its spec has one (its points sit a little
            # differently from the true ones the prior's was measured on).
            own = spec_pose_frame(spec_3d.spec.extra, str(spec_3d.path)) if spec_3d else None
            self.pose_frame = prior.pose_frame if own is None else own
            if self.depth_model is None:
                self.depth_model = ShapeFitDepth.from_spec(
                    prior,
                    spec_3d.spec.extra if spec_3d else {},
                    str(spec_3d.path) if spec_3d else "spec",
                )
        self.times = StageTimes()
        # Median heatmap peak below which a followed face counts as lost (video).
        self.follow_min_score = float(
            self.landmark_model.model.spec.extra.get("follow_min_score", 0.3)
        )

    def sources(self) -> dict[str, str]:
        """What each stage runs: model files, or the method without one."""
        out = {
            "detector": str(self.detector.model.path),
            "2D model": str(self.landmark_model.model.path),
        }
        if self.depth_model is not None:
            model_3d = self.landmark_model_3d
            out["3D model"] = (
                str(model_3d.model.path) if model_3d else "none (the 2D points are used)"
            )
            out["depth"] = (
                self.depth_model.describe()
                if isinstance(self.depth_model, ShapeFitDepth)
                else str(self.depth_model.model.path)
            )
        return out

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
        When nothing is left (or nothing was found), the detector looks again: with the
        image zoomed out (faces that fill the frame are missed at first, or found as
        small false "faces" inside them), then in the image turned by each quarter turn
        (faces lying on their side or upside down). So a photo with upright faces never
        pays for the turned passes, and a sideways face is found only when no upright
        one is.
        """
        if isinstance(image, str | os.PathLike):
            image = read_image(image, self.max_pixels)
        image_rgb = _check_image(image)
        if bboxes is not None:
            # FAN's boxes may carry the detector's score as a fifth value: kept.
            given = [
                (np.asarray(b[:4], dtype=np.float64), float(b[4]) if len(b) > 4 else 1.0, 0.0)
                for b in bboxes
            ]
            return self._align_detections(
                image_rgb, given, keep_heatmaps, check_presence=check_presence
            )
        return self._align_detected(image_rgb, self.detect_first(image_rgb), keep_heatmaps)

    def _detection_stages(self) -> list[tuple[float, tuple[int, ...]]]:
        """(canvas, quarter turns) of each detector pass, in the order they are tried."""
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

    def detect_first(self, image_rgb: np.ndarray) -> list[tuple]:
        """(box, score, roll) of the first detector pass (upright, the image as it is),
        which finds the faces of most photos; ``iter_paths`` runs it ahead of the
        landmark model. The later passes depend on what the model accepts."""
        return self._detect(_check_image(image_rgb), *self._detection_stages()[0])

    def _align_detected(
        self, image_rgb: np.ndarray, first: list[tuple], keep_heatmaps: bool
    ) -> list[Face]:
        """Faces from the first pass's detections ``first``, else from the next passes.

        A face that an upright pass finds but that stands turned past UPRIGHT_DEGREES
        sends the search on to the turned passes at the same zoom, and their faces join
        the upright pass's (of two readings of one face, the one the model reads
        better stays): BlazeFace's keypoints are unreliable that far from upright, so
        the crop may be a quarter turn off, and a photo with one turned face may hold
        more that the upright pass missed."""
        # Only for models with a presence output: the readings are compared by it, as
        # measured; FAN files without it (and the tests' random models, whose rolls are
        # noise) keep the previous search.
        turned_stages = {
            canvas: turns
            for canvas, turns in self._detection_stages()
            if turns != (0,) and self.landmark_model.has_presence
        }
        for k, (canvas, turns) in enumerate(self._detection_stages()):
            found = first if k == 0 else self._detect(image_rgb, canvas, turns)
            faces = self._align_detections(image_rgb, found, keep_heatmaps)
            if turns == (0,) and canvas in turned_stages and not all(map(_upright, faces)):
                more = self._detect(image_rgb, canvas, turned_stages[canvas])
                # A turned pass that agrees with a reading we have would crop the same:
                # it confirms that reading (which then replaces worse-read faces on
                # the same spot), and only the others go through the model (faces
                # near 45 deg paid twice).
                # Same crop: the roll within ROLL_RECROP_DEGREES and the boxes as close
                # as recrop_iou asks of a box and its landmarks (an upside-down face's
                # upright-pass box can sit 100 px off while its roll agrees).
                iou = max(self.recrop_iou, SAME_FACE_IOU)
                confirmed = [(f, d[0]) for d in more for f in faces if _same_reading(d, f, iou)]
                more = [d for d in more if not any(_same_reading(d, f, iou) for f in faces)]
                read = self._align_detections(image_rgb, more, keep_heatmaps)
                faces = _better_readings(faces, confirmed + [(f, f.bbox) for f in read])
            if faces:
                return faces
        if self.profile_rescue is None:
            return []
        start = time.perf_counter()
        rescued = self.profile_rescue(image_rgb)
        self.times.add("detect", time.perf_counter() - start)
        # Read where the rescue placed them: the 2D landmarks of a profile imply a box
        # and roll that crop it worse (measured on the AFLW2000-3D dev faces).
        return self._align_detections(
            image_rgb, rescued, keep_heatmaps, upside_down_check=False, recrop=False
        )

    def _detect(self, image_rgb: np.ndarray, canvas: float, turns: tuple[int, ...]) -> list[tuple]:
        start = time.perf_counter()
        found = self.detector.detect(image_rgb, turns, canvas=canvas)
        self.times.add("detect", time.perf_counter() - start)
        return [(d.bbox, d.score, d.roll) for d in found]

    def _upright_or_upside_down(
        self, image_rgb: np.ndarray, detections: list[tuple], crops: list
    ) -> tuple[list, list]:
        """(crops, their single-view model results). BlazeFace fires on an upside-down
        face as if it were upright (keypoints and all), and upside-down passes outscore
        upright ones on some upright faces, so the landmark model decides: a crop it
        reads less well than the spec's ``upright_read_quality`` (every crop, without
        one) has its half-turned twin read too (no flip), and the better reading stays;
        without flip that single read is the result. Measured on 40 val faces turned by
        180 deg: 97 % NME without this check, 3.9 % with it; the quality bar spares the
        twin of most upright faces (training/choose_presence.py)."""
        model = self.landmark_model
        probes = model.run_crops(crops, flip=False)
        bar = model.upright_read_quality
        unsure = [
            i for i, (views, presence) in enumerate(probes)
            if bar is None or model.reading_quality(views, presence) < bar
        ]  # fmt: skip
        if not unsure:
            return crops, probes
        twins = [model.crop(image_rgb, detections[i][0], detections[i][2] + 180.0) for i in unsure]
        for i, twin, probe in zip(unsure, twins, model.run_crops(twins, flip=False), strict=True):
            if model.reading_quality(*probe) > model.reading_quality(*probes[i]):
                crops[i], probes[i] = twin, probe
        return crops, probes

    def _align_detections(
        self,
        image_rgb: np.ndarray,
        detections: list[tuple],
        keep_heatmaps: bool,
        upside_down_check: bool = True,
        check_presence: bool = True,
        recrop: bool = True,
    ) -> list[Face]:
        """(box, score, roll) per detection -> the faces the model accepts.

        Each crop is read once unmirrored (the probe), and the probe decides whether the
        face is cropped again; only then do the mirror views run, of the crop each face
        ends with. Measured on 60 val photos: a third of the faces are cropped again,
        and reading their first crop's mirror view too cost a tenth of the landmark
        step."""
        if not detections:
            return []
        model = self.landmark_model
        start = time.perf_counter()
        crops = [model.crop(image_rgb, bbox, roll) for bbox, _, roll in detections]
        if upside_down_check and len(self.quarter_turns) > 1:
            crops, probes = self._upright_or_upside_down(image_rgb, detections, crops)
        else:
            probes = model.run_crops(crops)
        threshold = model.presence_threshold if check_presence else None

        def no_face(presence: float | None) -> bool:
            return presence is not None and threshold is not None and presence < threshold

        stats = self.detector.model.spec.extra.get("box_vs_landmarks")
        # (detection, crop it ends with, box of that crop, the probe's reading of that
        # crop decoded, or None when the face was cropped again)
        ends = []
        for detection, crop, probe in zip(detections, crops, probes, strict=True):
            if no_face(probe[1]):
                continue
            bbox = detection[0]
            points, scores = model.landmarks(probe[0], crop)
            # A face more tilted than the keypoints said (they are coarse): crop again
            # with the landmarks' own roll, which the model was trained to correct; and
            # a detector box far from where the landmarks put it (close-ups, where the
            # box is cut by the frame): crop again from the landmarks' box.
            roll = float(np.degrees(face_roll(points)))
            box = bbox
            if recrop and self.recrop_iou > 0 and stats is not None:
                implied = upright_box(points, roll, stats)
                if float(box_iou(np.asarray(bbox, np.float64), implied)[0]) < self.recrop_iou:
                    box = implied
            turned = recrop and abs(_angle_difference(roll, crop.roll)) > ROLL_RECROP_DEGREES
            if box is not bbox or turned:
                ends.append((detection, model.crop(image_rgb, box, roll), box, None))
            else:
                ends.append((detection, crop, box, (probe, points, scores)))
        # Read again: the new crops (with flip, both views), and with flip the mirror
        # view of the others; without flip the others' probe is their reading.
        again = [i for i, end in enumerate(ends) if end[3] is None]
        mirror = [i for i, end in enumerate(ends) if end[3] is not None] if self.flip else []
        reads: dict[int, tuple[np.ndarray, float | None]] = {}
        if mirror:
            probed = [ends[i][3][0] for i in mirror]
            mirrored = model.with_mirror_views([ends[i][1] for i in mirror], probed)
            reads |= dict(zip(mirror, mirrored, strict=True))
        if again:
            read = model.run_crops([ends[i][1] for i in again], flip=self.flip)
            reads |= dict(zip(again, read, strict=True))
        faces, face_crops, crop_boxes = [], [], []
        for i, ((bbox, score, _), crop, box, first) in enumerate(ends):
            if i in reads:
                views, presence = reads[i]
                # The crop a face ends with has the last word: the threshold was chosen
                # on the presence faces end with (training/choose_presence.py), and a
                # face reported below it broke the contract (the coffee cup's 0.44).
                if no_face(presence):
                    continue
                points, scores = model.landmarks(views, crop)
            else:  # the probe is the reading, judged and decoded above
                (views, presence), points, scores = first
            faces.append(
                Face(
                    np.asarray(bbox, dtype=np.float64),
                    float(score),
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
        if self.depth_model is not None:
            self._add_3d(image_rgb, faces, face_crops, crop_boxes)
        return faces

    def _add_3d(
        self, image_rgb: np.ndarray, faces: list[Face], crops: list, boxes: list
    ) -> None:
        """``landmarks_3d`` of each face: x, y from the 3D-convention model (or the 2D
        points without one), z from the depth stage."""
        start = time.perf_counter()
        model = self.landmark_model_3d
        points = [face.landmarks for face in faces]
        if model is not None and faces:
            crops = [
                model.crop(image_rgb, box, face.roll)
                for face, box in zip(faces, boxes, strict=True)
            ]
            results = model.run_crops(crops, flip=self.flip)
            points = [model.landmarks(views, crop)[0] for crop, (views, _) in zip(
                crops, results, strict=True)]  # fmt: skip
        self.times.add("landmarks_3d", time.perf_counter() - start)
        start = time.perf_counter()
        for face, crop, xy in zip(faces, crops, points, strict=True):
            if isinstance(self.depth_model, ShapeFitDepth):
                # (the far half of a profile's x, y comes from the fit too)
                face.landmarks_3d = self.depth_model.points_3d(xy)
            else:
                points_crop = xy @ crop.matrix[:, :2].T + crop.matrix[:, 2]
                z = self.depth_model.depth(crop.image, points_crop, crop.side)
                face.landmarks_3d = np.column_stack([xy, z])
            if self.pose_frame is not None:
                fit, rotation = pose_fit(self.prior, face.landmarks_3d, face.landmarks)
                face.pose = HeadPose.from_fit(rotation, self.pose_frame)
                if isinstance(self.depth_model, ShapeFitDepth):
                    # z follows the pose (AFLW2000-3D validation faces: z 3.79 -> 3.34 %),
                    # at the rotation the pose frame says is true (the networks' own
                    # bias taken out), in the prior's frame again.
                    true = rotation @ self.pose_frame.T @ self.prior.pose_frame
                    face.landmarks_3d[:, 2] = self.depth_model.depth_turned(fit, true)
        self.times.add("depth", time.perf_counter() - start)

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
        stats = self.detector.model.spec.extra.get("box_vs_landmarks")
        if not previous or stats is None:
            return None
        detections = []
        for i, face in enumerate(previous):
            roll = float(np.degrees(face_roll(face.landmarks))) if rolls is None else rolls[i]
            box = upright_box(face.landmarks, roll, stats)
            detections.append((box, face.score, roll))
        # The previous frame's roll is trusted: no upside-down check while following.
        faces = self._align_detections(
            image_rgb, detections, keep_heatmaps=False, upside_down_check=False
        )
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

        def read(path: Path) -> tuple[Path, np.ndarray | None, list[tuple] | None, str | None]:
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
                return path, image, self._align_detected(image, first, keep_heatmaps), None

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
                yield path, image, self._align_detected(image, first, keep_heatmaps), None
        finally:
            bar.close()
            ahead.close()


# Residual roll (degrees) past which a face is cropped again at its landmarks' roll.
ROLL_RECROP_DEGREES = 15.0


def _angle_difference(a: float, b: float) -> float:
    return (a - b + 180.0) % 360.0 - 180.0


# Roll (degrees) past which a face found by an upright detector pass stands outside
# BlazeFace's range (it finds faces within about 45 deg of upright, util/detect.py) and
# the model's (trained for a residual roll up to 45 deg): the turned passes look again.
UPRIGHT_DEGREES = 45.0


def _upright(face: Face) -> bool:
    return abs(_angle_difference(face.roll, 0.0)) <= UPRIGHT_DEGREES


def _reading_quality(face: Face) -> float:
    """How well the model read a face (LandmarkModel.reading_quality, from the face's
    peak scores)."""
    presence = 1.0 if face.presence is None else face.presence
    return float(np.mean(face.landmark_scores)) * presence


# Detector boxes overlapping by more than this are one face (as merge_detections has it).
SAME_FACE_IOU = 0.3


def _same_reading(detection: tuple, face: Face, min_iou: float) -> bool:
    """A (box, score, roll) detection of ``face`` in its box (IoU >= ``min_iou``), at
    the roll it was read with."""
    bbox, _, roll = detection
    if float(box_iou(face.bbox, np.asarray(bbox, np.float64)[None])[0]) < min_iou:
        return False
    return abs(_angle_difference(roll, face.roll)) <= ROLL_RECROP_DEGREES


def _better_readings(faces: list[Face], others: list[tuple[Face, np.ndarray]]) -> list[Face]:
    """``faces`` and the (face, box) ``others`` together, one face per spot: a face
    whose detector box overlaps an other's ``box`` by more than SAME_FACE_IOU is the
    same face, and the better read one stays; best detection score first. An other
    may be one of ``faces``, confirmed by a turned pass's box (which overlaps the
    upright pass's boxes of the face that did not overlap each other)."""
    kept = list(faces)
    for other, box in others:
        box = np.asarray(box, np.float64)
        same = [
            face
            for face in kept
            if face is not other and float(box_iou(box, face.bbox[None])[0]) > SAME_FACE_IOU
        ]
        if all(_reading_quality(other) > _reading_quality(face) for face in same):
            kept = [face for face in kept if not any(face is f for f in same)]
            kept += [] if any(face is other for face in kept) else [other]
    return sorted(kept, key=lambda face: -face.score)


def upright_box(landmarks: np.ndarray, roll: float, stats: dict) -> np.ndarray:
    """The detector box these landmarks would get if the face were upright, placed on
    the face: measured box-vs-landmark offsets apply in the face's own frame."""
    rad = np.deg2rad(roll)
    rotation = np.array([[np.cos(rad), -np.sin(rad)], [np.sin(rad), np.cos(rad)]])
    centre = landmarks.mean(0)
    upright = (landmarks - centre) @ rotation + centre  # turned by -roll
    box = box_from_landmarks(upright, stats["centre_dx"], stats["centre_dy"], stats["size_ratio"])
    box_centre = (box[:2] + box[2:]) / 2
    moved = (box_centre - centre) @ rotation.T + centre
    half = (box[2:] - box[:2]) / 2
    return np.concatenate([moved - half, moved + half])


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
