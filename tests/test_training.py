"""Training runs end to end (a few steps of a tiny model), and the shipped models keep
their contract: shapes, metadata, size and cost."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training.paths import DATA_300W, MODELS_DIR, REPO

torch = pytest.importorskip("torch")
onnxruntime = pytest.importorskip("onnxruntime")

DATA = DATA_300W
MODELS = MODELS_DIR


def _run(script: str, tmp_path: Path, *extra: str) -> list[dict]:
    cmd = [
        sys.executable,
        "-m",
        f"training.{script.removesuffix('.py')}",
        "--epochs",
        "1",
        "--limit",
        "8",
        "--batch",
        "4",
        "--threads",
        "1",
        "--workdir",
        str(tmp_path / "run"),
        "--out",
        str(tmp_path / "model.onnx"),
        *extra,
    ]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]


def _session(path: Path):
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _spec(session) -> dict:
    return json.loads(session.get_modelmeta().custom_metadata_map["model_spec"])


@pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data/300w is not beside the repo")
def test_train_2d_runs_and_exports_the_fan_contract(tmp_path: Path) -> None:
    log = _run(
        "train_2d.py", tmp_path, "--stacks", "1", "--channels", "16", "--average-decay", "0.9"
    )
    events = [e.get("event") for e in log]
    assert events[0] == "start" and "final" in events
    assert events[-3:] == ["exported", "calibrated", "presence"]
    final = next(e for e in log if e.get("event") == "final")
    assert np.isfinite(final["nme_mean"]) and np.isfinite(final["centroid_nme_mean"])
    session = _session(tmp_path / "model.onnx")
    out = session.run(None, {session.get_inputs()[0].name: np.zeros((2, 3, 256, 256), np.float32)})
    # heatmaps and face presence, for a batch of any size
    assert out[0].shape == (2, 68, 64, 64) and out[1].shape == (2, 1)
    spec = _spec(session)
    assert spec["extra"]["outputs"] == ["heatmaps", "presence"]
    # calibrated on faces it did not train on: the training faces hide the bias
    assert "val (held out)" in spec["extra"]["landmark_offsets_from"]
    assert 0.0 <= spec["extra"]["presence_threshold"] <= 0.5
    assert spec["extra"]["detector_min_score"] in (0.3, 0.4, 0.5)
    assert spec["kind"] == "fan2d" and spec["channel_order"] == "RGB"
    assert spec["extra"]["decode"] in ("dark", "centroid")
    # Calibrated on the training faces: one finite (x, y) offset per landmark.
    offsets = np.asarray(spec["extra"]["landmark_offsets"])
    assert offsets.shape == (68, 2) and np.isfinite(offsets).all()
    # The checkpoint keeps the weight average beside the raw weights, and resumes: a
    # second call with --resume and more epochs continues.
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert state["averaged"].keys() == state["net"].keys()
    log = _run(
        "train_2d.py", tmp_path, "--stacks", "1", "--channels", "16", "--resume", "--epochs", "2",
        "--average-decay", "0.9",
    )  # fmt: skip
    assert any(e.get("event") == "final" for e in log)
    # --init from a narrower network widens it to --channels; --teacher distils from a
    # network of another width.
    log = _run(
        "train_2d.py", tmp_path / "wider", "--stacks", "1", "--channels", "24",
        "--init", str(tmp_path / "run" / "last.pt"), "--teacher", str(tmp_path / "run" / "last.pt"),
    )  # fmt: skip
    start = next(e for e in log if e.get("event") == "start")
    assert start["args"]["channels"] == "24" and "final" in [e.get("event") for e in log]
    assert start["args"]["teacher"].endswith("last.pt")


def test_a_folder_without_faces_stops_a_run_with_its_name(tmp_path: Path) -> None:
    """A training run on a folder with no labelled faces: one line naming it, not an
    IndexError in the validation crops."""
    from training.data import load_folder

    (tmp_path / "photo.jpg").write_bytes(b"")  # unreadable, and without its .pts
    with pytest.raises(SystemExit, match=f"{tmp_path}: no NAME.jpg"):
        load_folder(tmp_path, required=True)
    assert load_folder(tmp_path) == []


def test_a_teacher_without_the_students_maps_is_refused(tmp_path: Path) -> None:
    """Distilling 2D + 3D maps from a 2D-only network would blend in nothing for the 3D
    maps: refused with a message, not a shape error mid-run."""
    from training.model import FAN
    from training.train_2d import load_teacher

    teacher = FAN(1, 16, presence=True)
    path = tmp_path / "teacher.pt"
    torch.save({"config": teacher.config, "net": teacher.state_dict()}, path)
    with pytest.raises(SystemExit, match="gives 68 maps, the student 136"):
        load_teacher(path, FAN(1, 16, presence=True, landmarks_3d=68))
    assert isinstance(load_teacher(path, FAN(1, 24, presence=True)), FAN)


@pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data/300w is not beside the repo")
def test_train_2d_with_3d_maps_and_turns_to_a_total_yaw_exports_both(tmp_path: Path) -> None:
    """The joint run that made the shipped 3D file: every face turned, to a total yaw
    (--wide-total), and the 3D-convention maps exported with the fan3d contract."""
    out_3d = tmp_path / "fan3d.onnx"
    log = _run(
        "train_2d.py", tmp_path, "--stacks", "1", "--channels", "16", "--out-3d", str(out_3d),
        "--turn", "1", "--wide-share", "1", "--wide-total", "--most-3d", "85",
    )  # fmt: skip
    start = next(e for e in log if e.get("event") == "start")
    assert start["args"]["wide_total"] == "True" and "final" in [e.get("event") for e in log]
    session = _session(out_3d)
    out = session.run(None, {session.get_inputs()[0].name: np.zeros((1, 3, 256, 256), np.float32)})
    assert out[0].shape == (1, 68, 64, 64)
    assert _spec(session)["kind"] == "fan3d"


def test_widened_channels_compute_the_same_and_can_learn_apart() -> None:
    from training.model import FAN, count_macs, widen_channels

    torch.manual_seed(0)
    narrow = FAN(stacks=2, channels=16, depth=2, block="post", presence=True, landmarks_3d=68)
    narrow.train()
    narrow(torch.rand(4, 3, 256, 256))  # BatchNorm statistics that are not the defaults
    narrow.eval()
    wide = widen_channels(narrow, 24).eval()
    assert wide.config == narrow.config | {"channels": 24}
    assert count_macs(wide) > 1.5 * count_macs(narrow)
    x = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        (*_, heat), logit = narrow.forward_all(x)
        (*_, wide_heat), wide_logit = wide.forward_all(x)
    torch.testing.assert_close(wide_heat, heat, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(wide_logit, logit, atol=1e-5, rtol=1e-4)
    # A channel and its copy are read with different weights, so they get different
    # gradients and can learn apart.
    weight = wide.hourglasses[0].up.conv1[0].weight.detach()
    columns = weight.transpose(0, 1).flatten(1)  # 24 inputs
    unit = torch.nn.functional.normalize(columns, dim=1)
    copies = [
        (i, j) for i in range(24) for j in range(i + 1, 24) if float(unit[i] @ unit[j]) > 0.9999
    ]
    assert len(copies) == 8  # the 8 new channels, each a copy of an old one
    assert all(not torch.allclose(columns[i], columns[j]) for i, j in copies)
    with pytest.raises(ValueError):
        widen_channels(narrow, 40)  # more than doubling


def test_every_block_kind_gives_the_fan_contract_and_plain_convs_are_full_width() -> None:
    from training.model import BLOCKS, FAN

    torch.manual_seed(0)
    widths = {}
    for block in BLOCKS:
        net = FAN(stacks=1, channels=16, depth=2, block=block).eval()
        with torch.no_grad():
            assert tuple(net(torch.rand(1, 3, 256, 256))[-1].shape) == (1, 68, 64, 64)
        widths[block] = {
            m.out_channels
            for m in net.hourglasses.modules()
            if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)
        }
    # the plain block's point: every 3x3 conv has all the channels (int8 runs them faster)
    assert widths["plain"] == {16} and widths["post"] == {8, 4}


def test_weight_average_moves_by_one_minus_decay_and_copies_counters() -> None:
    from training.loop import WeightAverage, initial_weights

    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    average = WeightAverage(net, decay=0.75)
    before = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(4.0)
    net(torch.randn(4, 2))  # a training-mode step counts a batch in BatchNorm
    average.update()
    assert torch.allclose(average.average[0].weight, before + 1.0)  # a quarter of the way
    assert int(average.average[1].num_batches_tracked) == 1
    assert not average.average.training and not average.average[0].weight.requires_grad
    # A run started from a checkpoint takes the average when it has one.
    assert initial_weights({"net": 1, "averaged": 2}) == 2
    assert initial_weights({"net": 1}) == 1


@pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data/300w is not beside the repo")
def test_train_depth_runs_and_exports_the_depth_contract(tmp_path: Path) -> None:
    log = _run("train_depth.py", tmp_path, "--width", "8")
    assert log[-1]["event"] == "exported"
    session = _session(tmp_path / "model.onnx")
    x = np.zeros((1, 71, 256, 256), np.float32)
    assert session.run(None, {session.get_inputs()[0].name: x})[0].shape == (1, 68)
    spec = _spec(session)
    assert spec["kind"] == "depth" and spec["extra"]["heatmap_sigma"] == 2.0


@pytest.mark.parametrize(
    ("name", "kind", "shape_in", "shape_out", "max_gmacs"),
    [
        # the limit for a 2D model: 1.5 GMACs
        ("fan2d_compact.onnx", "fan2d", (1, 3, 256, 256), (1, 68, 64, 64), 1.5),
        ("fan2d_fast.onnx", "fan2d", (1, 3, 256, 256), (1, 68, 64, 64), 1.5),
        ("depth_compact.onnx", "depth", (1, 71, 256, 256), (1, 68), 1.0),
    ],
)
def test_shipped_model_contract(name, kind, shape_in, shape_out, max_gmacs) -> None:
    path = MODELS / name
    if not path.is_file():
        pytest.skip(f"{path} not trained yet")
    assert path.stat().st_size <= 10 * 1024 * 1024
    session = _session(path)
    out = session.run(None, {session.get_inputs()[0].name: np.zeros(shape_in, np.float32)})
    assert out[0].shape == shape_out
    spec = _spec(session)
    assert spec["kind"] == kind and spec["channel_order"] == "RGB"
    assert spec["input_size"] == [256, 256]
    # The cost is recounted from the architecture recorded in the metadata.
    from training.model import FAN, DepthNet, count_macs

    if kind == "fan2d":  # calibrated (training/calibrate.py): small, per landmark
        offsets = np.asarray(spec["extra"]["landmark_offsets"])
        assert offsets.shape == (68, 2) and np.abs(offsets).max() < 1.5
    config = spec["extra"]["architecture"]
    if kind == "fan2d":
        macs = count_macs(FAN(**config))
    else:
        macs = count_macs(DepthNet(**config), 256, 71)
    assert macs <= max_gmacs * 1e9
    assert abs(macs / 1e9 - spec["extra"]["gmacs"]) < 0.01
