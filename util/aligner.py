"""The Python API: ``FaceAligner`` runs detect -> crop -> heatmaps -> decode -> depth.

    from util.aligner import FaceAligner
    aligner = FaceAligner(active_3d=True)
    for face in aligner.align(image_rgb):
        print(face.bbox, face.landmarks, face.landmarks_3d)

Importing this module loads nothing; models are loaded when an aligner is made.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from util.crop import box_from_landmarks
from util.depth import ORIGINAL_DEPTH_SPEC, DepthModel
from util.detect import FaceDetector, default_detector_path
from util.heatmaps import ORIGINAL_FAN_SPEC, LandmarkModel
from util.io import InputError, expand_inputs, read_image
from util.runtime import load_model, model_for_precision, resolve_runtime

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
DEFAULT_MODEL_2D = MODELS_DIR / "fan2d_compact.onnx"
DEFAULT_MODEL_DEPTH = MODELS_DIR / "depth_compact.onnx"


@dataclass
class Face:
    """One face: its detection and its 68 landmarks (original-image pixels)."""

    bbox: np.ndarray  # (4,) x1, y1, x2, y2
    score: float  # detection score
    landmarks: np.ndarray  # (68, 2)
    landmark_scores: np.ndarray  # (68,) heatmap peaks
    landmarks_3d: np.ndarray | None = None  # (68, 3), z zero-mean, larger = closer
    heatmaps: np.ndarray | None = None  # (68, 64, 64) when asked for

    def to_json(self) -> dict:
        data = {
            "bbox": [round(float(v), 2) for v in self.bbox],
            "score": round(float(self.score), 4),
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
            "landmark_scores": [round(float(s), 4) for s in self.landmark_scores],
        }
        if self.landmarks_3d is not None:
            data["landmarks_3d"] = [[round(float(v), 2) for v in p] for p in self.landmarks_3d]
        return data


@dataclass
class StageTimes:
    """Wall-clock seconds spent per stage, accumulated over calls."""

    seconds: dict[str, list[float]] = field(default_factory=dict)

    def add(self, stage: str, elapsed: float) -> None:
        self.seconds.setdefault(stage, []).append(elapsed)


class FaceAligner:
    """Finds every face and its 68 landmarks, in 2D or (``active_3d``) 3D."""

    def __init__(
        self,
        model_2d: str | os.PathLike | None = None,
        model_depth: str | os.PathLike | None = None,
        detector_model: str | os.PathLike | None = None,
        active_3d: bool = False,
        runtime: str = "onnxruntime",
        env_id: int = -1,
        threads: int = 0,
        min_score: float | None = None,
        flip: bool = False,
        precision: str = "int8",
    ) -> None:
        """``flip`` averages each face with its mirror image: more accurate, twice the
        landmark cost. ``precision``: the default models' int8 versions when they are
        there ("int8"), or the fp32 files ("fp32"); model paths given are used as given."""
        self.flip = flip
        self.runtime = resolve_runtime(runtime)
        common = {"runtime": self.runtime, "env_id": env_id, "threads": threads}
        self.detector = FaceDetector(
            detector_model or default_detector_path(), min_score=min_score, **common
        )
        model_2d = model_2d or model_for_precision(DEFAULT_MODEL_2D, precision, self.runtime)
        self.landmark_model = LandmarkModel(
            load_model(model_2d, default_spec=ORIGINAL_FAN_SPEC, **common)
        )
        self.depth_model = None
        if active_3d:
            model_depth = model_depth or model_for_precision(
                DEFAULT_MODEL_DEPTH, precision, self.runtime
            )
            self.depth_model = DepthModel(
                load_model(model_depth, default_spec=ORIGINAL_DEPTH_SPEC, **common)
            )
        self.times = StageTimes()
        # Median heatmap peak below which a followed face counts as lost (video).
        self.follow_min_score = float(
            self.landmark_model.model.spec.extra.get("follow_min_score", 0.3)
        )

    # -- the pipeline -------------------------------------------------------------------

    def align(
        self,
        image_rgb: np.ndarray,
        keep_heatmaps: bool = False,
        bboxes: list[np.ndarray] | None = None,
    ) -> list[Face]:
        """Every face in a uint8 RGB image; ``bboxes`` skips detection."""
        image_rgb = _check_image(image_rgb)
        start = time.perf_counter()
        if bboxes is None:
            detections = [(d.bbox, d.score) for d in self.detector.detect(image_rgb)]
        else:
            detections = [(np.asarray(b[:4], dtype=np.float64), 1.0) for b in bboxes]
        self.times.add("detect", time.perf_counter() - start)
        return [
            self._align_face(image_rgb, bbox, score, keep_heatmaps) for bbox, score in detections
        ]

    def _align_face(
        self, image_rgb: np.ndarray, bbox: np.ndarray, score: float, keep_heatmaps: bool
    ) -> Face:
        model = self.landmark_model
        start = time.perf_counter()
        crop = model.crop(image_rgb, bbox)
        views = model.heatmaps(crop, flip=self.flip)
        points, scores = model.landmarks(views, crop)
        self.times.add("landmarks", time.perf_counter() - start)
        face = Face(
            np.asarray(bbox, dtype=np.float64),
            float(score),
            points,
            scores,
            heatmaps=views.mean(axis=0) if keep_heatmaps else None,
        )
        if self.depth_model is not None:
            start = time.perf_counter()
            points_crop = points @ crop.matrix[:, :2].T + crop.matrix[:, 2]
            z = self.depth_model.depth(crop.image, points_crop, crop.side)
            face.landmarks_3d = np.column_stack([points, z])
            self.times.add("depth", time.perf_counter() - start)
        return face

    def follow(self, image_rgb: np.ndarray, previous: list[Face]) -> list[Face] | None:
        """Video: align the faces where the previous frame's landmarks were, without the
        detector. None when a face looks lost (low heatmap peaks): detect again then."""
        image_rgb = _check_image(image_rgb)
        stats = self.detector.model.spec.extra.get("box_vs_landmarks")
        if not previous or stats is None:
            return None
        faces = []
        for face in previous:
            box = box_from_landmarks(
                face.landmarks, stats["centre_dx"], stats["centre_dy"], stats["size_ratio"]
            )
            found = self._align_face(image_rgb, box, face.score, keep_heatmaps=False)
            if float(np.median(found.landmark_scores)) < self.follow_min_score:
                return None
            faces.append(found)
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
        rgb = read_image(image) if isinstance(image, str | os.PathLike) else image
        faces = self.align(rgb, bboxes=detected_faces)
        landmarks = [f.landmarks_3d if f.landmarks_3d is not None else f.landmarks for f in faces]
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
            results[str(image_path)] = (
                None
                if error
                else [f.landmarks_3d if f.landmarks_3d is not None else f.landmarks for f in faces]
            )
        return results

    def iter_paths(
        self, inputs: list[str], show_progress_bar: bool = False, keep_heatmaps: bool = False
    ) -> Iterator[tuple[Path, np.ndarray | None, list[Face], str | None]]:
        """(path, image or None, faces, error or None) per image; bad files do not stop it."""
        from tqdm import tqdm

        paths = expand_inputs(inputs)
        for path in tqdm(paths, disable=not show_progress_bar or len(paths) < 2, unit="img"):
            try:
                image = read_image(path)
            except InputError as exc:
                yield path, None, [], str(exc)
                continue
            yield path, image, self.align(image, keep_heatmaps=keep_heatmaps), None


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
