"""Issue 12, the command line as a new user meets it: outputs for several inputs, model
files of the wrong kind, warnings for ignored options, API defaults, and the small things
(exit codes, --max-pixels, --version, drawing sizes and labels).

CLI runs are subprocesses on the tiny random models (see conftest.py), as in test_cli.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import (
    assert_one_line_error,
    run_cli,
    stderr_lines,
)

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"


@pytest.fixture(scope="module")
def models(tiny_models) -> list[str]:  # noqa: ANN001
    return ["--model-2d", str(tiny_models.fan2d)]


@pytest.fixture(scope="module")
def models_3d(tiny_models, models: list[str]) -> list[str]:  # noqa: ANN001
    return [*models, "--model-depth", str(tiny_models.depth)]


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
    spec = {"kind": "fan2d", "input_size": [256, 256], "extra": {"heatmap_size": 64}}
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

    from util.heatmaps import ORIGINAL_FAN_SPEC, LandmarkModel
    from util.runtime import ModelError

    def fake(outputs: list[tuple]) -> SimpleNamespace:
        return SimpleNamespace(
            spec=ORIGINAL_FAN_SPEC,
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
    LandmarkModel(SimpleNamespace(spec=ORIGINAL_FAN_SPEC, input_shapes=None, output_shapes=None))


def test_model_that_fails_when_run_is_one_line(tmp_path: Path) -> None:
    broken = _failing_fan(tmp_path / "broken.onnx")
    result = run_cli("-q", "--model-2d", broken, "-s", "out.png", cwd=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result, "broken.onnx", "cannot run model")
    assert not (tmp_path / "out.png").exists()
