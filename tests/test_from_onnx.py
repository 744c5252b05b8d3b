"""training/from_onnx.py: a training checkpoint from an exported FAN file computes what
the file does, and its BatchNorms carry statistics, not identities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training.export import export_onnx
from training.from_onnx import checkpoint_from_onnx, load_checkpoint
from training.model import FAN, LastStack
from util.runtime import ModelSpec

CONFIG = {"stacks": 2, "channels": 16, "depth": 2, "block": "post", "presence": True}


def _exported(tmp_path: Path, part: str, **config) -> tuple[FAN, Path, list[np.ndarray]]:
    """A small random FAN with non-trivial BatchNorm statistics, exported as the
    training exports its 2D or 3D part, and crops to import it with."""
    torch.manual_seed(0)
    net = FAN(**(CONFIG | config))
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    net.eval()
    kind = "fan2d" if part == "2d" else "fan3d"
    outputs = ["heatmaps", "presence"] if part == "2d" else ["heatmaps"]
    crop = {"crop_scale": 1.5, "crop_shift_y": 0.07}
    spec = ModelSpec(kind=kind, input_size=(256, 256), extra={"architecture": net.config} | crop)
    path = tmp_path / f"{kind}.onnx"
    export_onnx(LastStack(net, part), path, spec, output_name=outputs)
    rng = np.random.default_rng(0)
    inputs = [rng.random((1, 3, 256, 256), dtype=np.float32) for _ in range(8)]
    return net, path, inputs


def _imported(checkpoint: dict) -> FAN:
    net = FAN(**checkpoint["config"])
    net.load_state_dict(checkpoint["net"])
    return net


@pytest.mark.parametrize(("part", "block"), [("2d", "post"), ("3d", "post"), ("2d", "plain")])
def test_an_imported_file_computes_what_the_network_did(
    tmp_path: Path, part: str, block: str
) -> None:
    original, path, inputs = _exported(tmp_path, part, landmarks_3d=68, block=block)
    checkpoint = checkpoint_from_onnx(path, inputs)
    assert checkpoint["copied_maps"] == ("3d" if part == "2d" else "2d")
    net = _imported(checkpoint).eval()
    x = torch.from_numpy(np.concatenate(inputs))
    with torch.no_grad():
        want, got = LastStack(original, part)(x), LastStack(net, part)(x)
    want, got = (want, got) if part == "2d" else ((want,), (got,))
    for a, b in zip(want, got, strict=True):
        assert torch.allclose(a, b, atol=1e-4)
    # The missing part's maps start as copies of the file's.
    head = net.heads[-1].weight
    assert torch.equal(head[:68], head[68:])


def test_imported_batchnorms_hold_the_crops_statistics(tmp_path: Path) -> None:
    """In training mode a batch normalises by its own statistics: with the measured
    ones in the BatchNorms, the network computes nearly what it does in eval mode on
    such crops; with identities there (the folded form) it would not."""
    _, path, inputs = _exported(tmp_path, "2d")
    net = _imported(checkpoint_from_onnx(path, inputs))
    bn = net.stem[1]
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    x = torch.from_numpy(np.concatenate(inputs))
    with torch.no_grad():
        evaluated = LastStack(net.eval())(x)[0]
        trained = LastStack(net.train())(x)[0]
    spread = float(evaluated.std())
    assert float((evaluated - trained).abs().mean()) < 0.05 * spread


def test_files_that_cannot_be_imported_are_refused_by_name(tmp_path: Path) -> None:
    _, path, inputs = _exported(tmp_path, "2d", block="pre")
    with pytest.raises(ValueError, match=f"{path.name}.*'pre'"):
        checkpoint_from_onnx(path, inputs)
    depth = Path(__file__).resolve().parents[1] / "models" / "depth_compact.onnx"
    if depth.is_file():
        with pytest.raises(SystemExit, match="depth_compact.onnx: not one of our FAN files"):
            load_checkpoint(depth)


def test_an_imported_2d_file_teaches_only_the_2d_maps(tmp_path: Path, monkeypatch) -> None:
    """Its 3D maps are copies of the 2D ones: a student with 3D maps is refused, a
    2D-only one is taught by the file's 2D maps (the teacher's first ones)."""
    from training import from_onnx
    from training.train_2d import load_teacher

    _, path, inputs = _exported(tmp_path, "2d", landmarks_3d=68)
    imported = from_onnx.checkpoint_from_onnx
    monkeypatch.setattr(from_onnx, "checkpoint_from_onnx", lambda p: imported(p, inputs))
    with pytest.raises(SystemExit, match="holds no 3D maps to teach"):
        load_teacher(path, FAN(**CONFIG, landmarks_3d=68))
    teacher = load_teacher(path, FAN(**CONFIG))
    assert teacher.heads[-1].out_channels == 136
