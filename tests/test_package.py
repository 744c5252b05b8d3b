"""The public API surface: the FAN-library drop-in (util/fan_api.py), FaceAligner's
batch and folder calls, the names ``face_alignment`` gives, and the installed package.

Runs the shipped models on the bundled sample (one face) and on a blank image (none).
The install test builds the package from a copy of the repository's files into a fresh
virtual environment, offline, and uses it from another folder.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import face_alignment
import util
from training.paths import REPO, SAMPLES_DIR
from util.aligner import FaceAligner
from util.fan_api import FaceAlignment, LandmarksType, NetworkSize
from util.io import read_image
from util.landmarks import NUM_LANDMARKS

SAMPLE = SAMPLES_DIR / "astronaut.png"


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    return read_image(SAMPLE)


@pytest.fixture(scope="module")
def blank(face: np.ndarray) -> np.ndarray:
    return np.full_like(face, 128)


@pytest.fixture(scope="module")
def fa_2d() -> FaceAlignment:
    return FaceAlignment(LandmarksType.TWO_D, device="cpu", threads=1)


@pytest.fixture(scope="module")
def fa_3d() -> FaceAlignment:
    return FaceAlignment(LandmarksType.THREE_D, device="cpu", threads=1)


def _no_face_warning() -> pytest.WarningsRecorder:
    return pytest.warns(UserWarning, match="No faces were detected")


# -- names --------------------------------------------------------------------------------


def test_face_alignment_gives_the_public_api_of_util() -> None:
    # From a clone face_alignment.py forwards util's names; installed they are its own.
    for name in util.__all__:
        assert getattr(face_alignment, name) is getattr(util, name), name
    assert face_alignment.FaceAlignment is FaceAlignment
    assert callable(face_alignment.main)
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        face_alignment.nothing_here  # noqa: B018


def test_landmarks_type_has_fan_values_and_old_names() -> None:
    assert [int(t) for t in LandmarksType] == [1, 2, 3]  # FAN's TWO_D, TWO_HALF_D, THREE_D
    assert LandmarksType._2D is LandmarksType.TWO_D
    assert LandmarksType._2halfD is LandmarksType.TWO_HALF_D
    assert LandmarksType._3D is LandmarksType.THREE_D
    assert int(NetworkSize.LARGE) == 4


def test_unsupported_choices_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="face_detector 'folder'"):
        FaceAlignment(LandmarksType.TWO_D, face_detector="folder")


def test_fan_options_are_accepted(face: np.ndarray, fa_2d: FaceAlignment) -> None:
    # FAN's default device is CUDA: code that names it still runs, on the CPU.
    with pytest.warns(UserWarning, match="CPU only"):
        fa = FaceAlignment(
            LandmarksType._2D, NetworkSize.LARGE, device="cuda", face_detector="sfd", threads=1
        )
    # FAN 1.5 reads each face with its mirror image by default (flip_input=True).
    assert fa.device == "cpu" and fa.flip_input is True and fa.aligner.flip is True
    np.testing.assert_allclose(fa.get_landmarks(face)[0], fa_2d.get_landmarks(face)[0])


# -- get_landmarks / get_landmarks_from_image ---------------------------------------------


def test_get_landmarks_2d(face: np.ndarray, blank: np.ndarray, fa_2d: FaceAlignment) -> None:
    preds = fa_2d.get_landmarks(face)
    assert isinstance(preds, list) and len(preds) == 1
    assert preds[0].shape == (NUM_LANDMARKS, 2)
    # On the face: inside the detector's box.
    (box,) = fa_2d.get_landmarks_from_image(face, return_bboxes=True)[2]
    assert box.shape == (5,) and 0 < box[4] <= 1
    assert np.all(preds[0] > box[:2] - 10) and np.all(preds[0] < box[2:4] + 10)
    # From a path, as FAN takes it.
    np.testing.assert_allclose(fa_2d.get_landmarks_from_image(str(SAMPLE))[0], preds[0])
    with _no_face_warning():
        assert fa_2d.get_landmarks(blank) is None


def test_get_landmarks_3d(face: np.ndarray, blank: np.ndarray, fa_2d, fa_3d) -> None:  # noqa: ANN001
    preds = fa_3d.get_landmarks(face)
    assert len(preds) == 1 and preds[0].shape == (NUM_LANDMARKS, 3)
    # x, y are the 3D-convention model's, as FAN's THREE_D: on this frontal face near
    # the 2D model's points; TWO_HALF_D gives the same x, y without z.
    xy_2d = fa_2d.get_landmarks(face)[0]
    size = np.sqrt(np.prod(np.ptp(xy_2d, axis=0)))
    assert np.linalg.norm(preds[0][:, :2] - xy_2d, axis=1).mean() < 0.05 * size
    half = FaceAlignment(LandmarksType.TWO_HALF_D, threads=1).get_landmarks(face)
    assert half[0].shape == (NUM_LANDMARKS, 2)
    np.testing.assert_allclose(half[0], preds[0][:, :2])
    with _no_face_warning():
        assert fa_3d.get_landmarks(blank) is None


def test_return_flags_give_fan_tuples(face: np.ndarray, blank, fa_2d) -> None:  # noqa: ANN001
    landmarks, scores, boxes = fa_2d.get_landmarks_from_image(face, return_landmark_score=True)
    assert scores[0].shape == (NUM_LANDMARKS,) and boxes is None
    assert landmarks[0].shape == (NUM_LANDMARKS, 2)
    landmarks, scores, boxes = fa_2d.get_landmarks_from_image(
        face, return_bboxes=True, return_landmark_score=True
    )
    assert scores is not None and boxes[0].shape == (5,)
    with _no_face_warning():
        assert fa_2d.get_landmarks_from_image(blank, return_bboxes=True) == (None, None, None)


def test_detected_faces_skip_detection(face: np.ndarray, fa_2d: FaceAlignment) -> None:
    (box,) = fa_2d.get_landmarks_from_image(face, return_bboxes=True)[2]
    # A box given with a score comes back as given, as FAN returns the boxes it is given.
    landmarks, _, boxes = fa_2d.get_landmarks_from_image(
        face, detected_faces=[box], return_bboxes=True
    )
    np.testing.assert_allclose(boxes[0], box)
    assert landmarks[0].shape == (NUM_LANDMARKS, 2)
    with _no_face_warning():
        assert fa_2d.get_landmarks_from_image(face, detected_faces=[]) is None


# -- batches and folders ------------------------------------------------------------------


def test_get_landmarks_from_batch(face: np.ndarray, blank: np.ndarray, fa_2d) -> None:  # noqa: ANN001
    single = fa_2d.get_landmarks(face)[0]
    batch = np.stack([face, blank])
    # FAN stacks each image's faces into one array and gives [] for an image without one.
    with _no_face_warning():
        preds = fa_2d.get_landmarks_from_batch(batch)
    assert len(preds) == 2 and preds[1] == []
    np.testing.assert_allclose(preds[0], single)
    # FAN's own layout: B x 3 x H x W floats 0-255 (a torch batch as numpy).
    with _no_face_warning():
        channels_first = fa_2d.get_landmarks_from_batch(batch.transpose(0, 3, 1, 2) * 1.0)
    np.testing.assert_allclose(channels_first[0], single)
    with _no_face_warning():
        preds, scores, boxes = fa_2d.get_landmarks_from_batch(
            [face, blank], return_bboxes=True, return_landmark_score=True
        )
    assert scores[0][0].shape == (NUM_LANDMARKS,) and scores[1] is None
    assert boxes[0][0].shape == (5,) and boxes[1] == []
    # Boxes given per image skip detection.
    given = fa_2d.get_landmarks_from_batch([face], detected_faces=[[boxes[0][0]]])
    assert given[0].shape == (NUM_LANDMARKS, 2)


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory: pytest.TempPathFactory, face, blank) -> Path:  # noqa: ANN001
    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(face).save(folder / "a.png")
    Image.fromarray(blank).save(folder / "blank.png")
    (folder / "sub").mkdir()
    Image.fromarray(face).save(folder / "sub" / "b.jpg", quality=95)
    (folder / "broken.png").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("not an image either")
    return folder


def test_get_landmarks_from_directory(photo_folder: Path, fa_2d: FaceAlignment) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no face in blank.png; broken.png unreadable
        results = fa_2d.get_landmarks_from_directory(photo_folder, show_progress_bar=False)
        flat = fa_2d.get_landmarks_from_directory(
            str(photo_folder), recursive=False, show_progress_bar=False
        )
        jpgs = fa_2d.get_landmarks_from_directory(
            photo_folder, extensions=[".JPG"], return_bboxes=True, show_progress_bar=False
        )
    names = {str(photo_folder / n): n for n in ("a.png", "blank.png", "broken.png", "sub/b.jpg")}
    assert set(results) == set(names)
    assert [p.shape for p in results[str(photo_folder / "a.png")]] == [(NUM_LANDMARKS, 2)]
    assert len(results[str(photo_folder / "sub" / "b.jpg")]) == 1
    assert results[str(photo_folder / "blank.png")] is None
    assert results[str(photo_folder / "broken.png")] is None
    assert str(photo_folder / "sub" / "b.jpg") not in flat and len(flat) == 3
    ((landmarks, scores, boxes),) = jpgs.values()
    assert landmarks[0].shape == (NUM_LANDMARKS, 2) and scores is None and boxes[0].shape == (5,)


def test_face_aligner_batch_and_folder(face: np.ndarray, blank, photo_folder) -> None:  # noqa: ANN001
    # FaceAligner's own FAN-style calls: lists throughout, [] for no face, None unreadable.
    aligner = FaceAligner(active_3d=True, flip=False, threads=1)
    batch = aligner.get_landmarks_from_batch([face, blank])
    assert [[p.shape for p in image] for image in batch] == [[(NUM_LANDMARKS, 3)], []]
    results = aligner.get_landmarks_from_directory(photo_folder, show_progress_bar=False)
    assert len(results) == 4
    assert results[str(photo_folder / "broken.png")] is None
    assert results[str(photo_folder / "blank.png")] == []
    assert [p.shape for p in results[str(photo_folder / "sub" / "b.jpg")]] == [(68, 3)]


def test_batch_and_folder_in_3d(face: np.ndarray, blank, photo_folder, fa_3d) -> None:  # noqa: ANN001
    # THREE_D (also under its pre-1.4 name _3D): (68, 3) from batches and folders too.
    assert LandmarksType._3D is fa_3d.landmarks_type is LandmarksType.THREE_D
    with _no_face_warning():
        preds = fa_3d.get_landmarks_from_batch([face, blank])
    assert preds[0].shape == (NUM_LANDMARKS, 3) and preds[1] == []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no face in blank.png; broken.png unreadable
        results = fa_3d.get_landmarks_from_directory(
            photo_folder, recursive=False, return_landmark_score=True, show_progress_bar=False
        )
    landmarks, scores, boxes = results[str(photo_folder / "a.png")]
    assert [p.shape for p in landmarks] == [(NUM_LANDMARKS, 3)] and boxes is None
    assert [s.shape for s in scores] == [(NUM_LANDMARKS,)]
    assert results[str(photo_folder / "blank.png")] == (None, None, None)


def test_face_aligner_fan_calls_in_2d(face: np.ndarray, blank, photo_folder, fa_2d) -> None:  # noqa: ANN001
    # FaceAligner's own calls without active_3d give (68, 2), lists throughout ([] for no
    # face, where the drop-in gives None), and the return flags' tuples.
    aligner = fa_2d.aligner
    batch = aligner.get_landmarks_from_batch([face, blank])
    assert [[p.shape for p in image] for image in batch] == [[(NUM_LANDMARKS, 2)], []]
    landmarks, scores, boxes = aligner.get_landmarks_from_image(
        face, return_bboxes=True, return_landmark_score=True
    )
    assert [p.shape for p in landmarks] == [(NUM_LANDMARKS, 2)]
    assert [s.shape for s in scores] == [(NUM_LANDMARKS,)]
    assert [b.shape for b in boxes] == [(5,)] and 0 < boxes[0][4] <= 1
    assert aligner.get_landmarks_from_image(blank, return_bboxes=True) == ([], None, [])
    assert aligner.get_landmarks_from_image(blank) == []
    results = aligner.get_landmarks_from_directory(photo_folder, show_progress_bar=False)
    assert [p.shape for p in results[str(photo_folder / "a.png")]] == [(NUM_LANDMARKS, 2)]
    assert results[str(photo_folder / "blank.png")] == []


# -- the installed package ----------------------------------------------------------------

INSTALLED_CHECK = """
import importlib.metadata, importlib.util, sys
import numpy as np
import face_alignment
from face_alignment import FaceAlignment, LandmarksType

assert face_alignment.__file__.startswith(sys.prefix), face_alignment.__file__
assert face_alignment.FaceAligner and face_alignment.__version__
assert importlib.util.find_spec("util") is None, "a top-level util module is importable"
tops = {f.parts[0] for f in importlib.metadata.files("face-alignment")}
assert all(t.startswith("face_alignment") or t in {"bin", "..", "Scripts"} for t in tops), tops

rgb = face_alignment.read_image(sys.argv[1])
preds = FaceAlignment(LandmarksType.TWO_D, device="cpu", threads=1).get_landmarks(rgb)
assert [p.shape for p in preds] == [(68, 2)], preds
assert FaceAlignment(LandmarksType._2D, threads=1).get_landmarks(np.zeros_like(rgb)) is None
preds = FaceAlignment(LandmarksType.THREE_D, device="cpu", threads=1).get_landmarks(rgb)
assert [p.shape for p in preds] == [(68, 3)], preds
print("ok")
"""


def _repository_files() -> list[str]:
    """What a clean clone holds (tracked files, and new ones not ignored)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("the install test copies the repository's files with git")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [name for name in listed.split("\0") if name and (REPO / name).is_file()]


def test_installed_package_from_another_folder(tmp_path: Path) -> None:
    """pip install of a clean copy into a fresh venv, offline: the command, the import,
    the drop-in API and the models work from elsewhere; no top-level util."""
    source = tmp_path / "clone"
    for name in _repository_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / "python"
    # No network: the dependencies, pip and setuptools are the running interpreter's,
    # seen through a .pth file (works whether or not that interpreter is itself a venv).
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    outer = [*site.getsitepackages(), sysconfig.get_paths()["purelib"]]
    Path(purelib, "_outer_site.pth").write_text("\n".join(dict.fromkeys(outer)) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
        + ["--no-index", str(source)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cli = subprocess.run(
        [str(bin_dir / "face-alignment"), "-i", str(SAMPLE), "--json", "-", "-q"]
        + ["--threads", "1"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cli.returncode == 0, cli.stderr[-3000:]
    (record,) = [json.loads(line) for line in cli.stdout.splitlines()]
    assert [len(f["landmarks"]) for f in record["faces"]] == [NUM_LANDMARKS]

    api = subprocess.run(
        [str(python), "-c", INSTALLED_CHECK, str(SAMPLE)],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert api.returncode == 0 and api.stdout.strip() == "ok", api.stderr[-3000:]
