"""The command line end to end, in subprocesses, with tiny random models of the real format.

What a user sees is what is checked: exit codes, one-line errors that name the file (and
never a traceback), the files written (and no temporary files left), the JSON schema.
The landmarks of a random model are meaningless; only their format is checked here
(accuracy is test_accuracy.py's job, with the trained model).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from test_stages import check_record_schema

from training.paths import REPO, SAMPLES_DIR
from util.landmarks import NUM_LANDMARKS, read_pts

CLI = REPO / "face_alignment.py"
SAMPLE = SAMPLES_DIR / "astronaut.png"
VIDEO_FRAMES = 10
NON_ASCII = "ñandú 顔.png"


# -- helpers -----------------------------------------------------------------------------


def run_cli(*args: str | Path, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python face_alignment.py --threads 1 ARGS`` in ``cwd``; text output captured."""
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    env.pop("DISPLAY", None)  # never open a window
    env.pop("WAYLAND_DISPLAY", None)
    return subprocess.run(
        [sys.executable, str(CLI), "--threads", "1", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
        env=env,
    )


def stderr_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def assert_no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout


def assert_one_line_error(result: subprocess.CompletedProcess, *names: str) -> str:
    """A failure: non-zero exit, no traceback, and (with -q) stderr is one error line
    that names every string in ``names``."""
    assert result.returncode != 0, result.stderr
    assert_no_traceback(result)
    lines = stderr_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)


def leftovers(folder: Path) -> list[Path]:
    """Temporary files an atomic writer could leave: .NAME.xxx.tmp, .NAME.partial..."""
    return [
        p for p in folder.rglob(".*") if p.is_file() and (".tmp" in p.name or ".partial" in p.name)
    ]


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def video_frames(path: Path) -> tuple[int, int, int]:
    """(frames actually decoded, width, height) of a video file."""
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), path
    count, shape = 0, (0, 0)
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        count, shape = count + 1, frame.shape[:2]
    capture.release()
    return count, shape[1], shape[0]


# -- inputs ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tiny_models) -> list[str]:  # noqa: ANN001
    """The flag that points the CLI at the tiny 2D model (--model-depth without -3
    would be warned about as ignored)."""
    return ["--model-2d", str(tiny_models.fan2d)]


@pytest.fixture(scope="module")
def models_3d(tiny_models, models: list[str]) -> list[str]:  # noqa: ANN001
    """The flags that point the CLI at the tiny models, for -3."""
    return [*models, "--model-3d", str(tiny_models.fan3d), "--model-depth", str(tiny_models.depth)]


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return np.asarray(Image.open(SAMPLE).convert("RGB"))


@pytest.fixture(scope="module")
def odd_images(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray) -> Path:
    """Images that are unusual but valid: every one must work."""
    folder = tmp_path_factory.mktemp("odd")
    rgb = Image.fromarray(astronaut)
    rgb.save(folder / "good.png")
    rgb.convert("L").save(folder / "grey.png")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(160)
    rgba.save(folder / "alpha.png")
    grey16 = np.asarray(rgb.convert("L")).astype(np.uint16) * 257
    Image.fromarray(grey16).save(folder / "grey16.png")
    assert Image.open(folder / "grey16.png").mode.startswith("I;16")
    # Upright it is 512 wide and 400 high; stored turned, with EXIF orientation 6.
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(astronaut[:400]).transpose(Image.Transpose.ROTATE_90).save(
        folder / "exif.jpg", exif=exif.tobytes(), quality=92
    )
    assert Image.open(folder / "exif.jpg").size == (400, 512)
    shutil.copy(SAMPLE, folder / NON_ASCII)
    return folder


def make_bad_file(path: Path, kind: str) -> None:
    """A file that cannot be read as an image, of the given kind."""
    if kind == "text":
        path.write_text("this is a text file with an image's name\n", encoding="utf-8")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        data = SAMPLE.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif kind == "huge":
        Image.new("1", (20000, 20000)).save(path)  # 400 megapixels, ~50 kB on disk
        assert path.stat().st_size < 200_000
    elif kind == "big":
        # 108 megapixels: past our limit, below Pillow's own error (but not its warning).
        Image.new("1", (12000, 9000)).save(path)
    elif kind != "missing":
        raise ValueError(kind)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray) -> Path:
    """A 10-frame mp4v video of the astronaut drifting right."""
    path = tmp_path_factory.mktemp("video") / "in.mp4"
    bgr = np.ascontiguousarray(astronaut[..., ::-1])
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (512, 512))
    assert writer.isOpened()
    for i in range(VIDEO_FRAMES):
        writer.write(cv2.warpAffine(bgr, np.float32([[1, 0, 2 * i], [0, 1, 0]]), (512, 512)))
    writer.release()
    assert video_frames(path)[0] == VIDEO_FRAMES
    return path


# -- images that work --------------------------------------------------------------------


def test_default_sample_writes_output_png(tmp_path: Path, models: list[str]) -> None:
    result = run_cli(*models, cwd=tmp_path)
    assert_ok(result)
    assert "saved to output.png" in result.stderr
    out = read_rgb(tmp_path / "output.png")
    assert out.shape == (512, 512, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["output.png"]
    mode = (tmp_path / "output.png").stat().st_mode & 0o777
    assert mode & 0o044, f"output is {oct(mode)}: others cannot read it"


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def test_unusual_images_all_work(tmp_path: Path, models: list[str], odd_images: Path) -> None:
    """Grey, alpha, 16-bit, EXIF-rotated and non-ASCII-named images: faces, no errors."""
    out = tmp_path / "drawn"
    result = run_cli(*models, "-q", "-i", odd_images, "-s", out, "--json", "r.jsonl", cwd=tmp_path)
    assert_ok(result)
    assert result.stderr == ""
    records = json_lines((tmp_path / "r.jsonl").read_text(encoding="utf-8"))
    names = sorted(p.name for p in odd_images.iterdir())
    assert [Path(r["image"]).name for r in records] == names
    by_name = {Path(r["image"]).name: r for r in records}
    for name, record in by_name.items():
        check_record_schema(record, with_3d=False)
        assert record["error"] is None and len(record["faces"]) == 1, name
    # The EXIF orientation is applied: upright size, and the face where it is upright.
    assert (by_name["exif.jpg"]["width"], by_name["exif.jpg"]["height"]) == (512, 400)
    reference = np.array(by_name["good.png"]["faces"][0]["bbox"])
    for name in ("exif.jpg", "grey.png", "grey16.png", "alpha.png", NON_ASCII):
        box = np.array(by_name[name]["faces"][0]["bbox"])
        assert np.abs(box - reference).max() < 12, (name, box, reference)
    drawn = sorted(p.name for p in out.iterdir())
    assert drawn == sorted(Path(n).stem + ".png" for n in names)
    assert read_rgb(out / "exif.png").shape == (400, 512, 3)
    assert leftovers(tmp_path) == []


def test_json_to_stdout_pts_and_heatmaps(tmp_path: Path, models: list[str]) -> None:
    result = run_cli(
        *models, "-q", "-i", SAMPLE, "-s", "out.png", "--pts", "--heatmaps", "--json", "-",
        cwd=tmp_path,
    )  # fmt: skip
    assert_ok(result)
    (record,) = json_lines(result.stdout)
    check_record_schema(record, with_3d=False)
    assert record["image"] == str(SAMPLE) and (record["width"], record["height"]) == (512, 512)
    assert len(record["faces"]) == 1
    points = read_pts(tmp_path / "out.pts")
    assert points.shape == (NUM_LANDMARKS, 2)
    np.testing.assert_allclose(points, record["faces"][0]["landmarks"], atol=0.01)
    grid = read_rgb(tmp_path / "out_heatmaps.png")
    assert grid.shape == (6 * 64, 12 * 64, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png", "out.pts", "out_heatmaps.png"]


def test_active_3d_adds_depth_and_side_panel(tmp_path: Path, models_3d: list[str]) -> None:
    flags = ["-q", "--active-3d", "-s", "out.png", "--json", "r.json"]
    result = run_cli(*models_3d, *flags, cwd=tmp_path)
    assert_ok(result)
    (record,) = json_lines((tmp_path / "r.json").read_text(encoding="utf-8"))
    check_record_schema(record, with_3d=True)
    face = record["faces"][0]
    z = np.asarray(face["landmarks_3d"])[:, 2]
    assert abs(z.mean()) < 0.05  # zero-mean per face (rounded to 0.01 in the JSON)
    # x, y from the 3D-convention model: another network than the 2D one
    assert not np.allclose(np.asarray(face["landmarks_3d"])[:, :2], face["landmarks"], atol=0.1)
    drawn = read_rgb(tmp_path / "out.png")
    assert drawn.shape[0] == 512 and drawn.shape[1] > 512  # the side-view panel
    assert leftovers(tmp_path) == []


def test_save_to_a_folder_by_trailing_slash(tmp_path: Path, models: list[str]) -> None:
    result = run_cli(*models, "-q", "-i", SAMPLE, "-s", "results/", cwd=tmp_path)
    assert_ok(result)
    assert (tmp_path / "results" / "astronaut.png").is_file()


def test_no_face_is_a_warning(tmp_path: Path, models: list[str]) -> None:
    Image.fromarray(np.full((240, 320, 3), 128, np.uint8)).save(tmp_path / "wall.png")
    result = run_cli(*models, "-q", "-i", "wall.png", "-s", "o.png", "--json", "-", cwd=tmp_path)
    assert_ok(result)
    assert stderr_lines(result) == ["warning: wall.png: no face found"]
    (record,) = json_lines(result.stdout)
    assert record["faces"] == [] and record["error"] is None
    assert (tmp_path / "o.png").is_file()  # the (undrawn) image is still written


# -- bad inputs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, name, problem",
    [
        ("missing", "gone.png", "file not found"),
        ("text", "notes.jpg", "not an image"),
        ("empty", "empty.png", "empty file"),
        ("truncated", "cut.png", "corrupt or truncated"),
        ("huge", "huge.png", "too large"),
        ("big", "big.png", "too large (12000x9000 pixels)"),
    ],
)
def test_bad_image_is_one_line_error(
    tmp_path: Path, models: list[str], kind: str, name: str, problem: str
) -> None:
    make_bad_file(tmp_path / name, kind)
    result = run_cli(*models, "-q", "-i", name, "-s", "out.png", cwd=tmp_path)
    assert result.returncode == 1
    assert_one_line_error(result, name, problem)
    assert not (tmp_path / "out.png").exists()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("threads", ["1", "2"])  # 2: two images at a time (folder_threads)
def test_bad_files_do_not_stop_a_folder(tmp_path: Path, models: list[str], threads: str) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(SAMPLE, folder / "a_good.png")
    Image.open(SAMPLE).convert("L").save(folder / "z_grey.png")
    bad = {"b_text.jpg": "text", "c_empty.png": "empty", "d_cut.png": "truncated"}
    bad["e_huge.png"] = "huge"
    for name, kind in bad.items():
        make_bad_file(folder / name, kind)
    flags = ["--threads", threads, "-q", "-i", folder, "-s", "out", "--json", "r.jsonl"]
    result = run_cli(*models, *flags, cwd=tmp_path)
    assert result.returncode == 1
    assert_no_traceback(result)
    errors = stderr_lines(result)
    assert len(errors) == len(bad)
    for line, name in zip(errors, sorted(bad), strict=True):
        assert line.startswith("error: ") and name in line
    records = json_lines((tmp_path / "r.jsonl").read_text(encoding="utf-8"))
    assert [Path(r["image"]).name for r in records] == sorted(p.name for p in folder.iterdir())
    for record in records:
        check_record_schema(record, with_3d=False)
        if Path(record["image"]).name in bad:
            assert record["faces"] == [] and Path(record["image"]).name in record["error"]
            assert record["width"] is None
        else:
            assert record["error"] is None and len(record["faces"]) == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_good.png", "z_grey.png"]
    assert leftovers(tmp_path) == []


def test_folder_without_images(tmp_path: Path, models: list[str]) -> None:
    (tmp_path / "empty_dir").mkdir()
    result = run_cli(*models, "-q", "-i", "empty_dir", cwd=tmp_path)
    assert_one_line_error(result, "empty_dir", "no images")


@pytest.mark.parametrize("flag", ["--model-2d", "--model-depth"])
def test_missing_and_corrupt_models(tmp_path: Path, models_3d: list[str], flag: str) -> None:
    (tmp_path / "corrupt.onnx").write_bytes(b"\x08\x07not a model" * 20)
    for name, problem in (("absent.onnx", "model file not found"), ("corrupt.onnx", "cannot")):
        result = run_cli(*models_3d, "-q", "--active-3d", flag, name, cwd=tmp_path)
        assert result.returncode == 2
        assert_one_line_error(result, name, problem)
    assert not (tmp_path / "output.png").exists()


def test_ailia_runtime_without_ailia(tmp_path: Path, models: list[str]) -> None:
    import importlib.util

    if importlib.util.find_spec("ailia") is not None:
        pytest.skip("the ailia SDK is installed here")
    result = run_cli(*models, "-q", "--runtime", "ailia", cwd=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result, "ailia", "not installed")
    assert not (tmp_path / "output.png").exists()


# -- outputs: never an input, atomic, clear errors ------------------------------------------


def test_never_overwrites_an_input_image(tmp_path: Path, models: list[str]) -> None:
    image = tmp_path / "photo.png"
    shutil.copy(SAMPLE, image)
    before = digest(image)
    result = run_cli(*models, "-q", "-i", image, "-s", image, cwd=tmp_path)
    assert_one_line_error(result, "photo.png", "overwrite")
    result = run_cli(*models, "-q", "-i", image, "--json", "photo.png", cwd=tmp_path)
    assert_one_line_error(result, "photo.png", "overwrite")
    # Saving a folder of images into itself: same-named .png outputs are refused.
    result = run_cli(*models, "-q", "-i", tmp_path, "-s", tmp_path, cwd=tmp_path)
    assert_one_line_error(result, "photo.png", "overwrite")
    assert digest(image) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png"]


def test_pts_never_overwrites_an_annotation_beside_the_input(
    tmp_path: Path, models: list[str]
) -> None:
    """-s into the input folder with --pts: NAME.pts beside NAME.jpg is the user's
    annotation, not an old output."""
    shutil.copy(SAMPLE, tmp_path / "face.jpg")
    (tmp_path / "face.pts").write_text("version: 1\nn_points: 0\n{\n}\n", encoding="utf-8")
    before = digest(tmp_path / "face.pts")
    result = run_cli(*models, "-q", "-i", "face.jpg", "-s", ".", "--pts", cwd=tmp_path)
    assert_one_line_error(result, "face.pts", "overwrite")
    assert digest(tmp_path / "face.pts") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face.jpg", "face.pts"]
    # Elsewhere it is written, readable by others like every output.
    result = run_cli(*models, "-q", "-i", "face.jpg", "-s", "out/", "--pts", cwd=tmp_path)
    assert_ok(result)
    assert (tmp_path / "out" / "face.pts").stat().st_mode & 0o044


def test_never_overwrites_the_input_video(tmp_path: Path, models: list[str], video: Path) -> None:
    source = tmp_path / "clip.mp4"
    shutil.copy(video, source)
    before = digest(source)
    for flags in (["-s", "clip.mp4"], ["--json", "clip.mp4"]):
        result = run_cli(*models, "-q", "-v", "clip.mp4", *flags, cwd=tmp_path)
        assert_one_line_error(result, "clip.mp4", "overwrite")
    assert digest(source) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


@pytest.mark.parametrize(
    "flags, named",
    [
        (["-s", "blocker.txt/out.png"], "blocker.txt"),  # a folder that is a file
        (["-s", "blocker.txt/sub/out.png"], "blocker.txt"),
        (["--json", "blocker.txt/r.jsonl"], "blocker.txt/r.jsonl"),
        (["-s", "x" * 300 + ".png"], "x" * 300),  # name too long for the file system
        (["-s", "out.xyz"], "out.xyz"),  # no encoder for that format
    ],
    ids=["under-a-file", "deep-under-a-file", "json-under-a-file", "name-too-long", "format"],
)
def test_unwritable_image_outputs(
    tmp_path: Path, models: list[str], flags: list[str], named: str
) -> None:
    (tmp_path / "blocker.txt").write_text("a file, not a folder\n", encoding="utf-8")
    result = run_cli(*models, "-q", "-i", SAMPLE, *flags, cwd=tmp_path)
    assert_one_line_error(result, named)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker.txt"]


@pytest.mark.skipif(
    os.name != "posix" or os.geteuid() == 0, reason="root may write into read-only folders"
)
def test_read_only_folder(tmp_path: Path, models: list[str]) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        for flags in (["-s", "locked/out.png"], ["--json", "locked/r.jsonl"]):
            result = run_cli(*models, "-q", "-i", SAMPLE, *flags, cwd=tmp_path)
            assert_one_line_error(result, "locked")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


# -- video -------------------------------------------------------------------------------------


def test_video_in_video_out(tmp_path: Path, models: list[str], video: Path) -> None:
    shutil.copy(video, tmp_path / "vidéo 動画.mp4")  # non-ASCII names in and out
    flags = ["-v", "vidéo 動画.mp4", "-s", "sortie é.mp4", "--json", "v.jsonl"]
    result = run_cli(*models, "-q", *flags, cwd=tmp_path)
    assert_ok(result)
    assert video_frames(tmp_path / "sortie é.mp4") == (VIDEO_FRAMES, 512, 512)
    records = json_lines((tmp_path / "v.jsonl").read_text(encoding="utf-8"))
    assert [r["frame"] for r in records] == list(range(VIDEO_FRAMES))
    for record in records:
        check_record_schema(record, with_3d=False)
        assert record["image"] == "vidéo 動画.mp4" and len(record["faces"]) == 1
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["sortie é.mp4", "v.jsonl", "vidéo 動画.mp4"]


def test_video_smooth_3d(tmp_path: Path, models_3d: list[str], video: Path) -> None:
    result = run_cli(
        *models_3d, "-q", "-v", video, "-s", "out.avi", "--smooth", "--active-3d", "--json", "-",
        cwd=tmp_path,
    )  # fmt: skip
    assert_ok(result)
    frames, width, height = video_frames(tmp_path / "out.avi")
    assert frames == VIDEO_FRAMES and height == 512 and width > 512
    records = json_lines(result.stdout)
    assert len(records) == VIDEO_FRAMES
    for record in records:
        check_record_schema(record, with_3d=True)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", ["missing", "text", "empty", "webcam"])
def test_video_that_does_not_open(tmp_path: Path, models: list[str], kind: str) -> None:
    source = "97" if kind == "webcam" else "clip.mp4"  # webcam 97: there is none
    if kind != "webcam":
        make_bad_file(tmp_path / source, kind)
    flags = ["-s", "out.mp4", "--json", "r.jsonl"]
    result = run_cli(*models, "-q", "-v", source, *flags, cwd=tmp_path)
    assert_one_line_error(result, source)
    assert not (tmp_path / "out.mp4").exists() and not (tmp_path / "r.jsonl").exists()
    assert leftovers(tmp_path) == []


def test_unwritable_video_output(tmp_path: Path, models: list[str], video: Path) -> None:
    (tmp_path / "blocker.txt").write_text("a file\n", encoding="utf-8")
    for target in ("blocker.txt/out.mp4", "out.xyz"):
        result = run_cli(*models, "-q", "-v", video, "-s", target, cwd=tmp_path)
        assert_one_line_error(result, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker.txt"]


# -- benchmark ---------------------------------------------------------------------------------


def test_benchmark_prints_stage_medians(tmp_path: Path, models_3d: list[str]) -> None:
    result = run_cli(*models_3d, "-q", "-b", "-bc", "2", "--active-3d", cwd=tmp_path)
    assert_ok(result)
    lines = result.stdout.splitlines()
    assert "1 face(s)" in lines[0] and "2 runs" in lines[0]
    for stage in ("detect", "landmarks", "depth"):
        (line,) = [x for x in lines if x.split()[:2] == [stage, "median"]]
        assert line.split()[3] == "ms" and float(line.split()[2]) > 0
    assert list(tmp_path.iterdir()) == []  # a benchmark writes nothing
