"""Issue 12, the command line as a new user meets it: outputs for several inputs, model
files of the wrong kind, warnings for ignored options, API defaults, and the small things
(exit codes, --max-pixels, --version, drawing sizes and labels).

CLI runs are subprocesses on the tiny random models (see conftest.py), as in test_cli.py.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_cli import (
    SAMPLE,
    assert_no_traceback,
    assert_ok,
    assert_one_line_error,
    json_lines,
    run_cli,
    stderr_lines,
)

from training.paths import MODELS_DIR, REPO
from util.landmarks import NUM_LANDMARKS

MODELS = MODELS_DIR


@pytest.fixture(scope="module")
def models(tiny_models) -> list[str]:  # noqa: ANN001
    return ["--model-2d", str(tiny_models.fan2d)]


def warnings_in(result) -> list[str]:  # noqa: ANN001
    return [line for line in stderr_lines(result) if line.startswith("warning: ")]


# -- model files of the wrong kind ---------------------------------------------------------


def _without_spec(source: Path, target: Path) -> Path:
    """A copy of an ONNX file without its model_spec metadata, as the original FAN files
    come: the tool must fall back on the declared shapes to spot a wrong file."""
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(source))
    del model.metadata_props[:]
    onnx.save(model, str(target))
    return target


def _failing_fan(target: Path) -> Path:
    """A model that declares the FAN shapes but fails when run (a bad internal reshape)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    shape = helper.make_tensor("shape", TensorProto.INT64, [4], [1, 68, 64, 64])
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["input", "shape"], ["output"])],
        "broken",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, 256, 256])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", 68, 64, 64])],
        [shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    extra = {"heatmap_size": 64, "crop_scale": 2.0, "crop_shift_y": 0.0}
    spec = {"kind": "fan2d", "input_size": [256, 256], "extra": extra}
    helper.set_model_props(model, {"model_spec": json.dumps(spec)})
    onnx.save(model, str(target))
    return target


@pytest.mark.parametrize(
    "flags, named, problem",
    [
        (["--model-2d", MODELS / "depth_compact.onnx"], "depth_compact.onnx", "not a 2D"),
        (["--model-2d", MODELS / "blazeface_back.onnx"], "blazeface_back.onnx", "not a 2D"),
        (["-3", "--model-depth", MODELS / "fan2d_compact.onnx"], "fan2d_compact", "not a depth"),
        (["-3", "--model-depth", MODELS / "blazeface_front.onnx"], "blazeface_front", "not a de"),
        (["--detector", MODELS / "depth_compact.onnx"], "depth_compact.onnx", "not a BlazeFace"),
        (["--detector", MODELS / "fan2d_compact.onnx"], "fan2d_compact.onnx", "not a BlazeFace"),
    ],
    ids=["2d=depth", "2d=blazeface", "depth=2d", "depth=blazeface", "det=depth", "det=2d"],
)
def test_wrong_kind_of_model_is_one_line(
    tmp_path: Path, models: list[str], flags: list, named: str, problem: str
) -> None:
    # The wrong file comes after the tiny model's flag, so it wins.
    result = run_cli(*models, "-q", *flags, cwd=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result, named, problem)
    assert list(tmp_path.iterdir()) == []


def test_spec_less_model_of_the_wrong_shape(tmp_path: Path, models: list[str]) -> None:
    """Without a spec, a depth file given as the 2D model (and the reverse) is caught by
    its declared input shape."""
    depth = _without_spec(MODELS / "depth_compact.onnx", tmp_path / "depth_nospec.onnx")
    fan = _without_spec(MODELS / "fan2d_compact.onnx", tmp_path / "fan_nospec.onnx")
    result = run_cli("-q", "--model-2d", depth, cwd=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result, "depth_nospec.onnx", "(1, 71, 256, 256)", "RGB crop")
    result = run_cli(*models, "-q", "-3", "--model-depth", fan, cwd=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result, "fan_nospec.onnx", "68 maps")
    assert not (tmp_path / "output.png").exists()


def test_shape_checks_accept_a_presence_output(tmp_path: Path) -> None:
    """A 2D model may give (N, 1) presence besides the (N, 68, 64, 64) heatmaps, in
    either order; two heatmap outputs or a wrong heatmap size are refused."""
    from types import SimpleNamespace

    from util.landmark_stage import ORIGINAL_FAN_SPEC, LandmarkModel
    from util.runtime import ModelError, spec_facts

    facts = spec_facts(ORIGINAL_FAN_SPEC, "m.onnx")

    def fake(outputs: list[tuple]) -> SimpleNamespace:
        return SimpleNamespace(
            spec=ORIGINAL_FAN_SPEC,
            facts=facts,
            path=Path("m.onnx"),
            input_shapes=[(1, 3, 256, 256)],
            output_shapes=outputs,
        )

    heat, presence = (None, 68, 64, 64), (None, 1)
    for outputs in ([heat], [heat, presence], [presence, heat]):
        LandmarkModel(fake(outputs))
    for outputs in ([heat, heat], [presence], [(None, 68, 32, 32)], [(None, 98, 64, 64)]):
        with pytest.raises(ModelError, match="m.onnx: gives"):
            LandmarkModel(fake(outputs))
    # ailia does not declare shapes: nothing to check.
    LandmarkModel(
        SimpleNamespace(spec=ORIGINAL_FAN_SPEC, facts=facts, input_shapes=None, output_shapes=None)
    )


def test_model_that_fails_when_run_is_one_line(tmp_path: Path) -> None:
    broken = _failing_fan(tmp_path / "broken.onnx")
    result = run_cli("-q", "--model-2d", broken, "-s", "out.png", cwd=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result, "broken.onnx", "cannot run model")
    assert not (tmp_path / "out.png").exists()


# -- outputs for several inputs ------------------------------------------------------------


def test_folder_without_s_saves_one_image_per_input(tmp_path: Path, models: list[str]) -> None:
    """No -s and a folder: a folder the tool names, sub-folders kept, no renaming by
    order; images that differ by suffix only keep it in the name."""
    for name in ("a.png", "sub/a.png", "b.jpg", "b.png"):
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.open(SAMPLE).convert("RGB").save(tmp_path / "in" / name)
    result = run_cli(*models, "-i", "in", cwd=tmp_path)
    assert_ok(result)
    out = tmp_path / "face_alignment_output"
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["a.png", "b_jpg.png", "b_png.png", "sub/a.png"]
    assert "saved 4 images to face_alignment_output/" in result.stderr
    assert not (tmp_path / "output.png").exists()
    assert warnings_in(result) == []


def test_several_files_without_s_keep_their_folders(tmp_path: Path, models: list[str]) -> None:
    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
        shutil.copy(SAMPLE, tmp_path / folder / "face.png")
    result = run_cli(*models, "-q", "-i", "x/face.png", "y/face.png", cwd=tmp_path)
    assert_ok(result)
    out = tmp_path / "face_alignment_output"
    assert (out / "x" / "face.png").is_file() and (out / "y" / "face.png").is_file()
    assert len([p for p in out.rglob("*") if p.is_file()]) == 2


def test_folder_of_one_image_goes_to_the_folder(tmp_path: Path, models: list[str]) -> None:
    (tmp_path / "in").mkdir()
    shutil.copy(SAMPLE, tmp_path / "in" / "only.png")
    assert_ok(run_cli(*models, "-q", "-i", "in", cwd=tmp_path))
    assert (tmp_path / "face_alignment_output" / "only.png").is_file()
    # -s naming a file is what the user asked for with a single image.
    assert_ok(run_cli(*models, "-q", "-i", "in", "-s", "one.png", cwd=tmp_path))
    assert (tmp_path / "one.png").is_file()


@pytest.mark.parametrize("target", ["x.png", "results.jpg", "existing"])
def test_file_name_for_several_inputs_is_an_error(
    tmp_path: Path, models: list[str], target: str
) -> None:
    (tmp_path / "existing").write_text("a file without a suffix\n", encoding="utf-8")
    shutil.copy(SAMPLE, tmp_path / "a.png")
    shutil.copy(SAMPLE, tmp_path / "b.png")
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run_cli(*models, "-q", "-i", "a.png", "b.png", "-s", target, cwd=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result, target, "2 images", "folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no folder made of it


def test_unknown_output_format_fails_before_any_work(tmp_path: Path, models: list[str]) -> None:
    result = run_cli(
        *models, "-q", "-i", SAMPLE, "-s", "out.xyz", "--json", "r.jsonl", cwd=tmp_path
    )
    assert result.returncode == 2
    assert_one_line_error(result, "out.xyz", "unsupported output image format")
    assert list(tmp_path.iterdir()) == []  # not even the JSON file


# -- warnings for ignored options ------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, ignored",
    [
        (["--json", "-", "--pts", "--heatmaps"], ["--pts", "--heatmaps"]),
        (["-s", "o.png", "--smooth"], ["--smooth"]),
        (["-s", "o.png", "-bc", "3"], ["-bc"]),
        (["-s", "o.png", "--model-depth", "elsewhere.onnx"], ["--model-depth"]),
        (["-s", "o.png", "-e", "1"], ["-e/--env_id"]),
    ],
    ids=["pts-heatmaps-json", "smooth", "bc", "model-depth", "env-id"],
)
def test_each_ignored_option_is_warned_once(
    tmp_path: Path, models: list[str], flags: list[str], ignored: list[str]
) -> None:
    result = run_cli(*models, "-q", "--runtime", "onnxruntime", *flags, cwd=tmp_path)
    assert_ok(result)
    warned = warnings_in(result)
    assert len(warned) == len(ignored), warned
    for flag, line in zip(ignored, warned, strict=True):
        assert line.startswith(f"warning: {flag} is ignored: "), line
    if "--json" in flags:
        assert list(tmp_path.iterdir()) == []  # --pts / --heatmaps really wrote nothing
        assert len(json_lines(result.stdout)) == 1


def test_no_warning_when_nothing_is_ignored(tmp_path: Path, models: list[str]) -> None:
    flags = ["-s", "o.png", "--pts", "--heatmaps", "--json", "r.jsonl", "--flip", "off"]
    result = run_cli(*models, "-q", *flags, cwd=tmp_path)
    assert_ok(result)
    assert result.stderr == ""


def test_benchmark_of_several_inputs_says_only_the_first_is_timed(
    tmp_path: Path, models: list[str]
) -> None:
    shutil.copy(SAMPLE, tmp_path / "a.png")
    shutil.copy(SAMPLE, tmp_path / "b.png")
    flags = ["-b", "-bc", "1", "-i", "a.png", "b.png", "--json", "r.jsonl"]
    result = run_cli(*models, "-q", *flags, cwd=tmp_path)
    assert_ok(result)
    warned = warnings_in(result)
    assert len(warned) == 2, warned
    assert warned[0].startswith("warning: --json is ignored: a benchmark")
    assert "only the first input, a.png (1 more" in warned[1]
    assert result.stdout.startswith("a.png:") and "1 runs" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]  # no r.jsonl


@pytest.mark.parametrize("count", ["0", "-3", "many"])
def test_benchmark_count_below_one_is_an_error(
    tmp_path: Path, models: list[str], count: str
) -> None:
    result = run_cli(*models, "-q", "-b", f"--benchmark_count={count}", cwd=tmp_path)
    assert result.returncode == 2
    assert_no_traceback(result)
    assert "error: argument -bc/--benchmark_count" in result.stderr
    assert "median" not in result.stdout


# -- API defaults --------------------------------------------------------------------------


def test_api_defaults_match_the_cli(tmp_path: Path, tiny_models) -> None:  # noqa: ANN001
    from util.aligner import FaceAligner
    from util.io import InputError, read_image

    aligner = FaceAligner(model_2d=tiny_models.fan2d, threads=1)
    assert aligner.flip  # as the CLI for images
    from_path = aligner.align(SAMPLE)
    from_str = aligner.align(str(SAMPLE))
    from_array = aligner.align(read_image(SAMPLE))
    assert len(from_path) == len(from_array) == 1
    np.testing.assert_array_equal(from_path[0].landmarks, from_array[0].landmarks)
    np.testing.assert_array_equal(from_str[0].landmarks, from_array[0].landmarks)
    with pytest.raises(InputError, match="gone.png: file not found"):
        aligner.align(tmp_path / "gone.png")
    # The CLI's default run gives the API's default points (JSON rounds to 0.01).
    result = run_cli("-q", "--model-2d", tiny_models.fan2d, "--json", "-", cwd=tmp_path)
    assert_ok(result)
    (record,) = json_lines(result.stdout)
    np.testing.assert_allclose(record["faces"][0]["landmarks"], from_path[0].landmarks, atol=0.01)


def test_running_modes_pick_the_default_model_and_flip(tiny_models) -> None:  # noqa: ANN001
    """As MediaPipe's running modes: stills get the mirror view, video does not (the
    accurate model for both, as measured); what is given explicitly wins; the CLI's -v
    is the video mode."""
    from util.aligner import FaceAligner
    from util.cli import aligner_options, build_parser

    image = FaceAligner(threads=1)
    video = FaceAligner(running_mode="video", threads=1)
    assert image.landmark_model.model.path.name == "fan2d_compact.int8.onnx" and image.flip
    assert video.landmark_model.model.path.name == "fan2d_compact.int8.onnx" and not video.flip
    given = FaceAligner(model_2d=tiny_models.fan2d, running_mode="video", flip=True, threads=1)
    assert given.landmark_model.model.path == Path(tiny_models.fan2d) and given.flip
    with pytest.raises(ValueError, match="unknown running mode 'live'"):
        FaceAligner(running_mode="live")
    parser = build_parser()
    assert aligner_options(parser.parse_args(["-i", "a.jpg"]))["running_mode"] == "image"
    options = aligner_options(parser.parse_args(["-v", "clip.mp4"]))
    assert options["running_mode"] == "video" and not options["flip"]


def test_video_mode_falls_back_to_the_image_model(monkeypatch, tmp_path: Path) -> None:  # noqa: ANN001
    """A running mode whose model is not installed runs on the image model."""
    from util import aligner

    monkeypatch.setitem(aligner.DEFAULT_MODELS_2D, "video", tmp_path / "gone.onnx")
    assert aligner.default_model_2d("video") == aligner.DEFAULT_MODEL_2D
    assert aligner.default_model_2d("image") == aligner.DEFAULT_MODEL_2D


def test_api_pixel_limit(tiny_models) -> None:  # noqa: ANN001
    from util.aligner import FaceAligner
    from util.io import InputError

    aligner = FaceAligner(model_2d=tiny_models.fan2d, threads=1, max_pixels=1000)
    with pytest.raises(InputError, match=r"512x512 pixels.*limit of 1000 pixels.*--max-pixels"):
        aligner.align(SAMPLE)


# -- small things --------------------------------------------------------------------------


def test_max_pixels_flag(tmp_path: Path, models: list[str]) -> None:
    result = run_cli(*models, "-q", "--max-pixels", "1000", "-s", "o.png", cwd=tmp_path)
    assert result.returncode == 1
    line = assert_one_line_error(result, "astronaut.png", "too large", "1000", "--max-pixels")
    assert "512x512" in line
    assert_ok(run_cli(*models, "-q", "--max-pixels", "262144", "-s", "o.png", cwd=tmp_path))
    assert (tmp_path / "o.png").is_file()
    result = run_cli(*models, "-q", "--max-pixels", "0", cwd=tmp_path)
    assert result.returncode == 2 and "--max-pixels" in result.stderr
    assert_no_traceback(result)


def test_version(tmp_path: Path) -> None:
    from util import __version__

    result = run_cli("--version", cwd=tmp_path)
    assert_ok(result)
    assert result.stdout.strip() == f"face_alignment.py {__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)


def test_every_flag_has_help_and_is_in_the_readme() -> None:
    from util.cli import build_parser

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for action in build_parser()._actions:
        assert action.help, f"{action.option_strings} has no help text"
        long = [s for s in action.option_strings if s.startswith("--")]
        if long and long[0] != "--help":
            # In a row of the flag table (a line starting with "|"), as a whole word.
            rows = (rf"^\|[^\n]*{re.escape(s)}(?![\w-])" for s in long)
            assert any(re.search(row, readme, flags=re.MULTILINE) for row in rows), long


def test_every_exit_code_is_in_the_readme() -> None:
    source = (REPO / "util" / "cli.py").read_text(encoding="utf-8")
    codes = set(re.findall(r"return (\d+)\b", source)) | set(re.findall(r"else (\d+)\b", source))
    codes |= {"2"}  # argparse's usage errors
    assert codes >= {"0", "1", "2", "130"}
    table = (REPO / "README.md").read_text(encoding="utf-8").split("| exit code |")[1]
    documented = set(re.findall(r"^\| (\d+) \|", table, flags=re.MULTILINE))
    assert codes <= documented, codes - documented


def _face(box: tuple[float, float, float, float], with_3d: bool = True):  # noqa: ANN202
    """A fake frontal face filling ``box``."""
    from util.face import Face

    x1, y1, x2, y2 = box
    rng = np.random.default_rng(0)
    unit = rng.uniform(0.1, 0.9, (NUM_LANDMARKS, 2))
    points = np.array([x1, y1]) + unit * [x2 - x1, y2 - y1]
    return Face(
        bbox=np.array(box, np.float64),
        score=0.9,
        landmarks=points,
        landmark_scores=np.ones(NUM_LANDMARKS),
        landmarks_3d=np.column_stack([points, rng.normal(0, 5, NUM_LANDMARKS)])
        if with_3d
        else None,
    )


def test_dot_size_follows_the_face_not_the_image() -> None:
    from util.draw import draw_faces, mark_sizes

    face = _face((50, 50, 150, 150))  # a 100 px face
    assert mark_sizes(face.bbox) == (1, 1)
    small = draw_faces(np.zeros((300, 300, 3), np.uint8), [face])
    large = draw_faces(np.zeros((4000, 4000, 3), np.uint8), [face])
    assert small.any()
    assert (small.any(axis=2)).sum() == (large.any(axis=2)).sum()  # same marks
    big = _face((0, 0, 1000, 1000))
    thickness, radius = mark_sizes(big.bbox)
    assert radius >= 5 and thickness >= 2  # a big face gets bigger marks


def test_heatmap_grid_is_numbered() -> None:
    from util.draw import heatmap_grid

    grid = heatmap_grid(np.zeros((NUM_LANDMARKS, 64, 64), np.float32))
    tiles = [
        grid[r * 64 : (r + 1) * 64, c * 64 : (c + 1) * 64] for r in range(6) for c in range(12)
    ]
    background = grid[-1, -1]
    for k in range(NUM_LANDMARKS):
        assert (tiles[k] != background).any(), f"tile {k} has no number"
    assert all((tiles[k] == background).all() for k in range(NUM_LANDMARKS, 72))  # empty
    assert (tiles[3] != tiles[7]).any() and (tiles[12] != tiles[21]).any()  # different numbers


def test_side_panel_is_labelled_and_does_not_grow_with_faces() -> None:
    from util.draw import side_view, with_side_view

    image = np.zeros((400, 600, 3), np.uint8)
    faces = [_face((20 + 150 * k, 100, 140 + 150 * k, 220)) for k in range(3)]
    one = with_side_view(image, faces[:1])
    three = with_side_view(image, faces)
    assert one.shape == three.shape and one.shape[1] == 600 + 200
    empty = side_view([], 400)
    assert empty.shape == (400, 200, 3)
    assert (empty[:28] > 100).any()  # the label at the top
    assert (three[:, 600:] != one[:, 600:]).any()  # all three faces drawn in the panel
