"""Shared test set-up: tiny models with the real contracts.

The tiny models are random networks in the exact format of the shipped ones (FAN:
1x3x256x256 -> 1x68x64x64, depth: 1x71x256x256 -> 1x68, spec in the ONNX metadata),
so pipeline and CLI tests run without the trained weights and without /tmp files.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest

from training.paths import SAMPLES_DIR

SAMPLE = SAMPLES_DIR / "astronaut.png"


@dataclass(frozen=True)
class TinyModels:
    fan2d: Path
    depth: Path
    fan2d_presence: Path  # our contract: heatmaps and a presence output
    fan3d: Path  # the 3D-convention part of a network with both conventions' maps


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    """A 1-stack, 16-channel FAN and an 8-wide DepthNet, exported as the real ones are."""
    torch = pytest.importorskip("torch", reason="torch builds the tiny test models")
    from training.export import export_onnx
    from training.model import FAN, DepthNet, LastStack
    from util.depth import ORIGINAL_DEPTH_SPEC
    from util.landmark_stage import ORIGINAL_FAN_SPEC

    folder = tmp_path_factory.mktemp("tiny_models")
    torch.manual_seed(0)
    # The original FAN files' specs (what a spec-less FAN-format ONNX gets), centred crop.
    fan_spec = dataclasses.replace(
        ORIGINAL_FAN_SPEC, extra=ORIGINAL_FAN_SPEC.extra | {"crop_shift_y": 0.0}
    )
    models = TinyModels(
        folder / "fan2d_tiny.onnx",
        folder / "depth_tiny.onnx",
        folder / "fan2d_presence.onnx",
        folder / "fan3d_tiny.onnx",
    )
    export_onnx(LastStack(FAN(stacks=1, channels=16, depth=2)), models.fan2d, fan_spec)
    presence_spec = dataclasses.replace(
        fan_spec,
        extra=fan_spec.extra | {"outputs": ["heatmaps", "presence"], "presence_threshold": 0.5},
    )
    export_onnx(
        LastStack(FAN(stacks=1, channels=16, depth=2, block="post", presence=True)),
        models.fan2d_presence,
        presence_spec,
        output_name=["heatmaps", "presence"],
    )
    export_onnx(DepthNet(width=8), models.depth, ORIGINAL_DEPTH_SPEC, input_channels=71)
    both = FAN(stacks=1, channels=16, depth=2, block="post", landmarks_3d=68)
    export_onnx(
        LastStack(both, "3d"), models.fan3d, dataclasses.replace(fan_spec, kind="fan3d")
    )
    return models
