"""The FAN drop-in (util/fan_api.py, util/utils.py) as FAN 1.5.0 behaves: the three FAN
tests that compare with its own weights' coordinates, checked for structure with a
loose tolerance, and the contract items of issue 30."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from training.paths import REPO, SAMPLES_DIR

ASSETS = REPO.parent / "shared" / "fan_tests" / "test" / "assets"
needs_assets = pytest.mark.skipif(not ASSETS.is_dir(), reason="needs ../shared/fan_tests")

# FAN 1.5.0's 3D reference for aflw-test.jpg (its test suite), rows 0, 8, 16, 30, 36, 45,
# 48, 54: the jaw ends and chin, nose tip, eye and mouth corners.
REFERENCE_ROWS = (0, 8, 16, 30, 36, 45, 48, 54)
REFERENCE_XY = np.array(
    [[140, 240], [212, 357], [335, 252], [215, 261], [170, 228], [278, 231], [185, 306],
     [248, 309]], np.float32,
)  # fmt: skip


def _fan(landmarks_type: str = "THREE_D", **kwargs):  # noqa: ANN202
    from util.fan_api import FaceAlignment, LandmarksType

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return FaceAlignment(getattr(LandmarksType, landmarks_type), device="cpu", **kwargs)


def _close_to_reference(points: np.ndarray) -> None:
    assert points.shape == (68, 3) and points.dtype == np.float32
    box = np.sqrt(np.prod(REFERENCE_XY.max(0) - REFERENCE_XY.min(0)))
    error = np.linalg.norm(points[list(REFERENCE_ROWS), :2] - REFERENCE_XY, axis=1).mean()
    assert error < 0.06 * box, error  # other weights: a few pixels, not FAN's 0.07


@needs_assets
def test_predict_points_structure() -> None:
    preds = _fan().get_landmarks(str(ASSETS / "aflw-test.jpg"))
    assert len(preds) == 1
    _close_to_reference(preds[0])


@needs_assets
def test_predict_batch_points_structure() -> None:
    torch = pytest.importorskip("torch")
    from util.utils import get_image

    image = get_image(str(ASSETS / "aflw-test.jpg"))
    batch = torch.Tensor(np.stack([image, image, np.zeros_like(image)]).transpose(0, 3, 1, 2))
    preds = _fan().get_landmarks_from_batch(batch)
    assert len(preds) == 3
    for pred in preds[:2]:
        _close_to_reference(pred)
    assert len(preds[2]) == 0


@needs_assets
def test_predict_points_from_dir_structure() -> None:
    preds = _fan().get_landmarks_from_directory(str(ASSETS), extensions=[".jpg", ".png"],
                                                show_progress_bar=False)  # fmt: skip
    assert preds[str(ASSETS / "grass.jpg")] is None
    (points,) = preds[str(ASSETS / "aflw-test.jpg")]
    _close_to_reference(points)


def test_face_detector_object() -> None:
    from util.io import read_image

    fa = _fan("TWO_D", face_detector="retinaface")
    assert fa.face_detector.reference_scale == 165
    assert _fan("TWO_D", face_detector="sfd").face_detector.reference_scale == 195
    image = read_image(SAMPLES_DIR / "astronaut.png")
    for source in (image, str(SAMPLES_DIR / "astronaut.png")):
        boxes = fa.face_detector.detect_from_image(source)
        assert len(boxes) == 1 and len(boxes[0]) == 5
        x1, y1, x2, y2, score = boxes[0]
        assert x1 < x2 and y1 < y2 and 0 < score <= 1


def test_other_detector_names_warn() -> None:
    from util.fan_api import FaceAlignment, LandmarksType

    with pytest.warns(UserWarning, match="runs BlazeFace"):
        FaceAlignment(LandmarksType.TWO_D, face_detector="yunet")
    with pytest.warns(UserWarning, match="compile"):
        FaceAlignment(LandmarksType.TWO_D, face_detector="blazeface", compile=True)


def test_defaults_and_version() -> None:
    import util

    fa = _fan("TWO_D", max_batch_size=4)
    assert fa.flip_input is True and fa.max_batch_size == 4
    assert util.__version__ == "1.5.0"
    with pytest.raises(ValueError):
        _fan("TWO_D", max_batch_size=0)


def test_float_and_tensor_images() -> None:
    from util.io import read_image

    fa = _fan("TWO_D")
    image = read_image(SAMPLES_DIR / "astronaut.png")
    reference = fa.get_landmarks(image)
    as_float = fa.get_landmarks(image.astype(np.float32))
    assert reference[0].dtype == np.float32
    np.testing.assert_allclose(as_float[0], reference[0])
    torch = pytest.importorskip("torch")
    tensor = torch.tensor(image.astype(np.float32), requires_grad=True)
    np.testing.assert_allclose(fa.get_landmarks(tensor)[0], reference[0])


def test_given_boxes_give_one_result_each_in_order() -> None:
    """FAN reads every given box, whatever is in it, and returns the boxes as given."""
    from util.io import read_image

    fa = _fan("TWO_D")
    image = read_image(SAMPLES_DIR / "astronaut.png")
    (face_box,) = fa.face_detector.detect_from_image(image)
    wall = np.array([5.0, 5.0, 60.0, 60.0])  # no face there: the presence check would drop it
    given = [wall, face_box]
    landmarks, _, boxes = fa.get_landmarks(image, detected_faces=given, return_bboxes=True)
    assert len(landmarks) == 2
    assert boxes[0] is given[0] and boxes[1] is given[1]
    centre = (face_box[:2] + face_box[2:4]) / 2
    assert np.linalg.norm(landmarks[1].mean(0) - centre) < 0.3 * (face_box[2] - face_box[0])


def test_utils_module_names() -> None:
    from util import utils

    for name in ("get_image", "get_preds_fromhm", "crop", "transform", "flip",
                 "draw_gaussian", "create_bounding_box", "create_target_heatmap"):  # fmt: skip
        assert callable(getattr(utils, name))
    assert (utils.NUM_LANDMARKS, utils.REFERENCE_SCALE, utils.CENTER_Y_OFFSET) == (68, 195, 0.12)


def test_utils_crop_and_decode_round_trip() -> None:
    """A Gaussian drawn at a point of a crop decodes back to the point in the image."""
    from util import utils

    center, scale = np.array([120.0, 140.0]), 0.9
    point = np.array([131.0, 152.0])
    in_map = utils.transform(point + 1, center, scale, 64)
    maps = np.zeros((1, 68, 64, 64), np.float32)
    utils.draw_gaussian(maps[0, 0], np.asarray(in_map) + 1, 2)
    _, original, peaks = utils.get_preds_fromhm(maps, center, scale)
    assert np.linalg.norm(original[0, 0] - point) < 200 * scale / 64 * 1.5
    assert peaks.shape == (1, 68) and peaks[0, 0] == pytest.approx(1.0)
    image = np.full((300, 300, 3), 7, np.uint8)
    assert utils.crop(image, center, scale).shape == (256, 256, 3)
