"""Aligned crops (util/aligned_crop.py, --crops): both templates against independent
implementations of their formulas (skimage's similarity for ArcFace, PIL's QUAD
transform for FFHQ, as NVlabs' script does), the matrix round trip, paste-back, the
padding, and the command line's image and video paths."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from training.paths import REPO, SAMPLES_DIR
from util.aligned_crop import (
    ARCFACE_112,
    arcface_matrix,
    ffhq_matrix,
    paste_back,
    warp,
)
from util.io import read_image

SAMPLE = SAMPLES_DIR / "astronaut.png"
CLI = [sys.executable, str(REPO / "face_alignment.py")]


def _landmarks(centre=(256.0, 240.0), scale: float = 1.0, angle: float = 12.0) -> np.ndarray:
    """A plausible 68-point face: eyes, nose and mouth where a face has them, turned."""
    rng = np.random.default_rng(0)
    points = rng.normal(0, 3, (68, 2))
    points[36:42] += [-30, -20]
    points[42:48] += [30, -20]
    points[30] = [0, 10]
    points[48] = [-24, 40]
    points[54] = [24, 40]
    r = np.radians(angle)
    rotation = np.array([[np.cos(r), -np.sin(r)], [np.sin(r), np.cos(r)]])
    return (points * scale) @ rotation.T + centre


def _psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    a = cv2.GaussianBlur(a.astype(np.float64), (0, 0), 1.0)
    b = cv2.GaussianBlur(b.astype(np.float64), (0, 0), 1.0)
    mse = ((a - b) ** 2)[mask].mean()
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


@pytest.mark.parametrize("size", [112, 224])
def test_arcface_matrix_is_skimages_similarity(size: int) -> None:
    from skimage.transform import SimilarityTransform

    landmarks = _landmarks()
    five = np.stack([landmarks[36:42].mean(0), landmarks[42:48].mean(0), landmarks[30],
                     landmarks[48], landmarks[54]])  # fmt: skip
    reference = SimilarityTransform()
    reference.estimate(five, ARCFACE_112 * size / 112)
    np.testing.assert_allclose(arcface_matrix(landmarks, size), reference.params[:2], atol=1e-9)


def _ffhq_reference(image: np.ndarray, landmarks: np.ndarray, size: int) -> tuple:
    """NVlabs' recreate_aligned_images (no shrink, crop or pad needed here): the quad,
    then PIL's QUAD transform; also the matrix that takes the quad to the square."""
    from PIL import Image

    eye_left, eye_right = landmarks[36:42].mean(0), landmarks[42:48].mean(0)
    eye_avg, eye_to_eye = (eye_left + eye_right) * 0.5, eye_right - eye_left
    mouth_avg = (landmarks[48] + landmarks[54]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    out = Image.fromarray(image).transform(
        (size, size), Image.QUAD, (quad + 0.5).flatten(), Image.BILINEAR
    )
    # Points: quad corner 0 -> (0, 0), corner 3 -> (size, 0), corner 1 -> (0, size), in
    # continuous coordinates; pixel centres at integers on both sides.
    src = np.stack([quad[0], quad[3], quad[1]]) + 0.5
    dst = np.array([[0, 0], [size, 0], [0, size]], np.float64)
    affine = cv2.getAffineTransform(src.astype(np.float32), dst.astype(np.float32))
    affine = affine.astype(np.float64)
    affine[:, 2] += affine[:, :2] @ [0.5, 0.5] - 0.5
    return np.asarray(out), affine


@pytest.mark.parametrize("size", [256, 512])
def test_ffhq_matches_nvlabs_formula(size: int) -> None:
    image = read_image(SAMPLE)
    # Inside the image (no padding, which PIL alone does not do), at about crop scale.
    landmarks = _landmarks(centre=(256.0, 250.0), scale=1.0)
    reference, reference_matrix = _ffhq_reference(image, landmarks, size)
    matrix = ffhq_matrix(landmarks, size)
    mapped = landmarks @ matrix[:, :2].T + matrix[:, 2]
    expected = landmarks @ reference_matrix[:, :2].T + reference_matrix[:, 2]
    assert np.abs(mapped - expected).max() < 1.0
    crop = warp(image, matrix, size, reflect=True)
    inverse = cv2.invertAffineTransform(matrix)
    grid = np.stack(np.meshgrid(np.arange(size), np.arange(size)), -1).reshape(-1, 2)
    source = grid @ inverse[:, :2].T + inverse[:, 2]
    inside = ((source >= 0) & (source <= np.array(image.shape[1::-1]) - 1)).all(1)
    assert _psnr(crop, reference, inside.reshape(size, size)) >= 25.0


def test_matrix_round_trip_and_paste_back() -> None:
    image = read_image(SAMPLE)
    landmarks = _landmarks(centre=(260.0, 200.0))
    crop, matrix = warp(image, arcface_matrix(landmarks, 112), 112), arcface_matrix(landmarks, 112)
    inverse = cv2.invertAffineTransform(matrix)
    in_crop = landmarks @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(in_crop @ inverse[:, :2].T + inverse[:, 2], landmarks, atol=1e-6)
    pasted = paste_back(image, crop, matrix)
    centre = (int(landmarks[30, 1]), int(landmarks[30, 0]))
    window = (slice(centre[0] - 15, centre[0] + 15), slice(centre[1] - 15, centre[1] + 15))
    assert np.abs(pasted[window].astype(int) - image[window]).mean() < 8  # the same face back
    far = (slice(0, 20), slice(0, 20))
    assert np.array_equal(pasted[far], image[far])  # untouched outside the crop
    edited = paste_back(image, np.zeros_like(crop), matrix)
    assert edited[centre].max() < 40  # the edit is there


def test_ffhq_pads_by_reflection_where_the_square_leaves_the_image() -> None:
    image = read_image(SAMPLE)
    landmarks = _landmarks(centre=(40.0, 60.0), scale=1.2)  # at the corner
    matrix = ffhq_matrix(landmarks, 256)
    padded = warp(image, matrix, 256, reflect=True)
    black = warp(image, matrix, 256, reflect=False)
    assert (black.max(axis=2) == 0).mean() > 0.1  # the square leaves the image
    assert (padded.max(axis=2) == 0).mean() < 0.01  # filled, not black


def test_large_face_is_scaled_down_without_aliasing() -> None:
    """A stripe pattern finer than the crop's pixels averages to grey, not to moire."""
    stripes = np.zeros((2400, 2400, 3), np.uint8)
    stripes[:, ::2] = 255
    landmarks = _landmarks(centre=(1200.0, 1200.0), scale=8.0, angle=0.0)
    crop = warp(stripes, arcface_matrix(landmarks, 112), 112)
    assert crop.std() < 20 and abs(crop.mean() - 127.5) < 20


def test_cli_writes_crops_with_their_records(tmp_path: Path) -> None:
    run = subprocess.run(
        [*CLI, "-i", str(SAMPLE), "--crops", str(tmp_path / "crops"), "--crop-template",
         "ffhq", "--crop-size", "128", "--json", "-", "-q"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    (face,) = json.loads(run.stdout)["faces"]
    info = face["crop"]
    assert info["template"] == "ffhq" and info["size"] == 128
    path = Path(info["file"])
    assert path.name == "astronaut_0.png" and tmp_path / "crops" in path.parents
    assert read_image(path).shape == (128, 128, 3)
    matrix = np.array(info["matrix"])
    reference = ffhq_matrix(np.array(face["landmarks"]), 128)
    np.testing.assert_allclose(matrix, reference, atol=0.05)  # the JSON rounds to 0.01 px


def test_crop_options_without_crops_say_so() -> None:
    run = subprocess.run([*CLI, "--crop-size", "64", "--json", "-", "-q"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0 and "--crop-size is ignored" in run.stderr


def test_crops_never_leave_their_folder(tmp_path: Path) -> None:
    """Inputs from far-apart folders: each crop lands inside --crops, at its place
    below the inputs' common folder."""
    a, b = tmp_path / "x" / "deep" / "a.png", tmp_path / "y" / "b.png"
    for path in (a, b):
        path.parent.mkdir(parents=True)
        path.write_bytes(SAMPLE.read_bytes())
    out = tmp_path / "out" / "crops"
    run = subprocess.run([*CLI, "-i", str(a), str(b), "--crops", str(out), "--json", "-", "-q"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert files == ["x/deep/a_0.png", "y/b_0.png"]


def test_video_crops_are_frame_face(tmp_path: Path) -> None:
    image = read_image(SAMPLE)
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (512, 512))
    for k in range(3):
        writer.write(np.roll(image, 4 * k, axis=1)[..., ::-1].copy())
    writer.release()
    out = tmp_path / "crops"
    run = subprocess.run([*CLI, "-v", str(clip), "--crops", str(out), "--json", "-", "-q"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(records) == 3
    assert sorted(p.name for p in out.iterdir()) == [f"{k:06d}_0.png" for k in range(3)]
    assert all(r["faces"][0]["crop"]["file"].endswith(f"{r['frame']:06d}_0.png") for r in records)


def test_small_faces_are_upsampled_with_one_warning(tmp_path: Path) -> None:
    """Two images whose faces are smaller than a 512 px ArcFace crop: both cropped, one
    warning for the run."""
    inputs = []
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(SAMPLE.read_bytes())
        inputs.append(str(tmp_path / name))
    run = subprocess.run(
        [*CLI, "-i", *inputs, "--crops", str(tmp_path / "crops"), "--crop-size", "512",
         "--json", "-"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("up-sampled") == 1
    assert len(list((tmp_path / "crops").rglob("*.png"))) == 2
