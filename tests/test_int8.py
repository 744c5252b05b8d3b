"""The int8 models: the tool's choice of file, the quantization script on tiny models, and
the shipped int8 file against its fp32 original (same contract, nearly the same points).

The shipped-model tests skip, saying why, when models/NAME.int8.onnx (written by
``python -m training.quantize models/NAME.onnx``) or the validation images are absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.paths import MODELS_DIR, VAL_300W
from util.runtime import ModelError, int8_path, model_for_precision, read_spec

MODELS = MODELS_DIR
VAL = VAL_300W
# Varied val faces (every 42nd of the sorted set, as in test_accuracy.py).
VAL_IMAGES = ["helen_2968784797_1", "helen_3022230063_1", "helen_307494478_1"]
# Mean distance between the int8 and fp32 landmarks over the inter-ocular distance, per
# face. Measured on these faces: 0.4 to 0.5 % (0.8 to 1.0 % with the moving-average
# calibration; the models' own error is about 4 %); a broken quantization is far above.
MAX_SHIFT_IO = 0.015

PAIRS = [
    (MODELS / "fan2d_compact.onnx", MODELS / "fan2d_compact.int8.onnx"),
    (MODELS / "fan2d_fast.onnx", MODELS / "fan2d_fast.int8.onnx"),
    (MODELS / "depth_compact.onnx", MODELS / "depth_compact.int8.onnx"),
]


def _session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _contract(path: Path) -> tuple[list, list]:
    session = _session(path)
    inputs = [(i.name, i.shape, i.type) for i in session.get_inputs()]
    outputs = [(o.name, o.shape, o.type) for o in session.get_outputs()]
    return inputs, outputs


def _spec_without_precision(path: Path) -> dict:
    """The spec less what quantization adds or corrects (the landmark offsets get the
    int8 model's own bias added, or are measured on its own outputs) and the siblings
    each file names at its own precision."""
    data = read_spec(path).to_dict()
    for key in ("precision", "quantization", "landmark_offsets", "landmark_offsets_from",
                "landmark_offsets_per_yaw", "presence_referee", "mirror_model"):  # fmt: skip
        data["extra"].pop(key, None)
    return data


# --------------------------------------------------------------------------- file choice


def test_precision_picks_the_int8_file_beside_the_default(tmp_path: Path) -> None:
    fp32 = tmp_path / "model.onnx"
    fp32.write_bytes(b"")
    assert int8_path(fp32) == tmp_path / "model.int8.onnx"
    # No int8 file: fp32 whatever is asked.
    assert model_for_precision(fp32, "int8", "onnxruntime") == fp32
    int8_path(fp32).write_bytes(b"")
    assert model_for_precision(fp32, "int8", "onnxruntime") == int8_path(fp32)
    assert model_for_precision(fp32, "fp32", "onnxruntime") == fp32
    # ailia is not tested with quantized graphs: it keeps fp32.
    assert model_for_precision(fp32, "int8", "ailia") == fp32
    with pytest.raises(ModelError, match="precision"):
        model_for_precision(fp32, "int4", "onnxruntime")


def test_cli_has_a_precision_flag() -> None:
    from util.cli import build_parser

    parser = build_parser()
    assert parser.parse_args([]).precision == "int8"
    assert parser.parse_args(["--precision", "fp32"]).precision == "fp32"
    with pytest.raises(SystemExit):
        parser.parse_args(["--precision", "int4"])


# --------------------------------------------------------------------------- the script


def _two_output_fan(path: Path, spec) -> None:
    """A tiny FAN with a second output "presence" (N, 1), as the next 2D model may have."""
    torch = pytest.importorskip("torch")
    from training.export import write_spec
    from training.model import FAN, LastStack

    class WithPresence(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fan = LastStack(FAN(stacks=1, channels=16, depth=2))

        def forward(self, x):
            maps = self.fan(x)
            return maps, torch.sigmoid(maps.mean(dim=(2, 3)).mean(dim=1, keepdim=True))

    torch.manual_seed(0)
    tmp = path.with_suffix(".raw.onnx")
    with torch.no_grad():
        torch.onnx.export(
            WithPresence().eval(),
            (torch.zeros(1, 3, 256, 256),),
            str(tmp),
            input_names=["input"],
            output_names=["output", "presence"],
            opset_version=17,
            dynamo=False,
        )
    write_spec(tmp, spec, path)


@pytest.mark.parametrize("which", ["fan2d", "fan2d_presence", "depth"])
def test_quantize_keeps_the_contract_and_spec(tmp_path: Path, tiny_models, which: str) -> None:
    pytest.importorskip("onnxruntime.quantization")
    from training import quantize

    source = {"fan2d": tiny_models.fan2d, "depth": tiny_models.depth}.get(which)
    if source is None:
        source = tmp_path / "fan2d_presence.onnx"
        _two_output_fan(source, read_spec(tiny_models.fan2d))
    spec = read_spec(source)
    rng = np.random.default_rng(0)
    channels = 71 if spec.kind == "depth" else 3
    inputs = [rng.random((1, channels, 256, 256), dtype=np.float32) for _ in range(4)]
    out = int8_path(tmp_path / source.name)
    quantize.quantize(source, out, inputs, spec)

    assert _contract(out) == _contract(source)
    assert _spec_without_precision(out) == _spec_without_precision(source)
    extra = read_spec(out).extra
    assert extra["precision"] == "int8"
    assert extra["quantization"]["activations"] == "uint8"
    assert extra["quantization"]["weights"].startswith("int8")
    ops = {n.op_type for n in __import__("onnx").load(str(out)).graph.node}
    assert "QuantizeLinear" in ops or "QLinearConv" in ops
    # It runs and gives outputs of the original's shapes.
    fp32 = _session(source).run(None, {"input": inputs[0]})
    int8 = _session(out).run(None, {"input": inputs[0]})
    assert [a.shape for a in int8] == [a.shape for a in fp32]
    assert all(np.isfinite(a).all() for a in int8)


def test_nodes_after_an_fp32_node_stay_fp32() -> None:
    """A head kept in fp32 stays fp32 to its output: its sigmoid quantized to uint8 on
    face-only ranges gave every non-face a presence of 0.502, above the threshold."""
    helper = pytest.importorskip("onnx").helper
    from training.quantize import fp32_node_names

    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("ReduceMax", ["c"], ["m"], name="pool"),
        helper.make_node("Gemm", ["m", "g"], ["logit"], name="head"),
        helper.make_node("Sigmoid", ["logit"], ["p"], name="sigmoid"),
        helper.make_node("Relu", ["c"], ["maps"], name="maps"),
    ]
    graph = helper.make_graph(nodes, "g", [], [])
    assert fp32_node_names(graph, ("Gemm",), ()) == ["head", "sigmoid"]
    assert fp32_node_names(graph, (), ("pool",)) == ["pool"]  # a named node alone
    assert fp32_node_names(graph, (), ()) == []


def test_quantize_refuses_an_int8_model(tmp_path: Path, tiny_models) -> None:
    pytest.importorskip("onnxruntime.quantization")
    from training import quantize

    spec = read_spec(tiny_models.fan2d)
    out = tmp_path / "tiny.int8.onnx"
    inputs = [np.zeros((1, 3, 256, 256), np.float32)]
    quantize.quantize(tiny_models.fan2d, out, inputs, spec)
    assert quantize.main([str(out), "--out", str(tmp_path / "again.onnx")]) == 2


# --------------------------------------------------------------------------- shipped files


@pytest.mark.parametrize("fp32, int8", PAIRS, ids=["fan2d", "fan2d_fast", "depth"])
def test_shipped_int8_contract_matches_fp32(fp32: Path, int8: Path) -> None:
    if not int8.is_file() or not fp32.is_file():
        pytest.skip(f"no {int8.name} beside {fp32.name} (python -m training.quantize {fp32})")
    assert _contract(int8) == _contract(fp32)
    assert _spec_without_precision(int8) == _spec_without_precision(fp32)
    assert read_spec(int8).extra["precision"] == "int8"
    assert "precision" not in read_spec(fp32).extra
    offsets = [read_spec(p).extra.get("landmark_offsets") for p in (fp32, int8)]
    if offsets[0] is not None:  # corrected by the int8 model's own bias: a small change
        moved = np.linalg.norm(np.subtract(offsets[1], offsets[0]), axis=1)
        assert moved.shape == (68,) and moved.max() < 0.5
    # Each file's yaw term is measured on its own outputs (training/calibrate_3d.py).
    per_yaw = [read_spec(p).extra.get("landmark_offsets_per_yaw") for p in (fp32, int8)]
    if per_yaw[0] is not None:
        assert np.linalg.norm(np.subtract(per_yaw[1], per_yaw[0]), axis=1).max() < 1.5
    # --flip auto's mirror model: the sibling at the same precision.
    mirror = [read_spec(p).extra.get("mirror_model") for p in (fp32, int8)]
    if mirror[0] is not None:
        assert mirror[1] == mirror[0].replace(".onnx", ".int8.onnx")
        assert (fp32.parent / mirror[0]).is_file() and (int8.parent / mirror[1]).is_file()
    meta = {p.key: p.value for p in __import__("onnx").load(str(int8)).metadata_props}
    assert json.loads(meta["model_spec"])["extra"]["precision"] == "int8"


def test_shipped_int8_landmarks_stay_near_fp32() -> None:
    fp32, int8 = PAIRS[0]
    if not int8.is_file():
        pytest.skip(f"no {int8.name} (python -m training.quantize {fp32})")
    if not VAL.is_dir():
        pytest.skip(f"no validation data at {VAL}")
    from training.evaluate import match_annotated
    from util.aligner import FaceAligner
    from util.io import read_image
    from util.landmarks import inter_ocular, read_pts

    aligners = {
        p: FaceAligner(runtime="onnxruntime", threads=1, precision=p) for p in ("fp32", "int8")
    }
    assert aligners["int8"].landmark_model.model.path == int8
    assert aligners["fp32"].landmark_model.model.path == fp32
    shifts = []
    for name in VAL_IMAGES:
        image = read_image(VAL / f"{name}.jpg")
        truth = read_pts(VAL / f"{name}.pts")
        points = {}
        for precision, aligner in aligners.items():
            faces = aligner.align(image)
            index = match_annotated([f.bbox for f in faces], truth)
            assert index is not None, f"{name}: face missed at {precision}"
            points[precision] = faces[index].landmarks
        shift = np.linalg.norm(points["int8"] - points["fp32"], axis=1).mean()
        shifts.append(shift / inter_ocular(truth))
    assert max(shifts) < MAX_SHIFT_IO, shifts


def test_shipped_int8_presence_stays_near_fp32() -> None:
    """The int8 file's presence says what the fp32 one says, on the sample face and on
    crops that hold no face (a uniform grey, noise, the sample's sky corner): the check
    the tool runs by default is the one chosen on fp32."""
    fp32, int8 = PAIRS[0]
    if not int8.is_file():
        pytest.skip(f"no {int8.name} (python -m training.quantize {fp32})")
    from training.paths import SAMPLES_DIR
    from util.io import read_image
    from util.landmark_stage import LandmarkModel
    from util.runtime import load_model

    models = [LandmarkModel(load_model(p, threads=1)) for p in (fp32, int8)]
    if not models[0].has_presence:
        pytest.skip(f"{fp32.name} has no presence output")
    sample = read_image(SAMPLES_DIR / "astronaut.png")
    noise = np.random.default_rng(0).integers(0, 256, sample.shape, dtype=np.uint8)
    grey = np.full_like(sample, 128)
    boxes = [(sample, [172.0, 74, 276, 178]), (noise, [100.0, 100, 300, 300]),
             (grey, [100.0, 100, 300, 300]), (sample, [400.0, 0, 500, 100])]  # fmt: skip
    presence = [
        [m.run_crops([m.crop(image, np.array(box))])[0][1] for image, box in boxes]
        for m in models
    ]
    assert presence[0][0] > 0.9 and presence[1][0] > 0.9
    np.testing.assert_allclose(presence[1], presence[0], atol=0.1)


def test_shipped_int8_presence_is_refereed_by_fp32_inside_its_band() -> None:
    """Inside the band quantize.py measured (the int8 presence of non-faces drifts), the
    fp32 file decides a crop's presence; outside it the int8 reading stands."""
    fp32, int8 = PAIRS[0]
    if not int8.is_file():
        pytest.skip(f"no {int8.name} (python -m training.quantize {fp32})")
    from training.paths import SAMPLES_DIR
    from util.io import read_image
    from util.landmark_stage import ORIGINAL_FAN_SPEC, LandmarkModel, load_landmark_model
    from util.runtime import load_model

    band = read_spec(int8).extra.get("presence_referee")
    if band is None:
        pytest.skip(f"{int8.name} names no presence referee")
    assert band["model"] == fp32.name
    assert band["low"] < read_spec(int8).extra["presence_threshold"] < band["high"]
    refereed = load_landmark_model(int8, ORIGINAL_FAN_SPEC, "fan2d", threads=1)
    assert refereed.referee is not None and refereed.referee.model.path == fp32
    alone, reference = (LandmarkModel(load_model(p, threads=1)) for p in (int8, fp32))
    sample = read_image(SAMPLES_DIR / "astronaut.png")
    # The face, the sky corner, the whole picture, a window on the face's middle.
    boxes = [[172.0, 74, 276, 178], [400.0, 0, 500, 100], [0.0, 0, 512, 512],
             [200.0, 100, 250, 150]]  # fmt: skip
    inside = []
    for box in boxes:
        models = (alone, refereed, reference)
        p = [m.run_crops([m.crop(sample, np.array(box))])[0][1] for m in models]
        inside.append(band["low"] < p[0] < band["high"])
        assert p[1] == pytest.approx(p[2] if inside[-1] else p[0], abs=1e-6), (box, p)
    assert any(inside) and not all(inside)


@pytest.fixture
def int8_alone(tmp_path: Path) -> Path:
    """A copy of the shipped int8 2D file in a folder without its fp32 referee."""
    import shutil

    int8 = PAIRS[0][1]
    if not int8.is_file() or "presence_referee" not in read_spec(int8).extra:
        pytest.skip(f"no {int8.name} with a presence referee")
    (tmp_path / "alone").mkdir()
    return Path(shutil.copy(int8, tmp_path / "alone" / int8.name))


def test_int8_file_without_its_referee_warns_and_runs_alone(int8_alone: Path) -> None:
    from util.landmark_stage import ORIGINAL_FAN_SPEC, load_landmark_model

    with pytest.warns(UserWarning, match=f"{PAIRS[0][0].name} is not beside it"):
        model = load_landmark_model(int8_alone, ORIGINAL_FAN_SPEC, "fan2d", threads=1)
    assert model.referee is None and model.has_presence


def test_cli_says_in_one_line_that_an_int8_file_runs_without_its_referee(
    int8_alone: Path, tmp_path: Path
) -> None:
    import subprocess
    import sys

    from training.paths import REPO

    cli = [sys.executable, str(REPO / "face_alignment.py"), "--threads", "1", "-q"]
    done = subprocess.run(
        [*cli, "--model-2d", str(int8_alone), "-s", str(tmp_path / "out.png")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    # One line for the missing referee, one for the missing --flip auto mirror model.
    assert len(lines) == 2 and all(line.startswith("warning: ") for line in lines), done.stderr
    assert PAIRS[0][0].name in lines[0] and "Traceback" not in done.stderr
    assert "fan2d_fast.int8.onnx is missing" in lines[1]
