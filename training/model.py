"""FAN-style stacked hourglass (Bulat & Tzimiropoulos 2017), sized for a CPU.

Same contract as the original 2DFAN-4: 1x3x256x256 in (0-1 floats), 68 heatmaps of
64x64 out. FAN-4 is 4 stacks of 256 channels (~25 GMACs); this keeps FAN's
multi-scale residual block and intermediate supervision with fewer, narrower stacks
and a lighter stem.
"""

from __future__ import annotations

import torch
from torch import nn


class ConvBlock(nn.Module):
    """FAN's hierarchical, parallel and multi-scale block: 3x3 convs of C/2, C/4, C/4
    channels whose outputs are concatenated, pre-activated, with a residual."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        half, quarter = c_out // 2, c_out // 4
        self.bn1, self.conv1 = nn.BatchNorm2d(c_in), nn.Conv2d(c_in, half, 3, 1, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(half), nn.Conv2d(half, quarter, 3, 1, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(quarter)
        self.conv3 = nn.Conv2d(quarter, c_out - half - quarter, 3, 1, 1, bias=False)
        self.skip = (
            nn.Identity()
            if c_in == c_out
            else nn.Sequential(
                nn.BatchNorm2d(c_in), nn.ReLU(True), nn.Conv2d(c_in, c_out, 1, bias=False)
            )
        )
        self.relu = nn.ReLU(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv1(self.relu(self.bn1(x)))
        b = self.conv2(self.relu(self.bn2(a)))
        c = self.conv3(self.relu(self.bn3(b)))
        return torch.cat([a, b, c], 1) + self.skip(x)


class PostActBlock(nn.Module):
    """The same multi-scale block, post-activated (conv -> BN -> ReLU).

    Measured in onnxruntime on this CPU: as fast as the pre-activated block in fp32,
    but every BatchNorm follows a convolution, so all of them fold into it at export
    and int8 quantization sees plain Conv -> ReLU chains.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        half, quarter = c_out // 2, c_out // 4

        def conv_bn_relu(i: int, o: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(i, o, 3, 1, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(True)
            )

        self.conv1 = conv_bn_relu(c_in, half)
        self.conv2 = conv_bn_relu(half, quarter)
        self.conv3 = conv_bn_relu(quarter, c_out - half - quarter)
        self.skip = (
            nn.Identity()
            if c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv1(x)
        b = self.conv2(a)
        c = self.conv3(b)
        return torch.cat([a, b, c], 1) + self.skip(x)


BLOCKS = {"pre": ConvBlock, "post": PostActBlock}


class Hourglass(nn.Module):
    """Recursive hourglass: a block at this scale, and pool -> deeper -> upsample."""

    def __init__(self, depth: int, channels: int, pool: str = "max", block: str = "pre") -> None:
        super().__init__()
        Block = BLOCKS[block]
        self.up = Block(channels, channels)
        self.down = Block(channels, channels)
        self.inner = (
            Hourglass(depth - 1, channels, pool, block) if depth > 1 else Block(channels, channels)
        )
        self.out = Block(channels, channels)
        # Ours pools by max; the original FAN by average (benchmarks/fan4.py uses that).
        self.pool = nn.MaxPool2d(2, 2) if pool == "max" else nn.AvgPool2d(2, 2)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.out(self.inner(self.down(self.pool(x))))
        return self.up(x) + self.upsample(low)


class FAN(nn.Module):
    """Stacked hourglass; ``forward`` returns every stack's heatmaps (for training).

    With ``presence`` it also has a small face-presence head (``forward_all``): a logit
    from the last stack's pooled features and its heatmaps' maxima, trained with
    non-face crops, so the tool can drop detections that hold no face.
    """

    def __init__(
        self,
        stacks: int = 2,
        channels: int = 96,
        depth: int = 4,
        landmarks: int = 68,
        block: str = "pre",
        presence: bool = False,
    ) -> None:
        super().__init__()
        self.config = {
            "stacks": stacks,
            "channels": channels,
            "depth": depth,
            "block": block,
            "presence": presence,
        }
        Block = BLOCKS[block]
        stem = channels // 2
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem // 2, 7, 2, 3, bias=False),  # 128x128
            nn.BatchNorm2d(stem // 2),
            nn.ReLU(True),
            nn.Conv2d(stem // 2, stem, 3, 2, 1, bias=False),  # 64x64
            nn.BatchNorm2d(stem),
            nn.ReLU(True),
            Block(stem, channels),
        )
        self.hourglasses = nn.ModuleList(
            Hourglass(depth, channels, block=block) for _ in range(stacks)
        )
        self.features = nn.ModuleList(
            nn.Sequential(
                Block(channels, channels),
                nn.Conv2d(channels, channels, 1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(True),
            )
            for _ in range(stacks)
        )
        self.heads = nn.ModuleList(nn.Conv2d(channels, landmarks, 1) for _ in range(stacks))
        self.merge_features = nn.ModuleList(
            nn.Conv2d(channels, channels, 1) for _ in range(stacks - 1)
        )
        self.merge_heads = nn.ModuleList(
            nn.Conv2d(landmarks, channels, 1) for _ in range(stacks - 1)
        )

        self.presence = (
            nn.Sequential(nn.Linear(channels + landmarks, 64), nn.ReLU(True), nn.Linear(64, 1))
            if presence
            else None
        )

    def forward_all(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """(every stack's heatmaps, presence logit (B,) or None)."""
        x = self.stem(x)
        outputs = []
        for i, (hourglass, features, head) in enumerate(
            zip(self.hourglasses, self.features, self.heads, strict=True)
        ):
            feat = features(hourglass(x))
            heat = head(feat)
            outputs.append(heat)
            if i < len(self.merge_features):
                x = x + self.merge_features[i](feat) + self.merge_heads[i](heat)
        logit = None
        if self.presence is not None:
            pooled = torch.cat([feat.mean((2, 3)), heat.amax((2, 3))], 1)
            logit = self.presence(pooled)[:, 0]
        return outputs, logit

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_all(x)[0]


class LastStack(nn.Module):
    """Export wrapper: the last stack's heatmaps, as the original FAN ONNX, and for
    models with a presence head a second output, the probability (N, 1) of a face."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if not hasattr(self.net, "forward_all"):  # e.g. the FAN-4 benchmark network
            return self.net(x)[-1]
        heatmaps, logit = self.net.forward_all(x)
        if logit is None:
            return heatmaps[-1]
        return heatmaps[-1], torch.sigmoid(logit)[:, None]


def count_macs(net: nn.Module, size: int = 256, channels: int = 3) -> int:
    """Multiply-accumulates of one forward pass (convolutions and linear layers)."""
    total = 0

    def hook(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_out = (
                module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            )
            total += output.numel() * per_out
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    handles = [
        m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    was_training = net.training
    net.eval()
    with torch.no_grad():
        net(torch.zeros(1, channels, size, size))
    net.train(was_training)
    for handle in handles:
        handle.remove()
    return total


class DepthNet(nn.Module):
    """Depth from the crop plus 68 Gaussian maps of the 2D points (71 channels).

    The original's contract is 71x256x256; the maps are smooth, so the first layer is
    a 4x4 average pool (exact, cheap), and the rest works at 64x64 and below. The head
    flattens the 4x4 grid instead of pooling it away: where a point sits matters.
    """

    def __init__(self, landmarks: int = 68, width: int = 64) -> None:
        super().__init__()
        self.config = {"width": width}

        def down(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(True),
                nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(True),
            )

        self.pool = nn.AvgPool2d(4)
        self.features = nn.Sequential(
            nn.Conv2d(3 + landmarks, width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(True),  # 64x64
            down(width, width * 3 // 2),  # 32
            down(width * 3 // 2, width * 2),  # 16
            down(width * 2, width * 3),  # 8
            down(width * 3, width * 3),  # 4
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(0.1),
            nn.Linear(width * 3 * 16, 192),
            nn.ReLU(True),
            nn.Linear(192, landmarks),
        )

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        """From the already pooled 71x64x64 input (training makes it directly)."""
        return self.head(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_pooled(self.pool(x))
