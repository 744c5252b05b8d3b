"""The original FAN-4 architecture (2DFAN-4), for timing against our model only.

Bulat & Tzimiropoulos, "How far are we from solving the 2D & 3D face alignment
problem?", ICCV 2017; the layer shapes follow the reference implementation's ``FAN``
(4 stacks, 256 channels). Random weights: the benchmark measures the cost of the
architecture in the same runtime and thread count as our model, not its accuracy.

    stem: conv 7x7 3->64 stride 2 (128x128), BN, ReLU; ConvBlock 64->128;
          avg-pool 2 (64x64); ConvBlock 128->128; ConvBlock 128->256
    4 x  hourglass of depth 4 (ConvBlock 256->256 at every level, avg-pool down,
          nearest upsample), ConvBlock, conv 1x1 + BN + ReLU, head conv 1x1 -> 68,
          and (except the last) the intermediate-supervision merge back into the trunk

One forward pass at 256x256 is about 25 GMACs (``training.model.count_macs``), the
figure usually quoted for 2DFAN-4 (whose weights file is about 95 MB).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# FAN's block (3x3 convs of C/2, C/4, C/4 concatenated, pre-activated, residual) and
# hourglass are the same in our training code (FAN pools by average); the benchmark
# reuses them so the two cannot drift apart.
from training.model import ConvBlock, Hourglass

FAN4_GMACS_RANGE = (24.0, 26.0)  # sanity range for the MAC count of FAN-4 at 256x256


class FAN4(nn.Module):
    """2DFAN-4: 1x3x256x256 (0-1 RGB) -> every stack's 68 heatmaps of 64x64."""

    def __init__(
        self, stacks: int = 4, channels: int = 256, depth: int = 4, landmarks: int = 68
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = ConvBlock(64, 128)
        self.conv3 = ConvBlock(128, 128)
        self.conv4 = ConvBlock(128, channels)
        self.hourglasses = nn.ModuleList(
            Hourglass(depth, channels, pool="avg") for _ in range(stacks)
        )
        self.top = nn.ModuleList(ConvBlock(channels, channels) for _ in range(stacks))
        self.conv_last = nn.ModuleList(nn.Conv2d(channels, channels, 1) for _ in range(stacks))
        self.bn_end = nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(stacks))
        self.heads = nn.ModuleList(nn.Conv2d(channels, landmarks, 1) for _ in range(stacks))
        self.merge_features = nn.ModuleList(
            nn.Conv2d(channels, channels, 1) for _ in range(stacks - 1)
        )
        self.merge_heads = nn.ModuleList(
            nn.Conv2d(landmarks, channels, 1) for _ in range(stacks - 1)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(x)), True)
        x = F.avg_pool2d(self.conv2(x), 2, stride=2)
        x = self.conv4(self.conv3(x))
        previous, outputs = x, []
        for i in range(len(self.hourglasses)):
            ll = self.top[i](self.hourglasses[i](previous))
            ll = F.relu(self.bn_end[i](self.conv_last[i](ll)), True)
            heat = self.heads[i](ll)
            outputs.append(heat)
            if i < len(self.merge_features):
                previous = previous + self.merge_features[i](ll) + self.merge_heads[i](heat)
        return outputs


def build_fan4(seed: int = 0) -> FAN4:
    """FAN-4 with reproducible random weights, in eval mode."""
    torch.manual_seed(seed)
    return FAN4().eval()


def export_fan4(path: Path, seed: int = 0) -> int:
    """Write FAN-4 (last stack's heatmaps, as the original ONNX) to ``path``; its MACs."""
    from training.export import export_onnx
    from training.model import LastStack, count_macs
    from util.landmark_stage import ORIGINAL_FAN_SPEC

    net = build_fan4(seed)
    macs = count_macs(net)
    export_onnx(LastStack(net), Path(path), ORIGINAL_FAN_SPEC)
    return macs
