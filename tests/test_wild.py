"""In-the-wild pieces: upright crops at any roll, detection in quarter turns, the
presence output and its fallback, and the training-side synthesis of turned faces."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from training.paths import REPO, SAMPLES_DIR, SHAPE_PRIOR_PATH
from util.crop import transform_points
from util.detect import Detection, merge_detections, unturn_units
from util.landmark_stage import ORIGINAL_FAN_SPEC, LandmarkModel
from util.runtime import load_model, spec_facts


def _face_points() -> np.ndarray:
    """A plausible 68-point face (the shape prior's mean) around (200, 150)."""
    from util.shape_prior import ShapePrior

    mean = ShapePrior.load(SHAPE_PRIOR_PATH).mean[:, :2]
    return mean * 1.2 + [200.0, 150.0]


class _NoModel:
    spec = ORIGINAL_FAN_SPEC
    facts = spec_facts(ORIGINAL_FAN_SPEC, "no model")
    path = "no model"


@pytest.mark.parametrize("roll", [0.0, 30.0, 90.0, -135.0, 180.0])
def test_rotated_crop_round_trip_and_upright(roll: float) -> None:
    """Points go into the turned crop and back unchanged, and a face turned by ``roll``
    comes out of its crop in the same place as the upright face out of an upright crop."""
    model = LandmarkModel(_NoModel())
    image = np.zeros((400, 400, 3), np.uint8)
    points = _face_points()
    upright = model.crop(image, np.array([150.0, 90.0, 250.0, 190.0]), 0.0)
    rad = np.deg2rad(roll)
    rotation = np.array([[np.cos(rad), -np.sin(rad)], [np.sin(rad), np.cos(rad)]])
    centre = np.array([200.0, 140.0])
    turned_points = (points - centre) @ rotation.T + centre
    turned = model.crop(image, np.array([150.0, 90.0, 250.0, 190.0]), roll)
    in_crop = transform_points(turned_points, turned.matrix)
    np.testing.assert_allclose(transform_points(in_crop, turned.inverse), turned_points, atol=1e-6)
    np.testing.assert_allclose(in_crop, transform_points(points, upright.matrix), atol=1e-6)
    assert turned.roll == roll


@pytest.mark.parametrize("k", [1, 2, 3])
def test_quarter_turn_points_map_back(k: int) -> None:
    """A pixel found in the turned square input maps back to where it is unturned."""
    size = 8
    image = np.zeros((size, size))
    image[1, 4] = 1
    y, x = np.argwhere(np.rot90(image, k))[0]
    found = (np.array([[x, y]]) + 0.5) / size  # its centre, in 0-1 input units
    np.testing.assert_allclose(unturn_units(found, k) * size - 0.5, [[4, 1]], atol=1e-9)


def test_detector_finds_a_face_at_any_quarter_turn() -> None:
    """The bundled sample turned by 90, 180 and 270 degrees: one face, in the same
    place as upright once mapped back, with its roll."""
    from util.detect import ALL_QUARTER_TURNS, FaceDetector
    from util.io import read_image

    detector = FaceDetector()
    image = read_image(SAMPLES_DIR / "astronaut.png")
    upright = detector.detect(image, ALL_QUARTER_TURNS)
    assert len(upright) == 1
    for k in (1, 2, 3):
        turned = np.ascontiguousarray(np.rot90(image, k))
        found = detector.detect(turned, ALL_QUARTER_TURNS)
        assert len(found) == 1
        centre = (found[0].bbox[:2] + found[0].bbox[2:]) / 2
        upright_centre = (upright[0].bbox[:2] + upright[0].bbox[2:]) / 2
        expected = unturn_units((upright_centre[None] + 0.5) / 512, -k)[0] * 512 - 0.5
        np.testing.assert_allclose(centre, expected, atol=12)
        assert abs((found[0].roll - upright[0].roll + 90 * k + 180) % 360 - 180) < 15


def test_detection_roll_and_merge() -> None:
    eyes = np.array([[10.0, 10.0], [10.0, 20.0], [0, 0], [0, 0], [0, 0], [0, 0]])
    lying = Detection(np.array([0.0, 0, 30, 30]), 0.9, eyes)
    assert lying.roll == pytest.approx(90.0)
    # The same face found again in the input turned a quarter, where it stood upright:
    # that pass's box and keypoints, with the best score of the two.
    upright_pass = Detection(np.array([2.0, 1, 31, 30]), 0.6, eyes, quarter_turns=1)
    other = Detection(np.array([100.0, 100, 130, 130]), 0.7, eyes)
    merged = merge_detections([upright_pass, other, lying])
    assert [d.score for d in merged] == [0.9, 0.7]
    np.testing.assert_array_equal(merged[0].bbox, upright_pass.bbox)
    assert merged[0].quarter_turns == 1
    # Found upright (best score) and upside down with keypoints 180 degrees off: the
    # upside-down pass is outvoted, though it looks upright in its own turn.
    upright_eyes = np.array([[10.0, 10.0], [20.0, 10.0], [0, 0], [0, 0], [0, 0], [0, 0]])
    good = Detection(np.array([0.0, 0, 30, 30]), 0.93, upright_eyes + [0, 2], quarter_turns=0)
    side = Detection(np.array([1.0, 0, 30, 30]), 0.83, upright_eyes, quarter_turns=3)
    flipped = Detection(np.array([0.0, 1, 30, 31]), 0.63, upright_eyes[[1, 0, 2, 3, 4, 5]], 2)
    assert abs(flipped.roll) == 180.0
    (merged,) = merge_detections([flipped, side, good])
    assert merged.quarter_turns == 0 and merged.score == 0.93


def test_presence_output_contract(tiny_models) -> None:  # noqa: ANN001
    """Our 2D models: heatmaps (N, 68, 64, 64) and presence (N, 1) in 0-1, named in the
    spec; both flip views and several faces go in one batch."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(tiny_models.fan2d_presence))
    assert [o.name for o in session.get_outputs()] == ["heatmaps", "presence"]
    heat, presence = session.run(
        None, {"input": np.random.default_rng(0).random((3, 3, 256, 256), np.float32)}
    )
    assert heat.shape == (3, 68, 64, 64) and presence.shape == (3, 1)
    assert np.all((presence >= 0) & (presence <= 1))
    model = LandmarkModel(load_model(tiny_models.fan2d_presence))
    assert model.has_presence and model.presence_threshold == 0.5
    image = np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)
    crops = [model.crop(image, np.array([50.0, 50, 150, 150]), r) for r in (0.0, 40.0)]
    results = model.run_crops(crops, flip=True)
    assert len(results) == 2
    for (views, face), crop in zip(results, crops, strict=True):
        assert views.shape == (2, 68, 64, 64) and 0.0 <= face <= 1.0
        # the batched call gives what one crop alone gives
        alone, alone_face = model.run_crops([crop], flip=True)[0]
        np.testing.assert_allclose(views, alone, atol=1e-4)
        assert face == pytest.approx(alone_face, abs=1e-5)
    # Mirror views added to single-view reads (the upside-down check's) give the same.
    added = model.with_mirror_views(crops, model.run_crops(crops))
    for (views, face), (views2, face2) in zip(results, added, strict=True):
        np.testing.assert_allclose(views2, views, atol=1e-4)
        assert face2 == pytest.approx(face, abs=1e-5)
    assert model.with_mirror_views([], []) == []


def test_fan_files_without_presence_run_unchecked(tiny_models) -> None:  # noqa: ANN001
    """A FAN-format file with heatmaps only (the original FAN's contract): no presence,
    no check, every detection kept and reported with presence null."""
    from util.aligner import FaceAligner
    from util.io import read_image

    model = LandmarkModel(load_model(tiny_models.fan2d, default_spec=ORIGINAL_FAN_SPEC))
    assert not model.has_presence
    aligner = FaceAligner(model_2d=tiny_models.fan2d, flip=True)
    faces = aligner.align(read_image(SAMPLES_DIR / "astronaut.png"))
    assert faces and all(f.presence is None for f in faces)
    assert all(f.to_json()["presence"] is None for f in faces)


def test_presence_threshold_drops_non_faces(tiny_models, tmp_path: Path) -> None:  # noqa: ANN001
    """With a threshold above any output, every detection is dropped; below, kept."""
    import onnx

    from training.export import write_spec
    from util.aligner import FaceAligner
    from util.io import read_image
    from util.runtime import read_spec

    image = read_image(SAMPLES_DIR / "astronaut.png")
    spec = read_spec(tiny_models.fan2d_presence)
    for threshold, expect_faces in ((1.01, False), (-0.01, True)):
        path = tmp_path / f"fan_{threshold}.onnx"
        onnx.save(onnx.load(str(tiny_models.fan2d_presence)), str(path))
        write_spec(
            path, dataclasses.replace(spec, extra=spec.extra | {"presence_threshold": threshold})
        )
        faces = FaceAligner(model_2d=path).align(image)
        assert bool(faces) == expect_faces
        assert all(0.0 <= f.presence <= 1.0 for f in faces)


def test_turned_face_synthesis() -> None:
    """Yaw 0 leaves the labels alone; a turn moves the nose toward the turn and keeps
    the far jaw on the face's visible outline (no jaw point inside the cheek line)."""
    from training.synthesis import face_depths, turn_face
    from util.shape_prior import ShapePrior

    prior = ShapePrior.load(SHAPE_PRIOR_PATH)
    points = _face_points()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (320, 400, 3), dtype=np.uint8)
    z = face_depths(prior, points[None])[0]
    same, labels, _ = turn_face(image, points, z, 0.0)
    np.testing.assert_allclose(labels, points, atol=1e-3)
    turned, labels, _ = turn_face(image, points, z, 35.0)
    assert turned.shape == image.shape and turned.dtype == np.uint8
    assert labels[30, 0] > points[30, 0] + 5  # the nose moved right
    # the far (right-hand) jaw above the chin stays on the outline, outside the mouth
    # corner, instead of sliding inside the turned cheek
    assert np.all(labels[12:17, 0] >= labels[54, 0] - 1)


def test_negative_crops_are_deterministic() -> None:
    from training.data import Face
    from training.negatives import NegativeCrops

    rng = np.random.default_rng(1)
    faces = [Face("a", rng.integers(0, 255, (448, 448, 3), dtype=np.uint8), _face_points() + 50)]
    crops = NegativeCrops(faces)
    first = [crops(np.random.default_rng(s)) for s in range(12)]
    again = [crops(np.random.default_rng(s)) for s in range(12)]
    for a, b in zip(first, again, strict=True):
        assert a.shape == (256, 256, 3) and a.dtype == np.uint8
        np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def sample_aligner():  # noqa: ANN201
    from util.aligner import FaceAligner

    return FaceAligner()


@pytest.mark.parametrize("angle", [150.0, 225.0])
def test_diagonal_face_found_at_its_roll(sample_aligner, angle: float) -> None:  # noqa: ANN001
    """The sample turned near a diagonal: BlazeFace's upright pass finds it with a roll
    far off (at 150 deg the crop was a quarter turn wrong, 52 % error; at 225 deg a
    second, false face came with it), so the turned passes look again and the better
    reading stays: one face, where the upright face's points went with the turn."""
    from training.evaluate import turn_image
    from util.io import read_image

    image = read_image(REPO / "samples" / "astronaut.png")
    (upright,) = sample_aligner.align(image)
    turned, expected = turn_image(image, upright.landmarks, angle)
    faces = sample_aligner.align(turned)
    assert len(faces) == 1
    inter_ocular = np.linalg.norm(upright.landmarks[36] - upright.landmarks[45])
    error = np.linalg.norm(faces[0].landmarks - expected, axis=1).mean() / inter_ocular
    assert error < 0.03
    # turn_image turns counter-clockwise as seen, so with y down the roll goes down
    assert abs((faces[0].roll - upright.roll + angle + 180.0) % 360.0 - 180.0) < 15.0


@pytest.mark.parametrize("bar", [None, 0.0, 2.0])
def test_upside_down_check_reads_the_twin_only_below_the_bar(sample_aligner, monkeypatch, bar) -> None:  # noqa: ANN001, E501
    """A crop read better than the spec's upright_read_quality has no twin read (the
    upright sample, bar 0); below the bar, or without one, the twin is read, and the
    sample upside down is found at its roll with its points where the upright ones
    went."""
    from util.io import read_image

    model = sample_aligner.landmark_model
    monkeypatch.setattr(model, "facts", dataclasses.replace(model.facts, upright_read_quality=bar))
    assert model.upright_read_quality == bar
    rolls: list[float] = []  # of the crops read in single view (the check's reads)
    run_crops = model.run_crops

    def recorded(crops, flip=False):  # noqa: ANN001, ANN202
        rolls.extend([] if flip else [c.roll for c in crops])
        return run_crops(crops, flip)

    monkeypatch.setattr(model, "run_crops", recorded)
    image = read_image(REPO / "samples" / "astronaut.png")
    (upright,) = sample_aligner.align(image)
    twins = [r for r in rolls if abs(r - upright.roll) > 90.0]
    assert len(twins) == (0 if bar == 0.0 else 1)
    if bar == 0.0:
        return
    (upside_down,) = sample_aligner.align(np.ascontiguousarray(image[::-1, ::-1]))
    height, width = image.shape[:2]
    expected = np.array([width - 1, height - 1]) - upright.landmarks
    inter_ocular = np.linalg.norm(upright.landmarks[36] - upright.landmarks[45])
    error = np.linalg.norm(upside_down.landmarks - expected, axis=1).mean() / inter_ocular
    assert error < 0.03
    assert abs((upside_down.roll - upright.roll) % 360.0 - 180.0) < 15.0


def _face(bbox: list[float], score: float, peak: float, presence: float | None, roll: float):  # noqa: ANN202
    from util.aligner import Face

    return Face(
        np.array(bbox), score, np.zeros((68, 2)), np.full(68, peak), presence=presence, roll=roll
    )


def test_better_readings_keeps_one_face_each() -> None:
    """Two readings of one face (overlapping detector boxes): the one the model reads
    better stays; a face found by one pass only is kept; best detection score first."""
    from util.crop_policy import better_readings

    upright_pass = [_face([0, 0, 100, 100], 0.7, 0.5, 0.8, 110.0)]
    turned_pass = [
        _face([5, 5, 105, 105], 0.9, 0.5, 0.99, -130.0),
        _face([300, 0, 400, 100], 0.8, 0.5, 0.9, 180.0),
    ]
    kept = better_readings(upright_pass, [(f, f.bbox) for f in turned_pass])
    assert [f.roll for f in kept] == [-130.0, 180.0]
    # the upright pass's reading is better: it stays, with its own roll
    better = _face([0, 0, 100, 100], 0.7, 0.6, 0.99, 100.0)
    kept = better_readings([better], [(turned_pass[0], turned_pass[0].bbox)])
    assert [f.roll for f in kept] == [100.0]


def test_turned_face_sends_the_search_to_the_turned_passes(sample_aligner, monkeypatch) -> None:  # noqa: ANN001
    """An upright pass that finds a face standing past UPRIGHT_DEGREES runs the turned
    passes at the same zoom (a 180 deg photo: one face found upside down, the others
    only in the half turn); a turned detection that agrees with a reading is not read
    again. An upright pass that finds upright faces runs no more passes."""
    from util import crop_policy
    from util.detect import Candidate

    passes, aligned = [], []
    upside_down = _face([0, 0, 100, 100], 0.7, 0.5, 0.9, 175.0)
    other = _face([300, 0, 400, 100], 0.9, 0.5, 0.9, 178.0)
    turned = [
        Candidate(np.array([2.0, 0, 100, 100]), 0.8, 170.0),
        Candidate(other.bbox, 0.9, 178.0),
    ]

    def detect(image, detector_pass):  # noqa: ANN001, ANN202
        passes.append(detector_pass)
        return list(turned)

    def align(image, found, keep_heatmaps):  # noqa: ANN001, ANN202
        aligned.append([float(d.bbox[0]) for d in found])
        by_x = {0.0: upside_down, 300.0: other}
        return [by_x[float(d.bbox[0])] for d in found]

    monkeypatch.setattr(sample_aligner.search, "run", detect)
    monkeypatch.setattr(sample_aligner, "read_faces", align)
    image = np.zeros((8, 8, 3), np.uint8)
    first = [Candidate(upside_down.bbox, 0.7, 175.0)]
    found = sample_aligner.align_found(image, first, False)
    assert passes == [(1.0, (1, 2, 3))]
    assert aligned == [[0.0], [300.0]]  # the agreeing turned detection is not read again
    assert [f.roll for f in found] == [178.0, 175.0]
    passes.clear()
    upside_down.roll = crop_policy.UPRIGHT_DEGREES - 1
    assert len(sample_aligner.align_found(image, first, False)) == 1
    assert passes == []


def test_confirmed_reading_replaces_a_worse_one_on_the_same_face() -> None:
    """The turned pass confirms a good reading: a worse-read false face on the same
    spot goes, though the upright pass's two boxes overlap each other too little to
    tell (the sample at 225 deg: boxes 0.26 IoU, the false one at presence 0.50)."""
    from util.crop_policy import better_readings

    good = _face([445, 394, 509, 458], 0.7, 0.55, 0.99, 136.0)
    false = _face([458, 430, 511, 483], 0.5, 0.11, 0.5, -72.0)
    assert len(better_readings([good, false], [(good, good.bbox)])) == 2
    kept = better_readings([good, false], [(good, np.array([441.0, 393, 527, 479]))])
    assert len(kept) == 1 and kept[0] is good
