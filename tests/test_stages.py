"""Unit tests of the pipeline stages: read, crop, decode, .pts, mirror, depth input,
model specs and runtimes, smoothing, drawing and the JSON record.

(The detector and the shape prior have their own files: test_detect.py, test_shape_prior.py.)
"""

from __future__ import annotations

import json
import re
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest

from training.paths import REPO, SAMPLES_DIR, SHAPE_PRIOR_PATH
from util.crop import crop_box, crop_matrix, invert_matrix, transform_points, warp_crop
from util.depth import depth_input, depth_to_image
from util.face_frame import apply_offsets, face_roll
from util.heatmap_codec import (
    crop_to_heatmap,
    decode,
    decode_heatmaps,
    gaussian_maps,
    heatmap_to_crop,
    positive_centroid,
)
from util.io import InputError, expand_inputs, read_image
from util.landmark_stage import LandmarkModel
from util.landmarks import (
    GROUPS,
    MIRROR_PERMUTATION,
    NUM_LANDMARKS,
    format_pts,
    inter_ocular,
    nme,
    read_pts,
    write_pts,
)
from util.model_facts import FACTS_BY_KIND, DepthFacts, required_keys
from util.runtime import (
    AILIA_LICENCE_PATH,
    AiliaModel,
    ModelError,
    ModelSpec,
    check_spec,
    load_model,
    read_spec,
    resolve_runtime,
    spec_facts,
)
from util.smooth import FaceSmoother, OneEuroFilter

SAMPLES = SAMPLES_DIR


def frontal_face(centre: tuple[float, float] = (200.0, 150.0), scale: float = 1.0) -> np.ndarray:
    """(68, 3) points of an average frontal face (the shipped shape prior's mean):
    x right, y down, z toward the camera, about 105 * scale pixels wide."""
    mean = np.load(SHAPE_PRIOR_PATH)["mean"].astype(np.float64)
    return mean * scale + [centre[0], centre[1], 0.0]


def leftovers(folder: Path) -> list[str]:
    """Temporary files an atomic writer could have left behind."""
    return [p.name for p in folder.iterdir() if p.name.endswith((".tmp", ".partial"))]


# -- crop -------------------------------------------------------------------------------


@pytest.mark.parametrize("angle", [0.0, 30.0, -90.0, 137.0])
def test_crop_matrix_round_trip(angle: float) -> None:
    rng = np.random.default_rng(1)
    centre, side, size = np.array([231.7, 140.2]), 183.0, 256
    matrix = crop_matrix(centre, side, size, angle)
    points = rng.uniform(0, 500, (50, 2))
    back = transform_points(transform_points(points, matrix), invert_matrix(matrix))
    np.testing.assert_allclose(back, points, atol=1e-9)
    # The centre lands in the middle of the crop, whatever the angle.
    middle = transform_points(centre[None], matrix)[0]
    np.testing.assert_allclose(middle, [(size - 1) / 2] * 2, atol=1e-9)


def test_crop_matrix_square_edges_and_rotation() -> None:
    centre, side, size = np.array([100.0, 80.0]), 50.0, 256
    matrix = crop_matrix(centre, side, size)
    # The square's outer pixel edges are the crop's outer pixel edges (-0.5, size - 0.5).
    corners = centre + np.array([[-side / 2, -side / 2], [side / 2, side / 2]])
    np.testing.assert_allclose(
        transform_points(corners, matrix), [[-0.5, -0.5], [size - 0.5, size - 0.5]], atol=1e-9
    )
    # Rotating by angle turns an offset (d, 0) into zoom * d * (cos, -sin): the crop shows
    # the image turned by ``angle`` degrees counter-clockwise (as cv2.getRotationMatrix2D).
    zoom = size / side
    for angle in (30.0, 90.0, -45.0):
        rotated = crop_matrix(centre, side, size, angle)
        offset = transform_points((centre + [10.0, 0.0])[None], rotated)[0] - (size - 1) / 2
        rad = np.deg2rad(angle)
        expected = zoom * 10.0 * np.array([np.cos(rad), -np.sin(rad)])
        np.testing.assert_allclose(offset, expected, atol=1e-9)


def test_crop_box_centre_and_side() -> None:
    centre, side = crop_box(np.array([10.0, 20.0, 110.0, 70.0]), scale=2.0, shift_y=0.1)
    size = np.sqrt(100.0 * 50.0)
    np.testing.assert_allclose(centre, [60.0, 45.0 + 0.1 * size])
    assert side == pytest.approx(2.0 * size)


@pytest.mark.parametrize("angle", [0.0, 90.0])
def test_warp_crop_puts_a_pixel_where_the_matrix_says(angle: float) -> None:
    # Zoom 1 and half-pixel centres: the affine maps pixel centres to pixel centres.
    size = 64
    image = np.zeros((120, 160, 3), np.uint8)
    pixel = np.array([50, 37])
    image[pixel[1], pixel[0]] = (255, 128, 7)
    matrix = crop_matrix(np.array([40.5, 40.5]), float(size), size, angle)
    crop = warp_crop(image, matrix, size)
    expected = transform_points(pixel[None].astype(float), matrix)[0]
    assert np.allclose(expected, np.round(expected))
    x, y = np.round(expected).astype(int)
    assert tuple(crop[y, x]) == (255, 128, 7)
    assert int(crop.sum()) == 255 + 128 + 7  # nothing else was lit


def test_warp_crop_zoomed_rotated_blob() -> None:
    # A smooth blob's centroid follows crop_matrix at any zoom and angle (sub-pixel).
    yy, xx = np.mgrid[0:300, 0:400]
    centre = np.array([212.3, 141.8])
    blob = np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (2 * 6.0**2))
    image = np.repeat((blob * 255).astype(np.uint8)[..., None], 3, axis=2)
    matrix = crop_matrix(np.array([200.0, 150.0]), 96.0, 256, angle_deg=25.0)
    crop = warp_crop(image, matrix, 256)[..., 0].astype(np.float64)
    cy, cx = np.mgrid[0:256, 0:256]
    centroid = np.array([(crop * cx).sum(), (crop * cy).sum()]) / crop.sum()
    np.testing.assert_allclose(centroid, transform_points(centre[None], matrix)[0], atol=0.3)
    # Outside the image is black.
    far = warp_crop(image, crop_matrix(np.array([-500.0, -500.0]), 96.0, 256), 256)
    assert not far.any()


# -- decode -----------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [1.0, 1.5, 2.0, 3.0])
def test_decode_recovers_subpixel_centres(sigma: float) -> None:
    rng = np.random.default_rng(int(sigma * 10))
    points = rng.uniform(5.0, 58.0, (NUM_LANDMARKS, 2))
    decoded, scores = decode_heatmaps(gaussian_maps(points, 64, sigma))
    assert decoded.shape == (NUM_LANDMARKS, 2) and scores.shape == (NUM_LANDMARKS,)
    assert np.abs(decoded - points).max() < 0.05
    assert np.all(scores > 0.75) and np.all(scores <= 1.0)


def test_gaussian_maps_peak_at_points() -> None:
    maps = gaussian_maps(np.array([[10.0, 20.0], [3.0, 60.0]]), 64, 2.0)
    assert maps.shape == (2, 64, 64) and maps.dtype == np.float32
    assert maps[0, 20, 10] == pytest.approx(1.0) and maps[1, 60, 3] == pytest.approx(1.0)
    assert np.unravel_index(maps[0].argmax(), (64, 64)) == (20, 10)


def test_crop_heatmap_coordinates_are_inverse() -> None:
    rng = np.random.default_rng(3)
    points = rng.uniform(-5, 260, (100, 2))
    np.testing.assert_allclose(
        heatmap_to_crop(crop_to_heatmap(points, 256, 64), 256, 64), points, atol=1e-9
    )
    # Pixel-centre convention: the crop's centre is the heatmap's centre, and crop
    # pixel 0 covers heatmap [-0.5, -0.25].
    np.testing.assert_allclose(crop_to_heatmap(np.array([127.5, 0.0]), 256, 64), [31.5, -0.375])


@pytest.mark.parametrize(
    "heatmap",
    [
        np.zeros((64, 64)),  # flat
        np.full((64, 64), -0.3),  # flat and negative (an untrained network)
        np.pad(np.ones((2, 2)), 31),  # plateau
        -np.abs(np.random.default_rng(0).normal(size=(64, 64))),  # no positive value
        np.eye(64),  # a ridge
    ],
    ids=["zeros", "negative", "plateau", "all-negative-noise", "ridge"],
)
def test_decode_degenerate_maps_fall_back(heatmap: np.ndarray) -> None:
    maps = np.stack([heatmap, gaussian_maps(np.array([[20.3, 40.7]]), 64, 2.0)[0]])
    points, scores = decode_heatmaps(maps)
    assert np.all(np.isfinite(points)) and np.all(np.isfinite(scores))
    peak = np.array(np.unravel_index(heatmap.argmax(), heatmap.shape))[::-1]
    assert np.abs(points[0] - peak).max() <= 1.0  # within a pixel of the argmax
    np.testing.assert_allclose(points[1], [20.3, 40.7], atol=0.05)  # others unaffected


def test_positive_centroid_is_the_gaussian_centre() -> None:
    # The integral loss trains the centroid of the positive part: for a Gaussian (away
    # from the borders) it is the centre; negative background must not move it.
    points = np.array([[20.4, 33.2], [40.0, 12.6]])
    maps = gaussian_maps(points, 64, 1.5) - 0.2 * (np.arange(64)[None, None, :] > 50)
    decoded, scores = positive_centroid(maps)
    np.testing.assert_allclose(decoded, points, atol=0.01)
    np.testing.assert_allclose(scores, maps.reshape(2, -1).max(1), rtol=1e-6)
    np.testing.assert_allclose(decode(maps, "centroid")[0], decoded)


def test_positive_centroid_radius_ignores_a_far_blob() -> None:
    points = np.array([[20.4, 33.2], [40.0, 12.6]])
    stray = 0.6 * gaussian_maps(np.array([[60.0, 60.0], [2.0, 2.0]]), 64, 2.0)
    maps = gaussian_maps(points, 64, 1.5) + stray
    dragged, _ = positive_centroid(maps)
    assert np.abs(dragged - points).max() > 5  # the whole-map centroid is pulled away
    kept, _ = positive_centroid(maps, radius=16)
    np.testing.assert_allclose(kept, points, atol=0.01)
    np.testing.assert_allclose(decode(maps, "centroid", 16)[0], kept)


def test_decode_dispatch() -> None:
    maps = gaussian_maps(np.array([[20.4, 33.2], [40.0, 12.6]]), 64, 1.5)
    np.testing.assert_allclose(decode(maps, "dark")[0], decode_heatmaps(maps)[0])
    with pytest.raises(ValueError, match="unknown heatmap decoding"):
        decode(maps, "bogus")


def _fake_landmark_model(extra: dict) -> LandmarkModel:
    base = {"heatmap_size": 64, "decode": "centroid", "crop_scale": 2.0, "crop_shift_y": 0.0}
    spec = ModelSpec(kind="fan2d", extra=base | extra)
    facts = spec_facts(spec, "fake")
    return LandmarkModel(types.SimpleNamespace(spec=spec, facts=facts, path="fake", run=None))


def test_views_are_decoded_then_averaged() -> None:
    # View 0 peaks at x=20 with a negative lobe at x=30, where view 1 peaks. Averaging
    # the maps would let the lobe cancel view 1's peak (the shipped model's maps are
    # two-thirds negative mass); averaging the decoded points gives the midpoint.
    points = np.tile([[20.0, 30.0]], (68, 1))
    view0 = gaussian_maps(points, 64, 1.5) - gaussian_maps(points + [10, 0], 64, 1.5)
    view1 = gaussian_maps(points + [10, 0], 64, 1.5)
    model = _fake_landmark_model({})
    peaks, scores = model.peaks(np.stack([view0, view1]))
    np.testing.assert_allclose(peaks, points + [5, 0], atol=0.01)
    np.testing.assert_allclose(scores, 0.5 * (view0.max((1, 2)) + view1.max((1, 2))), rtol=1e-5)
    merged, _ = positive_centroid(0.5 * (view0 + view1))
    np.testing.assert_allclose(merged, points, atol=0.01)  # what averaging the maps gives


@pytest.mark.parametrize("roll", [0.0, 30.0, -90.0])
def test_offsets_follow_the_face_roll(roll: float) -> None:
    face = frontal_face((32.0, 32.0), 0.2)[:, :2]
    angle = np.radians(roll)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    turned = (face - 32.0) @ rotation.T + 32.0
    assert face_roll(turned) == pytest.approx(angle, abs=1e-6)
    offsets = np.zeros((68, 2))
    offsets[36] = [0.5, 0.0]  # half a pixel along the eye line
    moved = apply_offsets(turned, offsets)
    np.testing.assert_allclose(moved[36] - turned[36], rotation @ [0.5, 0.0], atol=1e-9)
    np.testing.assert_allclose(np.delete(moved - turned, 36, axis=0), 0.0, atol=1e-12)


def test_landmark_offsets_from_the_spec_are_applied() -> None:
    points = frontal_face((32.0, 30.0), 0.2)[:, :2]
    maps = gaussian_maps(points, 64, 1.5)[None]
    crop = types.SimpleNamespace(inverse=np.array([[1.0, 0, 0], [0, 1.0, 0]]))
    plain, _ = _fake_landmark_model({}).landmarks(maps, crop)
    shifted, _ = _fake_landmark_model({"landmark_offsets": [[0.25, -0.5]] * 68}).landmarks(
        maps, crop
    )
    # Upright face: heatmap offsets are crop offsets times crop / heatmap size (256 / 64).
    np.testing.assert_allclose(shifted - plain, np.tile([[1.0, -2.0]], (68, 1)), atol=0.05)


def _mirrored_points(points: np.ndarray, size: int) -> np.ndarray:
    """Points of the mirror image of a face (iBUG order kept)."""
    out = points[MIRROR_PERMUTATION].copy()
    out[:, 0] = size - 1 - out[:, 0]
    return out


@pytest.mark.parametrize("yaw", [35.0, -60.0])
def test_yaw_offsets_are_mirrored_for_the_other_side(yaw: float) -> None:
    # A face at -yaw is the mirror image of one at +yaw: its corrected points must be
    # the mirror of the other's. Constant offsets mirror-symmetric, the yaw term not.
    rng = np.random.default_rng(7)
    base = rng.normal(0, 0.3, (68, 2))
    base = 0.5 * (base + base[MIRROR_PERMUTATION] * [-1.0, 1.0])
    per_yaw = rng.normal(0, 1.0, (68, 2))
    extra = {"landmark_offsets": base.tolist(), "landmark_offsets_per_yaw": per_yaw.tolist()}
    codec = _fake_landmark_model(extra).codec
    points = frontal_face((30.0, 33.0), 0.2)[:, :2] + rng.normal(0, 0.5, (68, 2))
    maps = gaussian_maps(points, 64, 1.5)[None]
    mirrored_maps = maps[:, MIRROR_PERMUTATION, :, ::-1]
    here, _ = codec.decode(maps, yaw)
    there, _ = codec.decode(mirrored_maps, -yaw)
    np.testing.assert_allclose(_mirrored_points(there, 256), here, atol=0.02)
    # The yaw term grows with |yaw| and is absent at 0 and without a yaw.
    plain, _ = codec.decode(maps)
    np.testing.assert_allclose(codec.decode(maps, 0.0)[0], plain)
    assert np.abs(here - plain).max() > 1.0
    np.testing.assert_allclose(codec.offsets_at(yaw) - base, (abs(yaw) / 90) * (
        per_yaw if yaw > 0 else per_yaw[MIRROR_PERMUTATION] * [-1.0, 1.0]))  # fmt: skip


def test_calibrate_3d_recovers_offsets_that_depend_on_yaw() -> None:
    from training.aflw import AflwLabels
    from training.calibrate_3d import Reading, fit_offsets
    from util.landmark_stage import FaceCrop

    rng = np.random.default_rng(3)
    base, per_yaw = rng.normal(0, 0.3, (68, 2)), rng.normal(0, 1.0, (68, 2))
    extra = {"landmark_offsets": base.tolist(), "landmark_offsets_per_yaw": per_yaw.tolist()}
    model = _fake_landmark_model(extra)
    readings, truths = [], []
    for i in range(12):
        roll = rng.uniform(-40, 40)
        matrix = crop_matrix(np.array([200.0, 180.0]), 150.0, 256, roll)
        peaks = frontal_face((32.0, 31.0), 0.25)[:, :2] + rng.normal(0, 0.4, (68, 2))
        yaw = float(rng.uniform(-90, 90))
        truth = transform_points(model.codec.correct(peaks, yaw), invert_matrix(matrix))
        crop = FaceCrop(np.zeros((256, 256, 3), np.uint8), matrix, 150.0, roll)
        readings.append(Reading(i, peaks, crop, yaw))
        truths.append(np.column_stack([truth, np.zeros(68)]))
    labels = AflwLabels(np.arange(12).astype(str), np.stack(truths), np.zeros((12, 3)))
    found_base, found_per_yaw = fit_offsets(readings, model, labels)
    np.testing.assert_allclose(found_base, base, atol=1e-6)
    np.testing.assert_allclose(found_per_yaw, per_yaw, atol=1e-6)


# -- iBUG 68: .pts, mirror, metrics -------------------------------------------------------


def test_pts_round_trip_is_atomic(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    points = rng.uniform(0, 1000, (NUM_LANDMARKS, 2))
    path = tmp_path / "face ü.pts"
    write_pts(path, points)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("version: 1\nn_points:  68\n{\n") and text.endswith("\n}\n")
    np.testing.assert_allclose(read_pts(path), points, atol=5e-4)
    assert leftovers(tmp_path) == []
    # Overwriting works and (z) columns beyond x, y are left out.
    write_pts(path, np.column_stack([points, np.ones(NUM_LANDMARKS)]))
    assert read_pts(path).shape == (NUM_LANDMARKS, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face ü.pts"]


def test_pts_write_failure_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "taken.pts"
    target.mkdir()  # the rename onto a folder fails
    with pytest.raises(OSError):
        write_pts(target, np.zeros((NUM_LANDMARKS, 2)))
    assert leftovers(tmp_path) == []


def test_read_pts_format_variants_and_garbage(tmp_path: Path) -> None:
    points = np.round(frontal_face()[:, :2], 3)
    text = format_pts(points)
    assert text.count("\n") == NUM_LANDMARKS + 4
    # Windows line endings and a single-space header, as some 300-W files have.
    crlf = tmp_path / "crlf.pts"
    crlf.write_bytes(text.replace("n_points:  ", "n_points: ").replace("\n", "\r\n").encode())
    read = read_pts(crlf)
    assert read.shape == (NUM_LANDMARKS, 2) and read.dtype == np.float32
    np.testing.assert_allclose(read, points, atol=1e-3)
    bad = tmp_path / "bad.pts"
    bad.write_text("version: 1\nn_points: 68\n", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.pts"):
        read_pts(bad)


def test_mirror_permutation() -> None:
    perm = MIRROR_PERMUTATION
    assert sorted(perm) == list(range(NUM_LANDMARKS))
    np.testing.assert_array_equal(perm[perm], np.arange(NUM_LANDMARKS))  # an involution
    assert perm[36] == 45 and perm[45] == 36 and perm[0] == 16 and perm[8] == 8
    assert perm[30] == 30 and perm[48] == 54 and perm[62] == 62 and perm[66] == 66
    # Mirroring a real face and re-ordering keeps every group on its own side.
    points = frontal_face()[:, :2] + np.linspace(0, 3, NUM_LANDMARKS)[:, None]  # not symmetric
    mirrored = points.copy()
    mirrored[:, 0] = 1000.0 - mirrored[:, 0]
    mirrored = mirrored[perm]
    assert mirrored[36, 0] < mirrored[45, 0] and mirrored[0, 0] < mirrored[16, 0]
    assert inter_ocular(mirrored) == pytest.approx(inter_ocular(points))
    # Groups are disjoint and cover the 68 points.
    covered = sorted(i for indices, _ in GROUPS.values() for i in indices)
    assert covered == list(range(NUM_LANDMARKS))


def test_nme_and_inter_ocular() -> None:
    truth = np.zeros((NUM_LANDMARKS, 2))
    truth[45] = [100.0, 0.0]
    assert inter_ocular(truth) == pytest.approx(100.0)
    assert nme(truth + [3.0, 4.0], truth, 100.0) == pytest.approx(0.05)


# -- depth input and output ----------------------------------------------------------------


def test_depth_input_layout() -> None:
    spec = ModelSpec(kind="depth", extra={"heatmap_sigma": 2.0})
    rng = np.random.default_rng(5)
    crop = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    points = rng.integers(10, 246, (NUM_LANDMARKS, 2)).astype(np.float64)
    x = depth_input(crop, points, spec)
    assert x.shape == (1, 71, 256, 256) and x.dtype == np.float32
    np.testing.assert_array_equal(x[:, :3], spec.to_tensor(crop))
    for k in (0, 17, 36, 67):
        y, xx = np.unravel_index(x[0, 3 + k].argmax(), (256, 256))
        assert (xx, y) == tuple(points[k].astype(int))
        assert x[0, 3 + k].max() == pytest.approx(1.0)


def test_depth_to_image_scaling_and_sign() -> None:
    z = np.arange(NUM_LANDMARKS, dtype=np.float32)[None]  # as the model gives it: (1, 68)
    facts = DepthFacts(heatmap_sigma=2.0, z_scale=1.0, z_sign=1.0)
    out = depth_to_image(z, facts, crop_size=256, crop_side=512.0)
    assert out.shape == (NUM_LANDMARKS,)
    assert abs(out.mean()) < 1e-9
    np.testing.assert_allclose(np.diff(out), 2.0)  # side / 256 = 2 image pixels per crop pixel
    flipped = depth_to_image(z, DepthFacts(2.0, z_scale=0.5, z_sign=-1.0), 256, 256.0)
    np.testing.assert_allclose(np.diff(flipped), -0.5)


# -- model specs and runtimes ----------------------------------------------------------------


def test_model_spec_channel_order_layout_and_normalisation() -> None:
    image = np.zeros((4, 5, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 10, 20, 30  # R, G, B
    rgb = ModelSpec(input_size=(4, 5)).to_tensor(image)
    assert rgb.shape == (1, 3, 4, 5) and rgb.dtype == np.float32
    np.testing.assert_allclose(rgb[0, :, 0, 0], np.array([10, 20, 30]) / 255, rtol=1e-6)
    bgr = ModelSpec(input_size=(4, 5), channel_order="BGR").to_tensor(image)
    np.testing.assert_allclose(bgr[0, :, 0, 0], np.array([30, 20, 10]) / 255, rtol=1e-6)
    nhwc = ModelSpec(
        input_size=(4, 5), layout="NHWC", scale=1.0, mean=(10.0, 0.0, 0.0), std=(1.0, 2.0, 5.0)
    ).to_tensor(image)
    assert nhwc.shape == (1, 4, 5, 3)
    np.testing.assert_allclose(nhwc[0, 0, 0], [0.0, 10.0, 6.0])


def test_model_spec_dict_round_trip_keeps_extra() -> None:
    spec = ModelSpec(kind="fan2d", input_size=(256, 256), extra={"heatmap_size": 64})
    data = json.loads(json.dumps(spec.to_dict()))
    assert ModelSpec.from_dict(data) == spec
    flat = ModelSpec.from_dict({"kind": "depth", "input_size": [128, 128], "z_sign": -1})
    assert flat.input_size == (128, 128) and flat.extra == {"z_sign": -1}


def test_missing_model_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.onnx"
    with pytest.raises(ModelError, match="nowhere.onnx: model file not found"):
        load_model(path, default_spec=ModelSpec())


def test_corrupt_model_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.onnx"
    path.write_bytes(b"this is not a protobuf" * 10)
    with pytest.raises(ModelError, match="corrupt.onnx") as info:
        load_model(path, default_spec=ModelSpec())
    assert "\n" not in str(info.value)
    # Without a default spec it is still a ModelError naming the file.
    with pytest.raises(ModelError, match="corrupt.onnx"):
        load_model(path)


def test_invalid_sidecar_spec_names_the_sidecar(tmp_path: Path) -> None:
    (tmp_path / "m.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelError, match="m.json: invalid model spec"):
        read_spec(tmp_path / "m.onnx")


# A shipped file of each kind, whose spec the tests below take apart.
SHIPPED_OF_KIND = {
    "fan2d": "fan2d_compact.onnx",
    "fan3d": "fan3d_compact.onnx",
    "depth": "depth_compact.onnx",
    "blazeface": "blazeface_front.onnx",
}


@pytest.mark.parametrize(
    ("kind", "key"), [(kind, key) for kind in FACTS_BY_KIND for key in required_keys(kind)]
)
def test_spec_without_a_required_key_is_refused_at_load(
    tmp_path: Path, tiny_models, kind: str, key: str  # noqa: ANN001
) -> None:
    # Any loadable file will do: the spec is checked before a stage looks at the model.
    model = tmp_path / "m.onnx"
    model.write_bytes(tiny_models.fan2d.read_bytes())
    extra = dict(read_spec(REPO / "models" / SHIPPED_OF_KIND[kind]).extra)
    del extra[key]
    (model.with_suffix(".json")).write_text(json.dumps({"kind": kind, "extra": extra}))
    with pytest.raises(ModelError, match=f"m.onnx: spec of kind '{kind}' lacks {key} ") as info:
        load_model(model, expected_kind=kind, threads=1)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("kind", "key", "value"),
    [
        ("fan2d", "crop_scale", "1.5"),
        ("fan2d", "outputs", "heatmaps"),
        ("fan2d", "landmark_offsets", [[0.0, 0.0]]),
        ("fan3d", "landmark_offsets_per_yaw", [[0.0, 0.0, 0.0]] * 68),
        ("fan2d", "presence_referee", {"low": 0.1}),
        ("fan2d", "mirror_model", 3),
        ("fan3d", "pose_frame", [[1, 0, 0], [0, 1, 0], [0, 0, 2]]),
        ("fan3d", "shape_fit_turned", {"from_yaw": 30}),
        ("depth", "z_sign", None),
        ("blazeface", "num_keypoints", 0),
        ("blazeface", "box_vs_landmarks", {"centre_dx": 0.0}),
    ],
)
def test_spec_with_a_malformed_key_is_refused_at_load(
    tmp_path: Path, tiny_models, kind: str, key: str, value: object  # noqa: ANN001
) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(tiny_models.fan2d.read_bytes())
    extra = dict(read_spec(REPO / "models" / SHIPPED_OF_KIND[kind]).extra) | {key: value}
    (model.with_suffix(".json")).write_text(json.dumps({"kind": kind, "extra": extra}))
    with pytest.raises(ModelError, match=f"m.onnx: spec key {key} must be ") as info:
        load_model(model, expected_kind=kind, threads=1)
    assert "\n" not in str(info.value)


def test_no_string_reads_of_spec_extra_outside_model_facts() -> None:
    # Every key the library reads is declared, typed and defaulted in util/model_facts.py.
    readers = [
        path.name
        for path in sorted((REPO / "util").glob("*.py"))
        if path.name != "model_facts.py"
        and re.search(r"\bextra(\[|\.get\()", path.read_text(encoding="utf-8"))
    ]
    assert readers == []


def test_family_defaults_and_shipped_specs_have_their_required_keys() -> None:
    from util.depth import ORIGINAL_DEPTH_SPEC
    from util.landmark_stage import ORIGINAL_FAN3D_SPEC, ORIGINAL_FAN_SPEC

    for spec in (ORIGINAL_FAN_SPEC, ORIGINAL_FAN3D_SPEC, ORIGINAL_DEPTH_SPEC):
        check_spec(spec, "default")
    for path in sorted((REPO / "models").glob("*.onnx")):
        check_spec(read_spec(path), path)


def test_runtime_names() -> None:
    assert resolve_runtime("onnxruntime") == "onnxruntime"
    assert resolve_runtime("auto") in ("onnxruntime", "ailia")
    with pytest.raises(ModelError, match="unknown runtime"):
        resolve_runtime("tensorflow")


def test_ailia_missing_is_a_clear_model_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ailia", None)  # import ailia -> ImportError
    assert resolve_runtime("auto") == "onnxruntime"
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    with pytest.raises(ModelError, match="ailia SDK is not installed"):
        load_model(model, runtime="ailia", default_spec=ModelSpec())


def test_ailia_without_licence_names_the_licence_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ailia's licence check fails with a TypeError; the error must say which file is missing."""

    def unlicensed_net(*_args: object, **_kwargs: object) -> None:
        raise TypeError("'NoneType' object is not subscriptable")

    monkeypatch.setitem(sys.modules, "ailia", types.SimpleNamespace(Net=unlicensed_net))
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    with pytest.raises(ModelError, match=r"\.shalo/AILIA\.lic"):
        AiliaModel(model, ModelSpec())


def test_real_ailia_without_licence(tmp_path: Path, tiny_models) -> None:  # noqa: ANN001
    pytest.importorskip("ailia", reason="the ailia SDK is not installed")
    if Path(AILIA_LICENCE_PATH).expanduser().is_file():
        pytest.skip("an ailia licence is installed: nothing to check")
    with pytest.raises(ModelError, match=r"\.shalo/AILIA\.lic"):
        load_model(tiny_models.fan2d, runtime="ailia")


# -- reading images ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    """A non-square RGB test image with distinct rows and columns."""
    from PIL import Image

    return np.asarray(Image.open(SAMPLES / "astronaut.png").convert("RGB"))[:400, 60:360]


def test_read_image_converts_modes(tmp_path: Path, portrait: np.ndarray) -> None:
    from PIL import Image

    rgb = Image.fromarray(portrait)
    grey = np.asarray(rgb.convert("L"))
    rgb.convert("L").save(tmp_path / "grey.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "g16.png")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(0)
    rgba.save(tmp_path / "clear.png")
    rgb.convert("P").save(tmp_path / "palette.gif")
    for name in ("grey.png", "g16.png"):
        image = read_image(tmp_path / name)
        assert image.shape == (400, 300, 3) and image.dtype == np.uint8, name
        assert np.abs(image[..., 1].astype(int) - grey).max() <= 1, name
    np.testing.assert_array_equal(read_image(tmp_path / "clear.png"), 255)  # alpha on white
    assert read_image(tmp_path / "palette.gif").shape == (400, 300, 3)


def test_read_image_applies_exif_orientation(tmp_path: Path, portrait: np.ndarray) -> None:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": stored turned 90 degrees CCW
    Image.fromarray(portrait).transpose(Image.Transpose.ROTATE_90).save(
        tmp_path / "turned.jpg", exif=exif.tobytes(), quality=95
    )
    image = read_image(tmp_path / "turned.jpg")
    assert image.shape == portrait.shape
    assert np.abs(image.astype(int) - portrait).mean() < 6


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.png", None, "file not found"),
        ("empty.png", b"", "empty file"),
        ("text.jpg", b"hello, I am text\n", "not an image"),
        ("cut.png", "truncated", "corrupt or truncated"),
        ("huge.png", "huge", "too large"),
        ("big.png", "big", "too large (12000x9000 pixels)"),
    ],
)
def test_read_image_errors_name_the_file(
    tmp_path: Path, name: str, content: bytes | str | None, message: str
) -> None:
    from PIL import Image

    path = tmp_path / name
    if content == "truncated":
        data = (SAMPLES / "astronaut.png").read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif content == "huge":
        Image.new("1", (20000, 20000)).save(path)  # 400 megapixels in ~50 kB
        assert path.stat().st_size < 200_000
    elif content == "big":
        Image.new("1", (12000, 9000)).save(path)  # past MAX_PIXELS, below Pillow's error
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError) as info, warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning may escape (Pillow's bomb warning)
        read_image(path)
    text = str(info.value)
    assert text.startswith(str(path)) and message in text and "\n" not in text


def test_read_image_over_our_own_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import util.io

    monkeypatch.setattr(util.io, "MAX_PIXELS", 1000)
    with pytest.raises(InputError, match=r"too large \(512x512 pixels\)"):
        read_image(SAMPLES / "astronaut.png")


def test_expand_inputs(tmp_path: Path) -> None:
    for name in ("b.png", "a.jpg", "notes.txt", "sub/c.PNG"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = expand_inputs([str(tmp_path)])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a.jpg", "b.png", "sub/c.PNG"]
    assert expand_inputs([str(tmp_path / "*.png")]) == [tmp_path / "b.png"]
    assert expand_inputs([str(tmp_path / "nothing*.png")]) == [tmp_path / "nothing*.png"]


# -- smoothing ---------------------------------------------------------------------------------


def test_one_euro_reduces_jitter_and_follows_a_step() -> None:
    # In face sizes, as FaceSmoother feeds it: jitter of 0.25 % of the face, about what
    # the tracker shows on a still face (benchmarks/tracking.py).
    rng = np.random.default_rng(6)
    noisy = 1.0 + rng.normal(0.0, 0.0025, (300, NUM_LANDMARKS, 2))
    filt = OneEuroFilter(rate=30.0)
    out = np.array([filt(frame) for frame in noisy])
    assert out[60:].std(axis=0).mean() < 0.5 * noisy[60:].std(axis=0).mean()
    assert abs(out[60:].mean() - 1.0) < 0.002
    # A step of a tenth of the face (well above the noise) is followed within 0.2 s.
    step = np.r_[np.zeros(60), np.full(60, 0.1)][:, None] + rng.normal(0, 0.001, (120, 1))
    filt = OneEuroFilter(rate=30.0)
    followed = np.array([filt(v) for v in step])[:, 0]
    assert np.all(np.abs(followed[66:] - 0.1) < 0.01)
    assert followed[60] > 0.03  # reacts on the very first frame of the move


def test_face_smoother_tracks_faces_separately() -> None:
    from util.face import Face

    rng = np.random.default_rng(7)
    base = rng.uniform(0, 100, (NUM_LANDMARKS, 2))

    def face(offset: float, jitter: float) -> Face:
        box = np.array([offset, 0.0, offset + 100.0, 100.0])
        points = base + [offset, 0.0] + rng.normal(0, jitter, base.shape)
        return Face(box, 0.9, points, np.ones(NUM_LANDMARKS))

    smoother = FaceSmoother(rate=30.0)
    left, right = [], []
    for _ in range(60):
        a, b = smoother([face(0.0, 0.5), face(500.0, 0.5)])
        left.append(a.landmarks.copy())
        right.append(b.landmarks.copy())
    left, right = np.array(left), np.array(right)
    # Each track stays on its own face and is steadier than the raw input (std 0.5).
    assert np.abs(left[20:].mean(0) - base).max() < 0.5
    assert np.abs(right[20:].mean(0) - (base + [500.0, 0.0])).max() < 0.5
    assert left[20:].std(0).mean() < 0.3
    # 3D points are smoothed too, and landmarks stay their x, y.
    f3 = face(0.0, 0.0)
    f3.landmarks_3d = np.column_stack([f3.landmarks, np.zeros(NUM_LANDMARKS)])
    (out,) = FaceSmoother()([f3])
    np.testing.assert_allclose(out.landmarks, out.landmarks_3d[:, :2])


# -- drawing --------------------------------------------------------------------------------


def _fake_face(with_3d: bool = True):  # noqa: ANN202
    from util.face import Face

    shape = frontal_face()
    points = shape[:, :2]
    return Face(
        bbox=np.array([*points.min(0), *points.max(0)]),
        score=0.9,
        landmarks=points,
        landmark_scores=np.ones(NUM_LANDMARKS),
        landmarks_3d=shape - [0.0, 0.0, shape[:, 2].mean()] if with_3d else None,
        heatmaps=gaussian_maps(crop_to_heatmap(points * 0.5, 256, 64), 64, 2.0),
    )


def test_draw_functions_shapes() -> None:
    from util.draw import draw_faces, heatmap_grid, side_view, with_side_view

    image = np.full((300, 400, 3), 90, np.uint8)
    face = _fake_face()
    drawn = draw_faces(image, [face])
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    assert (drawn != image).any() and (image == 90).all()  # drawn on a copy
    assert draw_faces(image, []).shape == image.shape
    wide = with_side_view(drawn, [face, face])
    assert wide.shape[0] == 300 and wide.shape[1] > 400 and wide.dtype == np.uint8
    assert side_view([_fake_face(with_3d=False)], 200).shape[0] == 200  # no 3D: empty panel
    grid = heatmap_grid(face.heatmaps)
    assert grid.shape == (6 * 64, 12 * 64, 3) and grid.dtype == np.uint8


# -- the JSON record ---------------------------------------------------------------------------


def check_record_schema(record: dict, with_3d: bool) -> None:
    """The documented JSON Lines record (also used by test_cli.py)."""
    assert set(record) >= {"image", "width", "height", "faces", "error"}
    assert isinstance(record["image"], str)
    assert record["error"] is None or isinstance(record["error"], str)
    if record["error"] is None:
        assert isinstance(record["width"], int) and isinstance(record["height"], int)
    for face in record["faces"]:
        keys = {"bbox", "score", "presence", "landmarks", "landmark_scores"}
        # 3D adds the points and the head pose (util.head_pose), when a pose is known
        # (the shape prior's pose frame: a fake face or a prior without one has none).
        with_pose = "pose" in face
        keys_3d = {"landmarks_3d"} | ({"pose", "rotation"} if with_pose else set())
        assert set(face) == (keys | keys_3d if with_3d else keys)
        assert len(face["bbox"]) == 4 and isinstance(face["score"], float)
        # the 2D model's face probability; null for models without that output
        assert face["presence"] is None or 0.0 <= face["presence"] <= 1.0
        assert np.asarray(face["landmarks"]).shape == (NUM_LANDMARKS, 2)
        assert np.asarray(face["landmark_scores"]).shape == (NUM_LANDMARKS,)
        if with_3d:
            assert np.asarray(face["landmarks_3d"]).shape == (NUM_LANDMARKS, 3)


def test_json_record_schema() -> None:
    from util.cli import _record

    face = _fake_face()
    record = _record(Path("dir/a.png"), [face], None, (300, 400, 3))
    record = json.loads(json.dumps(record))  # serialisable as is
    check_record_schema(record, with_3d=True)
    assert (record["width"], record["height"]) == (400, 300)
    assert "heatmaps" not in record["faces"][0]
    np.testing.assert_allclose(record["faces"][0]["landmarks"], face.landmarks, atol=0.006)
    face.landmarks_3d = None
    check_record_schema(json.loads(json.dumps(_record("x", [face], None, (1, 2)))), with_3d=False)
    failed = _record("bad.jpg", [], "bad.jpg: empty file", None)
    assert failed == {
        "image": "bad.jpg",
        "width": None,
        "height": None,
        "faces": [],
        "error": "bad.jpg: empty file",
    }
    framed = _record("v.mp4", [], None, (10, 20, 3), frame=7)
    assert framed["frame"] == 7


# -- the API end to end on a tiny model ---------------------------------------------------------


def test_face_aligner_api(tiny_models) -> None:  # noqa: ANN001
    from util.aligner import FaceAligner

    aligner = FaceAligner(
        model_2d=tiny_models.fan2d, model_depth=tiny_models.depth, active_3d=True, threads=1
    )
    image = read_image(SAMPLES / "astronaut.png")
    faces = aligner.align(image, keep_heatmaps=True)
    assert len(faces) == 1
    face = faces[0]
    assert face.landmarks.shape == (NUM_LANDMARKS, 2) and face.landmarks_3d.shape == (68, 3)
    assert face.heatmaps.shape == (NUM_LANDMARKS, 64, 64)
    assert abs(face.landmarks_3d[:, 2].mean()) < 1e-6
    # FAN-library conveniences: from a path, with boxes and scores; given boxes skip detection.
    landmarks, scores, boxes = aligner.get_landmarks_from_image(
        str(SAMPLES / "astronaut.png"), return_bboxes=True, return_landmark_score=True
    )
    assert landmarks[0].shape == (68, 3) and scores[0].shape == (68,) and boxes[0].shape == (5,)
    # Given boxes have no keypoints: their crops start upright (roll 0), as FAN's do.
    given = aligner.get_landmarks_from_image(image, detected_faces=[face.bbox])
    again = aligner.align(image, bboxes=[face.bbox])
    np.testing.assert_allclose(given[0], again[0].landmarks_3d, atol=1e-3)
    # Grey arrays are accepted; other dtypes and shapes are clear errors.
    assert len(aligner.align(image[..., 1])) == 1
    with pytest.raises(InputError, match="dtype float"):
        aligner.align(image.astype(np.float32))
    with pytest.raises(InputError, match="expected HxWx3"):
        aligner.align(np.zeros((0, 10, 3), np.uint8))
