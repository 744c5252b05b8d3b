"""The FAN library's API (``face_alignment`` on PyPI, Bulat & Tzimiropoulos) over FaceAligner.

Code written for that library runs unchanged::

    fa = face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D, device="cpu")
    preds = fa.get_landmarks(image_rgb)  # [(68, 2) array per face], or None: no face

The arguments and return types are that library's (version 1.5.0), checked against
its test suite (../shared/fan_tests, run by .ci/run); the work is FaceAligner's. What
differs is in README.md, "Drop-in for the FAN library": CPU only (no torch needed;
tensors are taken when torch is installed), BlazeFace whatever ``face_detector`` names
(with a warning), z in image pixels.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np

from .aligner import FaceAligner
from .face import Face
from .io import InputError, expand_inputs, read_image
from .utils import as_array

Landmarks = list[np.ndarray] | None
# get_landmarks* return the landmarks, or (landmarks, scores, boxes) when asked for either.
Result = Landmarks | tuple[Landmarks, list[np.ndarray] | None, list[np.ndarray] | None]


class LandmarksType(IntEnum):
    """The kind of landmarks: ``TWO_D`` (x, y) or ``THREE_D`` (x, y, z)."""

    TWO_D = 1
    TWO_HALF_D = 2  # the 3D-convention network's x, y (landmarks_3d without z)
    THREE_D = 3
    # The names before FAN 1.4, aliases of the above: their rename broke many projects.
    _2D = 1
    _2halfD = 2
    _3D = 3


class NetworkSize(IntEnum):
    """Accepted for compatibility; there is one network size, this package's model."""

    LARGE = 4


# The FAN library's detector names, with the reference scale each gives its boxes (a
# face box of width + height = reference_scale is a 200 px crop). All of them run
# BlazeFace here; its "folder" detector (boxes read from files beside the images) has no
# equivalent: pass detected_faces= instead.
FAN_DETECTORS = {
    "sfd": 195.0,
    "blazeface": 195.0,
    "dlib": 195.0,
    "retinaface": 165.0,
    "scrfd": 165.0,
    "yunet": 165.0,
}


class FaceDetector:
    """``fa.face_detector``, as FAN's detectors: ``detect_from_image(image or path)``
    gives ``[[x1, y1, x2, y2, score], ...]`` (float32), the detector's own boxes without
    the landmark model's presence check; ``reference_scale`` is the named detector's."""

    def __init__(self, aligner: FaceAligner, reference_scale: float) -> None:
        self.aligner = aligner
        self.reference_scale = reference_scale

    def detect_from_image(self, image_or_path: Any) -> list[np.ndarray]:
        image = _as_image(image_or_path)
        found = self.aligner.detector.detect(image, self.aligner.quarter_turns[:1])
        return [np.append(d.bbox, d.score).astype(np.float32) for d in found]

    def detect_from_batch(self, images: Any) -> list[list[np.ndarray]]:
        return [self.detect_from_image(image) for image in _batch_images(images)]


class FaceAlignment:
    """The FAN library's ``FaceAlignment``, on FaceAligner (``self.aligner``).

    ``aligner_options`` go to FaceAligner (``threads``, ``precision``, model paths, ...).
    ``face_detector`` is one of FAN's detector names (all run BlazeFace: a warning says
    so for the others) or the path of a BlazeFace-format ONNX file. ``network_size``,
    ``dtype``, ``verbose`` and ``max_batch_size`` (every face of an image is read in one
    call) are accepted and have no effect; ``compile=True`` and a device other than the
    CPU get a warning.
    """

    def __init__(
        self,
        landmarks_type: LandmarksType | int,
        network_size: NetworkSize | int = NetworkSize.LARGE,
        device: str = "cpu",
        dtype: object = None,
        flip_input: bool = True,
        face_detector: str | os.PathLike | None = None,
        face_detector_kwargs: dict | None = None,
        verbose: bool = False,
        compile: bool = False,  # noqa: A002 - FAN's argument name
        max_batch_size: int = 64,
        **aligner_options: Any,
    ) -> None:
        self.landmarks_type = LandmarksType(landmarks_type)
        if int(max_batch_size) < 1:
            raise ValueError(f"max_batch_size must be at least 1, not {max_batch_size}")
        self.max_batch_size = int(max_batch_size)
        if compile:
            warnings.warn("compile=True has no effect: the networks run on onnxruntime",
                          stacklevel=2)  # fmt: skip
        # Not named: FAN's default (sfd, whose reference scale BlazeFace's boxes get),
        # without the warning a user who names a detector gets.
        named = face_detector is not None
        face_detector = "sfd" if face_detector is None else face_detector
        if isinstance(face_detector, str) and face_detector in FAN_DETECTORS:
            if named and face_detector != "blazeface":
                warnings.warn(
                    f"face_detector {face_detector!r}: this package runs BlazeFace for every "
                    "detector name (with that detector's reference_scale)",
                    stacklevel=2,
                )
        if not str(device).startswith("cpu"):
            warnings.warn(
                f"device {device!r}: this package runs on the CPU only; using the CPU",
                stacklevel=2,
            )
        if face_detector_kwargs:
            warnings.warn(
                f"face_detector_kwargs {sorted(face_detector_kwargs)} have no effect "
                "(pass min_score=... for the detection threshold)",
                stacklevel=2,
            )
        self.device = "cpu"
        self.flip_input = flip_input
        self.verbose = verbose
        self.aligner = FaceAligner(
            detector_model=_detector_model(face_detector),
            active_3d=self.landmarks_type != LandmarksType.TWO_D,
            flip=flip_input,
            **aligner_options,
        )
        self.face_detector = FaceDetector(
            self.aligner, FAN_DETECTORS.get(str(face_detector), FAN_DETECTORS["blazeface"])
        )

    def get_landmarks(
        self,
        image_or_path: np.ndarray | str | os.PathLike,
        detected_faces: list[np.ndarray] | None = None,
        return_bboxes: bool = False,
        return_landmark_score: bool = False,
    ) -> Result:
        """The same as get_landmarks_from_image (FAN's older name)."""
        return self.get_landmarks_from_image(
            image_or_path, detected_faces, return_bboxes, return_landmark_score
        )

    def get_landmarks_from_image(
        self,
        image_or_path: np.ndarray | str | os.PathLike,
        detected_faces: list[np.ndarray] | None = None,
        return_bboxes: bool = False,
        return_landmark_score: bool = False,
    ) -> Result:
        """A (68, 2) or (68, 3) array per face of a uint8 RGB image (or image file), or
        None when there is no face. ``detected_faces``: boxes [x1, y1, x2, y2(, score)]
        to use instead of detecting. With ``return_bboxes`` or ``return_landmark_score``:
        (landmarks, scores (68,) per face or None, boxes (5,) with score or None)."""
        faces = self._align(image_or_path, detected_faces)
        return _result(faces, return_bboxes, return_landmark_score, given=detected_faces)

    def _align(self, image_or_path: Any, detected_faces: list | None) -> list[Face]:
        """The faces, as FAN finds them: one per given box, in order, when boxes are
        given (no presence check, whatever it thinks of a box)."""
        image = image_or_path if isinstance(image_or_path, str | os.PathLike) else (
            _as_image(image_or_path)
        )  # fmt: skip
        given = None if detected_faces is None else [as_array(b) for b in detected_faces]
        faces = self.aligner.align(image, bboxes=given, check_presence=given is None)
        return self._as_type(faces)

    def _as_type(self, faces: list[Face]) -> list[Face]:
        """TWO_HALF_D, as FAN's: the 3D-convention network's x, y, without z."""
        if self.landmarks_type != LandmarksType.TWO_HALF_D:
            return faces
        return [
            dataclasses.replace(f, landmarks=f.landmarks_3d[:, :2], landmarks_3d=None)
            for f in faces
        ]

    def get_landmarks_from_batch(
        self,
        image_batch: np.ndarray | list[np.ndarray],
        detected_faces: list[list[np.ndarray]] | None = None,
        return_bboxes: bool = False,
        return_landmark_score: bool = False,
    ) -> list | tuple[list, list | None, list | None] | None:
        """Per image, as FAN returns it: every face's landmarks stacked, (68 * faces, 2 or
        3), or [] when there is none. ``image_batch``: B x H x W x 3 or, as FAN's tensors,
        B x 3 x H x W (float 0-255 is taken too), or a list of images.
        ``detected_faces``: boxes per image. The scores and boxes, when asked for, are per
        image lists as in get_landmarks_from_image."""
        images = _batch_images(image_batch)
        given = [None] * len(images) if detected_faces is None else detected_faces
        if len(given) == 0:
            warnings.warn("No faces were detected.", stacklevel=2)
            return (None, None, None) if return_bboxes or return_landmark_score else None
        landmarks, scores, boxes = [], [], []
        for image, bboxes in zip(images, given, strict=True):
            points, image_scores, image_boxes = _result(
                self._align(image, bboxes), True, True, given=bboxes
            )
            landmarks.append([] if points is None else np.concatenate(points))
            scores.append(image_scores)
            boxes.append(image_boxes or [])  # FAN's detector gives [] for no face
        if not (return_bboxes or return_landmark_score):
            return landmarks
        return (
            landmarks,
            scores if return_landmark_score else None,
            boxes if return_bboxes else None,
        )

    def get_landmarks_from_directory(
        self,
        path: str | os.PathLike,
        extensions: list[str] | tuple[str, ...] = (".jpg", ".png"),
        recursive: bool = True,
        show_progress_bar: bool = True,
        return_bboxes: bool = False,
        return_landmark_score: bool = False,
    ) -> dict[str, Result]:
        """{image path: what get_landmarks_from_image gives for it} for the images with
        one of ``extensions`` (any case) in the folder, and below it if ``recursive``. A
        file that cannot be read counts as having no face, with a warning."""
        folder = Path(path)
        suffixes = {e.lower() for e in extensions}
        files = [
            str(p)
            for p in (expand_inputs([str(folder)]) if folder.is_dir() else [])
            if p.suffix.lower() in suffixes and (recursive or p.parent == folder)
        ]
        results: dict[str, Result] = {}
        for image_path, _, faces, error in self.aligner.iter_paths(files, show_progress_bar):
            if error:  # the file's own warning, not also "No faces were detected."
                warnings.warn(error, stacklevel=2)
                results[str(image_path)] = _result([], return_bboxes, return_landmark_score,
                                                   warn=False)  # fmt: skip
                continue
            results[str(image_path)] = _result(
                self._as_type(faces), return_bboxes, return_landmark_score
            )
        return results


def _as_image(image: Any) -> np.ndarray:
    """A uint8 RGB image of any numeric 0-255 array or tensor (FAN takes floats too),
    H x W x 3 (or grey); paths are read as they are."""
    if isinstance(image, str | os.PathLike):
        return read_image(image)
    array = as_array(image)
    if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[2] not in (3, 4):
        array = array.transpose(1, 2, 0)  # a channels-first tensor
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
            raise InputError(f"image array of dtype {array.dtype}: expected numbers 0-255")
        array = np.clip(np.rint(array), 0, 255).astype(np.uint8)
    return array


def _detector_model(face_detector: str | os.PathLike) -> Path | None:
    """None (the default BlazeFace) for FAN's detector names, else a model path."""
    if isinstance(face_detector, str) and face_detector in FAN_DETECTORS:
        return None
    if str(face_detector).endswith(".onnx"):
        return Path(face_detector)
    raise ValueError(
        f"face_detector {face_detector!r}: one of {', '.join(FAN_DETECTORS)} (all run "
        "BlazeFace here) or the path of a BlazeFace .onnx file"
    )


def _result(
    faces: list[Face],
    return_bboxes: bool,
    return_landmark_score: bool,
    warn: bool = True,
    given: list | None = None,
) -> Result:
    """FAN's return value for one image's faces (float32, as FAN's); None in place of
    lists when none (with FAN's warning, unless ``warn`` is off). ``given``: the boxes
    the caller passed, returned as they were given."""
    if faces:
        landmarks = [face.points.astype(np.float32) for face in faces]
        scores = [face.landmark_scores.astype(np.float32) for face in faces]
        boxes = (
            list(given)
            if given is not None
            else [np.append(face.bbox, face.score).astype(np.float32) for face in faces]
        )
    else:
        if warn:
            warnings.warn("No faces were detected.", stacklevel=3)  # as FAN warns
        landmarks = scores = boxes = None
    if not (return_bboxes or return_landmark_score):
        return landmarks
    return landmarks, scores if return_landmark_score else None, boxes if return_bboxes else None


def _batch_images(image_batch: np.ndarray | list[np.ndarray]) -> list[np.ndarray]:
    """A batch as FAN takes it (B x 3 x H x W, float 0-255), or B x H x W x 3, or a
    list: uint8 H x W x 3 images for FaceAligner."""
    if isinstance(image_batch, list | tuple):
        return [_as_image(image) for image in image_batch]
    batch = as_array(image_batch)  # also a torch tensor
    if batch.ndim != 4:
        raise ValueError(f"image batch of shape {batch.shape}: expected B x H x W x 3")
    if batch.shape[-1] not in (3, 4) and batch.shape[1] in (3, 4):
        batch = batch.transpose(0, 2, 3, 1)  # channels first, as FAN's tensors
    return [_as_image(image) for image in batch]  # floats 0-255 as FAN takes them
