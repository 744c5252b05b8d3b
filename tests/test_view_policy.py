"""--flip auto, the default for images: which views each face is read in, and how they
are averaged (util.aligner.FaceAligner.read_faces). The shipped models on the sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.paths import MODELS_DIR, SAMPLES_DIR
from util import crop_policy
from util.aligner import FaceAligner
from util.io import read_image
from util.landmark_stage import FaceCrop, LandmarkModel

SAMPLE = SAMPLES_DIR / "astronaut.png"


def _mirror_reading(model: LandmarkModel, crop: FaceCrop) -> tuple[np.ndarray, np.ndarray]:
    ((views, _),) = model.mirror_views([crop])
    return model.landmarks(views, crop)


def test_flip_modes_of_the_api_and_the_cli() -> None:
    from util.cli import build_parser
    from util.run_options import aligner_options

    auto, on = FaceAligner(threads=1), FaceAligner(flip=True, threads=1)
    video = FaceAligner(running_mode="video", threads=1)
    assert (auto.flip_mode, on.flip_mode, video.flip_mode) == ("auto", "on", "off")
    # The shipped 2D file names its mirror model, loaded only where it is used.
    assert auto.mirror_model.model.path.name == "fan2d_fast.int8.onnx"
    assert on.mirror_model is None and video.mirror_model is None
    assert auto.sources()["mirror views"].endswith("fan2d_fast.int8.onnx")  # the info line
    assert "mirror views" not in on.sources()
    parser = build_parser()
    for value, flip in (("auto", None), ("on", True), ("off", False)):
        assert aligner_options(parser.parse_args(["-i", "a.jpg", "--flip", value]))["flip"] is flip


def test_a_face_not_cropped_again_averages_its_probe_with_the_mirror_models_view() -> None:
    image = read_image(SAMPLE)
    # recrop_iou 0: no face is cropped again for its box (the upright sample's roll
    # agrees with the detector's), so the crop is the first one.
    auto = FaceAligner(threads=1, recrop_iou=0.0)
    off = FaceAligner(flip=False, threads=1, recrop_iou=0.0)
    (face,), (probe,) = auto.align(image), off.align(image)
    np.testing.assert_array_equal(face.landmark_crop[0], probe.landmark_crop[0])
    crop = FaceCrop.of_face(image, face)
    points, scores = _mirror_reading(auto.mirror_model, crop)
    ((_, mirror_presence),) = auto.mirror_model.mirror_views([crop])
    np.testing.assert_allclose(face.landmarks, (probe.landmarks + points) / 2, atol=1e-9)
    np.testing.assert_allclose(face.landmark_scores, (probe.landmark_scores + scores) / 2,
                               atol=1e-6)  # fmt: skip
    # Judged on both views, as flip's presence is.
    assert face.presence == pytest.approx((probe.presence + mirror_presence) / 2)
    # Not the 2D model's own mirror view: that is --flip on.
    (both,) = FaceAligner(flip=True, threads=1, recrop_iou=0.0).align(image)
    assert np.abs(both.landmarks - face.landmarks).max() > 0.01


def test_a_face_turned_again_averages_its_probe_with_the_new_crops_mirror_view(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    image = read_image(SAMPLE)
    off = FaceAligner(flip=False, threads=1, recrop_iou=0.0)
    (probe,) = off.align(image)  # the first crop's reading
    rolls = {}

    def turn_again(points, candidate, crop, box_stats, recrop_iou):  # noqa: ANN001, ANN202, ARG001
        rolls["new"] = crop.roll + 12.0
        return candidate.bbox, rolls["new"]  # the same box, a new roll

    monkeypatch.setattr(crop_policy, "recrop_place", turn_again)
    auto = FaceAligner(threads=1)
    (face,) = auto.align(image)
    model = auto.landmark_model
    new_crop = model.crop(image, np.asarray(probe.bbox), rolls["new"])
    np.testing.assert_allclose(face.landmark_crop[0], new_crop.matrix)
    points, _ = _mirror_reading(model, new_crop)  # the 2D model's own, not the mirror model's
    np.testing.assert_allclose(face.landmarks, (probe.landmarks + points) / 2, atol=1e-9)


def test_the_probe_stands_in_only_near_its_first_box() -> None:
    box = np.array([100.0, 100.0, 200.0, 200.0])
    assert crop_policy.probe_can_stand_in(box, box)
    assert crop_policy.probe_can_stand_in(box, box + [10.0, 0.0, 10.0, 0.0])  # IoU 0.82
    assert not crop_policy.probe_can_stand_in(box, box + [30.0, 0.0, 30.0, 0.0])  # IoU 0.54


def test_a_face_moved_to_a_new_box_is_read_both_ways_as_with_flip_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    image = read_image(SAMPLE)

    def move(points, candidate, crop, box_stats, recrop_iou):  # noqa: ANN001, ANN202, ARG001
        box = np.asarray(candidate.bbox, np.float64)
        moved = box + 0.3 * (box[2] - box[0]) * np.array([1.0, 0.0, 1.0, 0.0])
        assert not crop_policy.probe_can_stand_in(box, moved)  # IoU 0.54
        return moved, crop.roll

    monkeypatch.setattr(crop_policy, "recrop_place", move)
    (auto,) = FaceAligner(threads=1).align(image)
    (on,) = FaceAligner(flip=True, threads=1).align(image)
    np.testing.assert_array_equal(auto.landmarks, on.landmarks)


def test_a_missing_mirror_model_warns_and_the_model_reads_its_own(tmp_path: Path) -> None:
    import shutil

    for name in ("fan2d_compact.int8.onnx", "fan2d_compact.onnx"):  # with its referee
        shutil.copy(MODELS_DIR / name, tmp_path / name)
    with pytest.warns(UserWarning, match="fan2d_fast.int8.onnx is missing"):
        aligner = FaceAligner(model_2d=tmp_path / "fan2d_compact.int8.onnx", threads=1)
    assert aligner.mirror_model is None and aligner.flip_mode == "auto"
    assert len(aligner.align(SAMPLE)) == 1


def test_a_half_turned_twin_read_surely_wins_on_its_heatmaps() -> None:
    from util.heatmap_codec import gaussian_maps

    model = FaceAligner(threads=1).landmark_model
    points = np.tile([[30.0, 32.0]], (68, 1))

    def views(peak: float) -> np.ndarray:
        maps = peak * gaussian_maps(points, 64, 1.5)[None]
        assert model.codec.peaks(maps)[1].mean() == pytest.approx(peak, rel=0.02)
        return maps

    assert crop_policy.sure_twin(model, views(0.57), views(0.34))  # the sweep's face
    assert not crop_policy.sure_twin(model, views(0.50), views(0.25))  # not sure enough
    assert not crop_policy.sure_twin(model, views(0.60), views(0.45))  # not far enough ahead
