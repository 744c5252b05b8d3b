"""The 3D mode: a 3D-convention landmark model beside the 2D one, the shape-fit depth,
the lifted training labels, and the network that serves both conventions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training.paths import REPO, SAMPLES_DIR, SHAPE_PRIOR_PATH

SAMPLE = SAMPLES_DIR / "astronaut.png"


def _prior():
    from util.shape_prior import ShapePrior

    return ShapePrior.load(SHAPE_PRIOR_PATH)


def _turned_shape(yaw_deg: float, scale: float = 2.0) -> np.ndarray:
    """The prior's mean shape turned by ``yaw_deg`` (nose toward the image's right for
    positive yaw), in pixels: (68, 3), z zero-mean, larger = closer."""
    prior = _prior()
    c, s = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
    rotation = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    shape = prior.mean @ rotation.T * scale + [200.0, 200.0, 0.0]
    shape[:, 2] -= shape[:, 2].mean()
    return shape


def _aligner_with_3d_spec(path: Path, tiny_models, **keys: object):  # noqa: ANN001, ANN202
    """A 3D-mode aligner whose 3D model is the tiny one with ``keys`` added to its spec
    (written to ``path``)."""
    import dataclasses

    from training.export import write_spec
    from util.aligner import FaceAligner
    from util.runtime import read_spec

    spec = read_spec(tiny_models.fan3d)
    write_spec(tiny_models.fan3d, dataclasses.replace(spec, extra=dict(spec.extra) | keys), path)
    return FaceAligner(
        model_2d=tiny_models.fan2d, model_3d=path, active_3d=True, any_roll=False
    )


def test_shape_fit_depth_recovers_a_turned_shape() -> None:
    """z of the fit to a shape's own projection: right sign and size (the far jaw is
    behind the near one)."""
    from util.depth import ShapeFitDepth

    shape = _turned_shape(40.0)
    z = ShapeFitDepth(_prior()).depth(shape[:, :2])
    size = np.sqrt(np.prod(np.ptp(shape[:, :2], axis=0)))
    assert np.abs(z - shape[:, 2]).mean() < 0.02 * size
    assert z[0:4].mean() > z[13:17].mean()  # turned right: the image-left jaw is nearer


def test_lifted_labels_keep_frontal_points_and_move_a_turned_jaw() -> None:
    """Frontal: the 3D convention is the 2D labels. Turned: the far jaw (drawn on the
    outline in 300-W) moves inside it, toward where the 3D points project."""
    from training.labels_3d import lift_to_3d

    prior = _prior()
    frontal = _turned_shape(0.0)[:, :2]
    lifted = lift_to_3d(prior, frontal[None])[0]
    np.testing.assert_allclose(lifted[:, :2], frontal, atol=1e-9)

    shape = _turned_shape(45.0)
    outline = shape[:, :2].copy()
    outline[9:17, 0] += 15.0  # far jaw pushed out to a (made up) visible outline
    lifted = lift_to_3d(prior, outline[None])[0]
    np.testing.assert_allclose(lifted[17:, :2], outline[17:], atol=1e-9)
    moved_back = outline[9:17, 0] - lifted[9:17, 0]
    assert moved_back.mean() > 8.0  # most of the 15 px taken back
    assert np.abs(lifted[9:17, 0] - shape[9:17, 0]).mean() < 6.0


def test_widened_network_computes_the_2d_one_and_exports_both_parts(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from training.model import FAN, LastStack, widen_to_3d

    torch.manual_seed(0)
    small = FAN(stacks=2, channels=16, depth=2, block="post", presence=True).eval()
    both = FAN(stacks=2, channels=16, depth=2, block="post", presence=True, landmarks_3d=68)
    widen_to_3d(small.state_dict(), both)
    both.eval()
    x = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        heat, presence = LastStack(small)(x)
        heat_2d, presence_2d = LastStack(both)(x)
        heat_3d = LastStack(both, "3d")(x)
    torch.testing.assert_close(heat_2d, heat)
    torch.testing.assert_close(presence_2d, presence)
    # the 3D heads start as copies of the 2D ones
    torch.testing.assert_close(heat_3d, heat)
    assert heat_3d.shape == (2, 68, 64, 64)


def test_turned_face_carries_3d_points() -> None:
    """The carried points turn with the face: a point at the face's depth moves as the
    2D labels of the inner face do."""
    from training.synthesis import face_depths, turn_face

    prior = _prior()
    points = _turned_shape(0.0)[:, :2]
    z = face_depths(prior, points[None])[0]
    image = np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8)
    carry = np.column_stack([points, z])
    _, labels, carried = turn_face(image, points, z, 30.0, carry)
    assert carried.shape == (68, 3)
    np.testing.assert_allclose(carried[17:, :2], labels[17:], atol=1e-6)
    assert carried[30, 0] > points[30, 0] + 5  # the nose moved right


def test_turns_to_a_total_yaw_continue_the_way_a_face_looks() -> None:
    """``random_total_turn`` brings a face to a total yaw in [least, most] the way it
    already looks, never turning it back; the carried 3D points, fitted again, show
    that total (the sign convention of ``fit_yaw`` and ``turn_face`` agree)."""
    from training.synthesis import face_depths, random_total_turn, turn_face, turn_to
    from util.shape_prior import fit_to_2d, fit_yaw

    assert turn_to(20.0, 60.0, 1.0) == 40.0
    assert turn_to(-20.0, 60.0, -1.0) == -40.0
    assert turn_to(-70.0, 60.0, -1.0) == 0.0  # already past the total: kept
    rng = np.random.default_rng(0)
    for yaw_now in (-25.0, 25.0):
        turns = np.array([random_total_turn(yaw_now, rng, 30.0, 85.0) for _ in range(200)])
        totals = yaw_now + turns
        assert np.all(np.sign(totals) == np.sign(yaw_now))
        assert np.abs(totals).min() >= 30.0 - 1e-9 and np.abs(totals).max() <= 85.0
        assert np.abs(totals).max() > 80.0  # profiles are drawn, not only half turns
    sides = {np.sign(random_total_turn(0.0, rng)) for _ in range(20)}
    assert sides == {-1.0, 1.0}  # a frontal face turns either way

    prior = _prior()
    shape = _turned_shape(20.0)
    points = shape[:, :2]
    yaw_now = float(fit_yaw(fit_to_2d(prior, points).rotation))
    assert abs(yaw_now - 20.0) < 3.0
    z = face_depths(prior, points[None])[0]
    image = np.random.default_rng(1).integers(0, 255, (400, 400, 3), dtype=np.uint8)
    _, _, carried = turn_face(image, points, z, turn_to(yaw_now, 70.0, 1.0), shape)
    assert abs(float(fit_yaw(fit_to_2d(prior, carried[:, :2]).rotation)) - 70.0) < 4.0


def test_shape_fit_regulariser_comes_from_the_3d_model_and_damps_noise(tmp_path: Path, tiny_models) -> None:  # noqa: ANN001, E501
    """The tool fits with the 3D model's own ``shape_fit_regulariser`` (1 without
    one); a stronger one keeps noisy points' z nearer the true z (as measured by
    training/evaluate_3d.py on the 3D model's points)."""
    from util.aligner import FaceAligner
    from util.depth import ShapeFitDepth
    from util.runtime import read_spec

    assert "shape_fit_regulariser" not in read_spec(tiny_models.fan3d).extra
    aligner = FaceAligner(
        model_2d=tiny_models.fan2d, model_3d=tiny_models.fan3d, active_3d=True, any_roll=False
    )
    assert aligner.stage_3d.depth_model.regulariser == 1.0
    marked = tmp_path / "fan3d.onnx"
    aligner = _aligner_with_3d_spec(marked, tiny_models, shape_fit_regulariser=10.0)
    assert aligner.stage_3d.depth_model.regulariser == 10.0
    assert "regulariser 10" in aligner.sources()["depth"]

    shape = _turned_shape(40.0, scale=3.0)
    size = np.sqrt(np.prod(np.ptp(shape[:, :2], axis=0)))
    noise = np.random.default_rng(0).normal(size=(20, 68, 2)) * 0.04 * size
    errors = {
        r: np.mean([np.abs(ShapeFitDepth(_prior(), r).depth(shape[:, :2] + n) - shape[:, 2]).mean()
                    for n in noise])  # fmt: skip
        for r in (1.0, 10.0)
    }
    assert errors[10.0] < errors[1.0]


def test_a_turned_face_is_fitted_again_with_the_specs_turned_regulariser(tmp_path: Path, tiny_models) -> None:  # noqa: ANN001, E501
    """``shape_fit_turned``: a face the fit finds turned by at least from_yaw degrees is
    fitted again with that regulariser; a frontal one keeps the first fit."""
    from util.depth import ShapeFitDepth
    from util.runtime import ModelError
    from util.shape_prior import fit_to_2d

    aligner = _aligner_with_3d_spec(
        tmp_path / "fan3d.onnx",
        tiny_models,
        shape_fit_regulariser=10.0,
        shape_fit_turned={"from_yaw": 30.0, "regulariser": 100.0},
    )
    assert aligner.stage_3d.depth_model.turned == (30.0, 100.0)
    assert "regulariser 10, 100 from 30 deg of yaw" in aligner.sources()["depth"]
    with pytest.raises(ModelError, match="broken.onnx: .*shape_fit_turned"):
        _aligner_with_3d_spec(
            tmp_path / "broken.onnx", tiny_models, shape_fit_turned={"from_yaw": 30.0}
        )

    prior, fit = _prior(), ShapeFitDepth(_prior(), 10.0, (30.0, 100.0))
    noise = np.random.default_rng(1).normal(size=(68, 2)) * 2.0
    for yaw, regulariser in ((10.0, 10.0), (50.0, 100.0)):
        points = _turned_shape(yaw, scale=3.0)[:, :2] + noise
        expected = fit_to_2d(prior, points, regulariser=regulariser).points[:, 2]
        np.testing.assert_allclose(fit.depth(points), expected)


def test_far_half_of_a_profile_comes_from_the_near_halfs_fit(tmp_path: Path, tiny_models) -> None:  # noqa: ANN001, E501
    """The 3D model's fault on profiles, made by hand: the hidden half drawn as on a
    less turned face (far jaw pushed out). From the spec's ``shape_fit_far_side`` yaw
    on, the far half's x, y and all z come from the fit to the near half and midline,
    which puts them back; the near half is kept as measured, and a face turned less is
    left as the model gave it."""
    from util.depth import ShapeFitDepth
    from util.runtime import ModelError
    from util.shape_prior import fit_to_2d, near_side

    prior = _prior()
    shape = _turned_shape(70.0, scale=3.0)
    size = np.sqrt(np.prod(np.ptp(shape[:, :2], axis=0)))
    near = near_side(prior, fit_to_2d(prior, shape[:, :2]).rotation)
    far = np.setdiff1d(np.arange(68), near)
    # turned right: the image-left jaw is the near one, the nose on the midline is seen
    assert {0, 1, 2, 8, 27, 30, 33, 36, 48}.issubset(near) and {14, 15, 16, 45}.issubset(far)
    drawn = shape[:, :2].copy()
    drawn[far, 0] += 0.25 * size * np.linspace(0.3, 1.0, len(far))  # pushed out, as the model
    plain = ShapeFitDepth(prior, 10.0, (30.0, 100.0))
    fixed = ShapeFitDepth(prior, 10.0, (30.0, 100.0), far_side=(40.0, 30.0))

    def xy_error(points: np.ndarray) -> float:
        return float(np.linalg.norm(points[:, :2] - shape[:, :2], axis=1).mean() / size)

    def z_error(points: np.ndarray) -> float:
        return float(np.abs(points[:, 2] - shape[:, 2]).mean() / size)

    before = np.column_stack([drawn, plain.depth(drawn)])
    after = fixed.points_3d(drawn)
    np.testing.assert_array_equal(after[near, :2], drawn[near])
    assert xy_error(after) < 0.3 * xy_error(before) and xy_error(after) < 0.02
    assert z_error(after) < 0.5 * z_error(before)
    frontal = _turned_shape(15.0, scale=3.0)[:, :2]
    np.testing.assert_array_equal(fixed.points_3d(frontal), plain.points_3d(frontal))

    far_side = {"from_yaw": 40.0, "regulariser": 30.0}
    aligner = _aligner_with_3d_spec(
        tmp_path / "fan3d.onnx", tiny_models, shape_fit_far_side=far_side
    )
    assert aligner.stage_3d.depth_model.far_side == (40.0, 30.0)
    assert "far half from the near half's fit" in aligner.sources()["depth"]
    with pytest.raises(ModelError, match="broken.onnx: .*shape_fit_far_side"):
        _aligner_with_3d_spec(
            tmp_path / "broken.onnx", tiny_models, shape_fit_far_side={"from_yaw": "forty"}
        )


def test_3d_mode_splits_landmarks_and_landmarks_3d(tiny_models) -> None:  # noqa: ANN001
    """landmarks are the 2D model's, unchanged by -3; landmarks_3d x, y are the 3D
    model's own points on the same crop, z from the shape fit."""
    from util.aligner import FaceAligner
    from util.depth import ShapeFitDepth
    from util.io import read_image

    image = read_image(SAMPLE)
    box = [np.array([180.0, 70.0, 330.0, 250.0])]
    plain = FaceAligner(model_2d=tiny_models.fan2d, any_roll=False, recrop_iou=0.0).align(
        image, bboxes=box
    )
    # recrop_iou 0: the 3D model crops from the given box (a random 2D model's points
    # would move it)
    aligner = FaceAligner(
        model_2d=tiny_models.fan2d,
        model_3d=tiny_models.fan3d,
        active_3d=True,
        any_roll=False,
        recrop_iou=0.0,
    )
    assert isinstance(aligner.stage_3d.depth_model, ShapeFitDepth)
    faces = aligner.align(image, bboxes=box)
    assert len(faces) == len(plain) == 1
    face = faces[0]
    np.testing.assert_allclose(face.landmarks, plain[0].landmarks)
    model = aligner.stage_3d.landmark_model_3d
    crop = model.crop(image, face.bbox, face.roll)
    expected, _ = model.landmarks(model.run_crops([crop], flip=True)[0][0], crop)
    np.testing.assert_allclose(face.landmarks_3d[:, :2], expected, atol=1e-6)
    assert not np.allclose(face.landmarks_3d[:, :2], face.landmarks)  # another network
    assert abs(face.landmarks_3d[:, 2].mean()) < 1e-6
    record = face.to_json()
    assert len(record["landmarks"][0]) == 2 and len(record["landmarks_3d"][0]) == 3


def test_depth_network_still_loads_for_3d(tiny_models) -> None:  # noqa: ANN001
    from util.aligner import FaceAligner
    from util.depth import DepthModel

    aligner = FaceAligner(
        model_2d=tiny_models.fan2d,
        model_3d=tiny_models.fan3d,
        model_depth=tiny_models.depth,
        active_3d=True,
        any_roll=False,
    )
    assert isinstance(aligner.stage_3d.depth_model, DepthModel)
    faces = aligner.align(SAMPLE, bboxes=[np.array([180.0, 70.0, 330.0, 250.0])])
    assert faces[0].landmarks_3d.shape == (68, 3)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "face_alignment.py"), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )


def test_cli_wrong_kind_for_model_3d_is_one_line(tiny_models) -> None:  # noqa: ANN001
    result = _cli("-i", str(SAMPLE), "-3", "--model-3d", str(tiny_models.depth), "--json", "-")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "depth" in result.stderr and "3D-convention landmark model" in result.stderr


def test_cli_model_3d_without_3d_is_said(tiny_models) -> None:  # noqa: ANN001
    result = _cli(
        "-i", str(SAMPLE), "--model-2d", str(tiny_models.fan2d),
        "--model-3d", str(tiny_models.fan3d), "--json", "-",
    )  # fmt: skip
    assert result.returncode == 0
    assert "--model-3d is ignored" in result.stderr


@pytest.mark.skipif(
    not (REPO / "models" / "fan3d_compact.onnx").is_file(), reason="no shipped 3D model"
)
def test_shipped_3d_model_contract() -> None:
    from util.landmark_stage import LandmarkModel
    from util.runtime import load_model

    model = LandmarkModel(load_model(REPO / "models" / "fan3d_compact.onnx", expected_kind="fan3d"))
    assert model.model.spec.kind == "fan3d"
    assert not model.has_presence
    offsets = model.codec.landmark_offsets
    assert offsets is not None and offsets.shape == (68, 2)
    result = _cli("-i", str(SAMPLE), "-3", "--json", "-")
    assert result.returncode == 0, result.stderr
    face = json.loads(result.stdout.splitlines()[0])["faces"][0]
    xy_2d = np.array(face["landmarks"])
    xyz = np.array(face["landmarks_3d"])
    # a frontal face: the conventions nearly agree, but the x, y are the 3D model's
    size = np.sqrt(np.prod(np.ptp(xy_2d, axis=0)))
    assert np.linalg.norm(xyz[:, :2] - xy_2d, axis=1).mean() < 0.05 * size
    assert not np.allclose(xyz[:, :2], xy_2d, atol=0.01)


def test_recrop_from_the_landmarks_box_rescues_a_shifted_box() -> None:
    """A detector box far off the face (as on close-ups) is replaced by the box the
    landmarks imply: the points land near the ones from a good box, unlike without."""
    from util.aligner import FaceAligner
    from util.io import read_image

    image = read_image(SAMPLE)
    good = FaceAligner(threads=1).align(image)[0]
    box = good.bbox.copy()
    shift = 0.35 * (box[2] - box[0])
    box[[0, 2]] += shift  # a third of the face off to the side
    box[[1, 3]] += shift
    reference = good.landmarks
    size = np.sqrt(np.prod(np.ptp(reference, axis=0)))

    def error(recrop_iou: float) -> float:
        aligner = FaceAligner(threads=1, recrop_iou=recrop_iou, any_roll=False)
        face = aligner.align(image, bboxes=[box])[0]
        return float(np.linalg.norm(face.landmarks - reference, axis=1).mean() / size)

    with_recrop, without = error(0.85), error(0.0)
    assert with_recrop < 0.02
    assert with_recrop < 0.5 * without
    # The unmirrored read decides the re-crop; the mirror view is read of the new crop
    # only: 3 crop views in all, not 4.
    aligner = FaceAligner(threads=1, any_roll=False)
    model, views = aligner.landmark_model, []
    run = model._run
    model._run = lambda images: views.append(len(images)) or run(images)
    aligner.align(image, bboxes=[box])
    assert views == [1, 2]
