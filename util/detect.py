"""Face detection with MediaPipe's BlazeFace models (converted to ONNX, see tools/).

The pipeline follows MediaPipe's face detection graph: letterbox the image into the
model's square input, run the SSD network, decode its raw regressors against fixed
anchors, turn raw scores into probabilities, merge overlapping detections with
weighted non-maximum suppression, and map the result back to image pixels.

Everything model-specific (input size, normalisation, anchor options, score limits,
decoding scale) is read from the model's spec (``models/NAME.json``), never written here.

Coordinates: detections are in the pixels of the original image, 0-based, with pixel
centres at integer coordinates (the convention of the iBUG .pts files). Boxes are not
clipped to the image, so a face cut by the border keeps its full extent.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .face_frame import angle_difference
from .model_facts import DetectorFacts
from .paths import MODELS_DIR
from .runtime import Model, ModelError, check_single_input, format_shape, load_model

# The detector the tool uses unless told otherwise, relative to MODELS_DIR. Chosen by
# the missed annotated faces measured with training/detector_box_stats.py: on the 171
# 300w/val photos both models miss none; with the faces made 3x smaller the front
# (128 px, short range) model misses 20 and the back (256 px) model none; on tight crops
# (crop = landmark box, 321 faces) back + retry misses 3, front alone 4.
DEFAULT_DETECTOR_MODEL = "blazeface_back.onnx"

# When a model finds no face, look again with the image shrunk to 1/RETRY_CANVAS inside
# the input (see letterbox): BlazeFace misses faces that fill the whole photo. On tight
# crops of the 300-W faces this takes the back model from 14 to 3 misses out of 321;
# images where the first pass finds a face are unaffected.
RETRY_CANVAS = 1.5

# Where the detector's boxes sit on the faces it finds, relative to the box of their 68
# landmarks, in landmark-box sizes (sqrt of area): means ``centre_dx``, ``centre_dy``,
# ``size_ratio`` and their spreads (``*_std``). Measured on 300-W by
# training/detector_box_stats.py, which writes them into the detector's spec under this
# key (util.model_facts.BOX_STATS_KEY), the one place training (detector-like crops) and
# the tool (the box a face's landmarks imply: video following, re-cropping) read them from.

# MediaPipe's keypoint order (the subject's right and left, as in the iBUG scheme).
KEYPOINT_NAMES = (
    "right_eye",
    "left_eye",
    "nose_tip",
    "mouth",
    "right_ear_tragion",
    "left_ear_tragion",
)


def default_detector_path() -> Path:
    """Path of the default detector model file."""
    return MODELS_DIR / DEFAULT_DETECTOR_MODEL


# --------------------------------------------------------------------------- anchors


def generate_anchors(options: dict[str, Any]) -> np.ndarray:
    """MediaPipe SSD anchor centres, float32 (N, 2) as (x, y) in 0-1 units of the input.

    ``options`` holds MediaPipe's SsdAnchorsCalculator fields for fixed-size anchors:
    ``num_layers``, ``strides``, ``input_size_height``, ``input_size_width``,
    ``anchor_offset_x``, ``anchor_offset_y`` and ``interpolated_scale_aspect_ratio``.
    Consecutive layers with the same stride share one feature map; each of those layers
    adds one anchor per cell (two when an interpolated scale is used, aspect ratio 1.0).
    """
    strides = [int(s) for s in options["strides"]]
    num_layers = int(options["num_layers"])
    if len(strides) != num_layers:
        raise ValueError(f"anchor options: {len(strides)} strides for {num_layers} layers")
    height = int(options["input_size_height"])
    width = int(options["input_size_width"])
    offset_x = float(options.get("anchor_offset_x", 0.5))
    offset_y = float(options.get("anchor_offset_y", 0.5))
    per_layer = 2 if float(options.get("interpolated_scale_aspect_ratio", 1.0)) > 0 else 1

    anchors = []
    layer = 0
    while layer < num_layers:
        last = layer
        while last < num_layers and strides[last] == strides[layer]:
            last += 1
        repeats = per_layer * (last - layer)
        rows = int(np.ceil(height / strides[layer]))
        cols = int(np.ceil(width / strides[layer]))
        ys, xs = np.meshgrid(
            (np.arange(rows) + offset_y) / rows, (np.arange(cols) + offset_x) / cols, indexing="ij"
        )
        centres = np.stack([xs.ravel(), ys.ravel()], axis=1)
        anchors.append(np.repeat(centres, repeats, axis=0))
        layer = last
    return np.concatenate(anchors).astype(np.float32)


# --------------------------------------------------------------------------- decoding


def decode_boxes(
    raw_boxes: np.ndarray, anchors: np.ndarray, input_size: float | tuple[float, float]
) -> np.ndarray:
    """Raw SSD regressors -> float32 (N, 4 + 2K): xmin, ymin, xmax, ymax, then K (x, y).

    ``raw_boxes`` is (N, 4 + 2K) or (1, N, 4 + 2K): box centre offset (x, y), size (w, h)
    and keypoint offsets, in input pixels relative to the anchor centre. ``input_size``
    is the decoding scale, one number or (height, width). Output is in 0-1 units of the
    model input (anchors have fixed unit size, as in MediaPipe's BlazeFace graphs).
    """
    raw = np.asarray(raw_boxes, dtype=np.float32)
    raw = raw.reshape(-1, raw.shape[-1])
    if raw.shape[0] != len(anchors) or raw.shape[1] < 4 or raw.shape[1] % 2:
        raise ValueError(f"raw boxes {raw.shape} do not fit {len(anchors)} anchors")
    scale_h, scale_w = (
        (float(input_size), float(input_size))
        if np.isscalar(input_size)
        else (float(input_size[0]), float(input_size[1]))
    )
    points = raw.reshape(len(raw), -1, 2) / np.array([scale_w, scale_h], np.float32)
    centre = points[:, 0] + anchors
    half = points[:, 1] / 2
    keypoints = points[:, 2:] + anchors[:, None, :]
    out = np.concatenate([centre - half, centre + half, keypoints.reshape(len(raw), -1)], axis=1)
    return out.astype(np.float32)


def sigmoid_scores(raw_scores: np.ndarray, raw_score_limit: float) -> np.ndarray:
    """Raw logits -> float32 (N,) probabilities, clipped to +-limit first (as MediaPipe)."""
    logits = np.clip(
        np.asarray(raw_scores, np.float64).reshape(-1), -raw_score_limit, raw_score_limit
    )
    return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (4,) box with (M, 4) boxes, all as xmin, ymin, xmax, ymax."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def weighted_nms(
    boxes: np.ndarray, scores: np.ndarray, iou_threshold: float
) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """MediaPipe's weighted non-maximum suppression.

    ``boxes`` is (N, 4 + 2K) as from :func:`decode_boxes`. Repeatedly takes the best
    remaining detection, gathers every remaining detection overlapping it with
    IoU > ``iou_threshold`` (itself included), and replaces them by their score-weighted
    average box and keypoints, keeping the best score. Returns (box (4,), score,
    keypoints (K, 2)) tuples, best first. Score thresholding is the caller's job.
    """
    scores = np.asarray(scores, np.float64).reshape(-1)
    boxes = np.asarray(boxes, np.float64).reshape(len(scores), -1) if len(scores) else boxes
    remaining = np.argsort(-scores, kind="stable")
    results = []
    while len(remaining):
        best = remaining[0]
        overlap = box_iou(boxes[best, :4], boxes[remaining, :4]) > iou_threshold
        overlap[0] = True
        members = remaining[overlap]
        weights = scores[members]
        merged = (boxes[members] * weights[:, None]).sum(axis=0) / weights.sum()
        results.append(
            (
                merged[:4].astype(np.float32),
                float(scores[best]),
                merged[4:].reshape(-1, 2).astype(np.float32),
            )
        )
        remaining = remaining[~overlap]
    return results


# --------------------------------------------------------------------------- letterbox


@dataclass(frozen=True)
class Letterbox:
    """How an image was fitted into the model input: model px = image px * scale + pad.

    Both sides of the mapping use pixel-edge units here (0 at the left edge of the first
    pixel); the functions below convert to and from pixel-centre coordinates.
    """

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float
    input_size: tuple[int, int]  # (height, width)


def letterbox(
    image: np.ndarray, input_size: tuple[int, int], canvas: float = 1.0
) -> tuple[np.ndarray, Letterbox]:
    """Fit ``image`` into ``input_size`` (height, width) keeping its aspect; pad with black.

    The image is resized (area averaging when shrinking, bilinear when enlarging) and
    centred; the padding fills the rest. ``canvas`` > 1 shrinks the image further, as if
    it were centred in a black canvas ``canvas`` times its size first (so a face that
    fills the photo looks smaller to the model). Returns the model-sized image and the
    mapping.
    """
    in_h, in_w = int(input_size[0]), int(input_size[1])
    height, width = image.shape[:2]
    if height < 1 or width < 1:
        raise ValueError(f"empty image of shape {image.shape}")
    if canvas < 1:
        raise ValueError(f"canvas factor {canvas} < 1")
    scale = min(in_w / width, in_h / height) / canvas
    new_w = min(in_w, max(1, round(width * scale)))
    new_h = min(in_h, max(1, round(height * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    pad_x, pad_y = (in_w - new_w) // 2, (in_h - new_h) // 2
    boxed = cv2.copyMakeBorder(
        resized,
        pad_y,
        in_h - new_h - pad_y,
        pad_x,
        in_w - new_w - pad_x,
        cv2.BORDER_CONSTANT,
        value=(0, 0, 0),
    )
    mapping = Letterbox(new_w / width, new_h / height, float(pad_x), float(pad_y), (in_h, in_w))
    return boxed, mapping


def model_to_image(points: np.ndarray, mapping: Letterbox) -> np.ndarray:
    """(..., 2) points in 0-1 units of the model input -> original-image pixel centres."""
    points = np.asarray(points, np.float64)
    size = np.array([mapping.input_size[1], mapping.input_size[0]], np.float64)
    pad = np.array([mapping.pad_x, mapping.pad_y])
    scale = np.array([mapping.scale_x, mapping.scale_y])
    return (points * size - pad) / scale - 0.5


def image_to_model(points: np.ndarray, mapping: Letterbox) -> np.ndarray:
    """Inverse of :func:`model_to_image`: image pixel centres -> 0-1 model-input units."""
    points = np.asarray(points, np.float64)
    size = np.array([mapping.input_size[1], mapping.input_size[0]], np.float64)
    pad = np.array([mapping.pad_x, mapping.pad_y])
    scale = np.array([mapping.scale_x, mapping.scale_y])
    return ((points + 0.5) * scale + pad) / size


# --------------------------------------------------------------------------- detector


@dataclass(frozen=True)
class Candidate:
    """Where the landmark model reads a face: a box (x1, y1, x2, y2, original-image
    pixels), its score, and the roll (degrees) the crop is turned by. A detection gives
    one; so do boxes a caller gives (roll 0), the last frame's landmarks (video) and the
    profile pass."""

    bbox: np.ndarray
    score: float
    roll: float = 0.0


@dataclass(frozen=True)
class Detection:
    """One face: box (x1, y1, x2, y2) and 6 keypoints (x, y), in original-image pixels."""

    bbox: np.ndarray
    score: float
    keypoints: np.ndarray
    quarter_turns: int = 0  # the image was turned by this many quarter turns to find it

    @property
    def roll(self) -> float:
        """In-plane angle (degrees) of the line from the right eye to the left eye: 0 for
        an upright face, 90 for one lying with its left eye below its right."""
        dx, dy = self.keypoints[1] - self.keypoints[0]
        return float(np.degrees(np.arctan2(dy, dx))) if dx or dy else 0.0

    @property
    def mouth_roll(self) -> float:
        """The roll the line from between the eyes down to the mouth keypoint gives (0:
        the mouth straight below): still meaningful on a profile, where both eye
        keypoints fall on one side and their line points anywhere."""
        down = self.keypoints[3] - (self.keypoints[0] + self.keypoints[1]) / 2
        return float(np.degrees(np.arctan2(-down[0], down[1]))) if down.any() else 0.0

    def candidate(self, roll: float | None = None) -> Candidate:
        """This detection to read, at its eye line's roll unless ``roll`` is given."""
        return Candidate(self.bbox, self.score, self.roll if roll is None else roll)



# BlazeFace finds faces within about 45 degrees of upright; looking in the image turned
# by each quarter turn as well finds them at any roll (measured on val faces turned by
# 90, 135, 180 and 270 degrees: see training/evaluate.py --rotations).
ALL_QUARTER_TURNS = (0, 1, 2, 3)


def unturn_units(points: np.ndarray, quarter_turns: int) -> np.ndarray:
    """(..., 2) points in 0-1 units of a square model input turned by ``np.rot90(input,
    quarter_turns)`` -> the same points in the unturned input."""
    u, v = np.asarray(points, np.float64)[..., 0], np.asarray(points, np.float64)[..., 1]
    k = quarter_turns % 4
    if k == 1:
        u, v = 1.0 - v, u
    elif k == 2:
        u, v = 1.0 - u, 1.0 - v
    elif k == 3:
        u, v = v, 1.0 - u
    return np.stack([u, v], axis=-1)


def _tilt(det: Detection) -> float:
    """How far from upright (degrees) the face stood in the turned input it was found in."""
    return abs(angle_difference(det.roll, 90.0 * det.quarter_turns))


def _roll_gap(a: Detection, b: Detection) -> float:
    return abs(angle_difference(a.roll, b.roll))


def merge_detections(
    detections: list[Detection], iou: float = 0.3, same_roll: float = 30.0
) -> list[Detection]:
    """One detection per face, best score first: detections overlapping by more than
    ``iou`` are the same face found in several quarter turns.

    In a turn where the face stands upside down BlazeFace may still fire, with
    keypoints placed as if it stood upright (a roll 180 degrees off); turns where it
    stands upright or on its side agree on the roll. So the roll the most score agrees
    on (within ``same_roll`` degrees) wins, and of the detections that agree, the box
    and keypoints come from the turn in which the face stood most upright, where
    BlazeFace was trained (the score alone does not tell: the bundled sample scores
    0.878 upright and 0.892 on its side, with a box 13 % smaller). The score is the
    group's best."""
    groups: list[list[Detection]] = []
    for det in sorted(detections, key=lambda d: -d.score):
        for group in groups:
            if float(box_iou(det.bbox, group[0].bbox[None])[0]) > iou:
                group.append(det)
                break
        else:
            groups.append([det])
    merged = []
    for group in groups:

        def support(det: Detection, group: list[Detection] = group) -> float:
            return sum(d.score for d in group if _roll_gap(d, det) <= same_roll)

        agreed = max(group, key=support)
        agreeing = [d for d in group if _roll_gap(d, agreed) <= same_roll]
        merged.append(dataclasses.replace(min(agreeing, key=_tilt), score=group[0].score))
    return merged


def split_outputs(outputs: list[np.ndarray], num_coords: int) -> tuple[np.ndarray, np.ndarray]:
    """(raw boxes (N, num_coords), raw scores (N,)) from the model outputs, by shape."""
    boxes = [o for o in outputs if o.shape[-1] == num_coords]
    scores = [o for o in outputs if o.shape[-1] == 1]
    if len(boxes) != 1 or len(scores) != 1:
        shapes = [o.shape for o in outputs]
        raise ModelError(
            f"unexpected BlazeFace outputs {shapes} (want (.., {num_coords}), (.., 1))"
        )
    return boxes[0].reshape(-1, num_coords), scores[0].reshape(-1)


def detect_in_outputs(
    outputs: list[np.ndarray], anchors: np.ndarray, facts: DetectorFacts, min_score: float
) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """Raw model outputs -> merged detections in 0-1 model-input units, best first."""
    num_coords = 4 + 2 * facts.num_keypoints
    raw_boxes, raw_scores = split_outputs(outputs, num_coords)
    boxes = decode_boxes(raw_boxes, anchors, facts.box_scale)
    scores = sigmoid_scores(raw_scores, facts.raw_score_limit)
    keep = (scores >= min_score) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return weighted_nms(boxes[keep], scores[keep], facts.nms_threshold)


class FaceDetector:
    """A BlazeFace model with its anchors: ``detect(image_rgb) -> list[Detection]``.

    ``model_path`` None means :data:`DEFAULT_DETECTOR_MODEL`. ``min_score`` None takes
    the spec's. ``retry_canvas`` (None or 1 to disable): when nothing is found, detect
    once more with the image shrunk inside a black canvas this many times its size.
    """

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        runtime: str = "onnxruntime",
        env_id: int = -1,
        threads: int = 0,
        min_score: float | None = None,
        retry_canvas: float | None = RETRY_CANVAS,
    ) -> None:
        path = Path(model_path) if model_path is not None else default_detector_path()
        self.model: Model = load_model(
            path, runtime, env_id=env_id, threads=threads, expected_kind="blazeface"
        )
        facts = self.model.facts
        if not isinstance(facts, DetectorFacts):  # load_model checked the kind already
            raise ModelError(f"{path}: spec kind {self.model.spec.kind!r}, not a detector")
        self.facts: DetectorFacts = facts
        try:
            self.anchors = generate_anchors(facts.anchors)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{path}: spec key anchors is incomplete ({exc!r})") from None
        self.min_score = facts.min_score if min_score is None else float(min_score)
        self._check_shapes(4 + 2 * facts.num_keypoints)
        self.retry_canvas = retry_canvas
        # None: the spec has no box statistics (a detector nobody measured); the tracker
        # refuses it, since it cannot follow faces without them.
        self.box_stats = facts.box_vs_landmarks

    def _check_shapes(self, num_coords: int) -> None:
        """A ModelError unless the file takes the image and gives boxes and scores for
        every anchor (the same check split_outputs makes on every run)."""
        model = self.model
        check_single_input(model, model.spec.tensor_shape(3), "an RGB image")
        outputs = getattr(model, "output_shapes", None)
        if outputs is None:
            return
        ends = sorted(s[-1] if s else None for s in outputs)
        counts = {s[-2] for s in outputs if len(s) >= 2} - {None}
        if ends != sorted([1, num_coords]) or not counts <= {len(self.anchors)}:
            given = ", ".join(format_shape(s) for s in outputs)
            raise ModelError(
                f"{model.path}: gives {given}, not BlazeFace boxes and scores "
                f"(?, {len(self.anchors)}, {num_coords}) and (?, {len(self.anchors)}, 1)"
            )

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the model input."""
        return (int(self.model.spec.input_size[0]), int(self.model.spec.input_size[1]))

    def detect(
        self,
        image_rgb: np.ndarray,
        quarter_turns: tuple[int, ...] = (0,),
        canvas: float | None = None,
        min_score: float | None = None,
    ) -> list[Detection]:
        """Every face in a uint8 RGB HxWx3 image, best score first (``min_score``: this
        call's threshold, else the detector's).

        ``quarter_turns``: also look in the image turned by these multiples of 90
        degrees (ALL_QUARTER_TURNS finds faces at any roll). ``canvas``: one pass with
        the image shrunk this many times inside the input (close-ups); None = a normal
        pass, then the retry with ``retry_canvas`` when it finds nothing.
        """
        image = np.asarray(image_rgb)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"want a uint8 HxWx3 RGB image, got {image.dtype} {image.shape}")
        detections = self.detect_once(image, canvas or 1.0, quarter_turns, min_score)
        retry = self.retry_canvas is not None and self.retry_canvas > 1
        if not detections and canvas is None and retry:
            detections = self.detect_once(image, self.retry_canvas, quarter_turns, min_score)
        return merge_detections(detections) if len(quarter_turns) > 1 else detections

    def detect_once(
        self,
        image: np.ndarray,
        canvas: float = 1.0,
        quarter_turns: tuple[int, ...] = (0,),
        min_score: float | None = None,
    ) -> list[Detection]:
        """One pass of the model over the letterboxed image per quarter turn (no retry,
        no merging). The image is letterboxed once; the square model input is turned."""
        boxed, mapping = letterbox(image, self.input_size, canvas)
        if quarter_turns != (0,) and self.input_size[0] != self.input_size[1]:
            raise ModelError(f"{self.model.path}: quarter turns need a square input")
        detections = []
        for k in quarter_turns:
            turned = np.ascontiguousarray(np.rot90(boxed, k)) if k % 4 else boxed
            outputs = self.model.run(self.model.spec.to_tensor(turned))
            threshold = self.min_score if min_score is None else min_score
            for box, score, keypoints in detect_in_outputs(
                outputs, self.anchors, self.facts, threshold
            ):
                corners = unturn_units(box.reshape(2, 2), k)
                corners = np.stack([corners.min(0), corners.max(0)])
                detections.append(
                    Detection(
                        bbox=model_to_image(corners, mapping).reshape(4).astype(np.float32),
                        score=score,
                        keypoints=model_to_image(unturn_units(keypoints, k), mapping).astype(
                            np.float32
                        ),
                        quarter_turns=k % 4,
                    )
                )
        return sorted(detections, key=lambda d: -d.score)
