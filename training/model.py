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


class PlainBlock(nn.Module):
    """One 3x3 conv of all C channels (conv -> BN -> ReLU) with a residual: about the
    multi-scale block's MACs at 0.8x its width, in one wide convolution.

    Why it exists: onnxruntime's int8 convolutions run narrow outputs slowly (one 3x3
    conv at 64x64, 1 thread, this Intel host: 40 -> 20 channels about 60 GMAC/s,
    64 -> 64 about 210), and the multi-scale block's convs have C/2 and C/4 outputs
    (``python -m benchmarks.architectures --int8`` times both). Trained once, 1 x 64 from
    scratch for 100 minutes (training/runs/fan_plain1): 4.78 % in-training validation,
    behind version 2's multi-scale 2 x 64 (4.22 %) after as long.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)
        )
        self.skip = (
            nn.Identity()
            if c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.skip(x)


BLOCKS = {"pre": ConvBlock, "post": PostActBlock, "plain": PlainBlock}
# Blocks whose every BatchNorm follows a convolution, so export folds them all (a
# pre-activated block keeps BatchNorm nodes): training/from_onnx.py imports only these.
FOLDED_BLOCKS = ("post", "plain")


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

    With ``landmarks_3d`` every stack has a second set of heatmaps after the first
    ``landmarks``: the same points in the 3D convention (projections of the 3D
    landmarks, the far jaw seen through the cheek). One trunk serves both conventions;
    each ships as its own file (``LastStack(net, part)``).
    """

    def __init__(
        self,
        stacks: int = 2,
        channels: int = 96,
        depth: int = 4,
        landmarks: int = 68,
        block: str = "pre",
        presence: bool = False,
        landmarks_3d: int = 0,
    ) -> None:
        super().__init__()
        self.config = {
            "stacks": stacks,
            "channels": channels,
            "depth": depth,
            "block": block,
            "presence": presence,
        } | ({"landmarks_3d": landmarks_3d} if landmarks_3d else {})
        self.landmarks = landmarks
        maps = landmarks + landmarks_3d
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
        self.heads = nn.ModuleList(nn.Conv2d(channels, maps, 1) for _ in range(stacks))
        self.merge_features = nn.ModuleList(
            nn.Conv2d(channels, channels, 1) for _ in range(stacks - 1)
        )
        self.merge_heads = nn.ModuleList(
            nn.Conv2d(maps, channels, 1) for _ in range(stacks - 1)
        )

        self.presence = (
            nn.Sequential(nn.Linear(channels + landmarks, 64), nn.ReLU(True), nn.Linear(64, 1))
            if presence
            else None
        )

    def forward_all(
        self, x: torch.Tensor, last: slice | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """(every stack's heatmaps, presence logit (B,) or None). ``last``: compute only
        these maps of the last stack (an exported part needs no others)."""
        x = self.stem(x)
        outputs = []
        for i, (hourglass, features, head) in enumerate(
            zip(self.hourglasses, self.features, self.heads, strict=True)
        ):
            feat = features(hourglass(x))
            if last is not None and i == len(self.heads) - 1:
                heat = nn.functional.conv2d(feat, head.weight[last], head.bias[last])
            else:
                heat = head(feat)
            outputs.append(heat)
            if i < len(self.merge_features):
                x = x + self.merge_features[i](feat) + self.merge_heads[i](heat)
        logit = None
        if self.presence is not None and (last is None or last.start in (None, 0)):
            # The 2D maps only, so the 2D part's presence needs no 3D maps.
            peaks = heat[:, : self.landmarks].amax((2, 3))
            logit = self.presence(torch.cat([feat.mean((2, 3)), peaks], 1))[:, 0]
        return outputs, logit

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_all(x)[0]


class LastStack(nn.Module):
    """Export wrapper: the last stack's heatmaps, as the original FAN ONNX, and for
    models with a presence head a second output, the probability (N, 1) of a face.

    ``part``: "2d" (the default) or "3d", for a network with both conventions' maps;
    the 3D part has heatmaps only, as 3DFAN-4."""

    def __init__(self, net: nn.Module, part: str = "2d") -> None:
        super().__init__()
        self.net, self.part = net, part

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if not hasattr(self.net, "forward_all"):  # e.g. the FAN-4 benchmark network
            return self.net(x)[-1]
        n = self.net.landmarks
        last = slice(0, n) if self.part == "2d" else slice(n, None)
        heatmaps, logit = self.net.forward_all(x, last)
        if logit is None or self.part != "2d":
            return heatmaps[-1]
        return heatmaps[-1], torch.sigmoid(logit)[:, None]


def widen_to_3d(state: dict, net: FAN) -> None:
    """Load a 2D-only network's weights into ``net`` (which has 3D maps too): the 3D
    heads start as copies of the 2D ones (the conventions agree on frontal faces), and
    what reads the 3D maps starts at zero, so the widened network computes what the
    2D one did."""
    own = net.state_dict()
    n = net.landmarks
    for key, value in state.items():
        target = own[key]
        if target.shape == value.shape:
            own[key] = value
        elif key.startswith("heads."):  # (maps, C, 1, 1) or (maps,)
            own[key] = torch.cat([value, value[: target.shape[0] - n]], 0)
        elif key.startswith("merge_heads.") and key.endswith("weight"):  # (C, maps, 1, 1)
            own[key] = torch.cat([value, torch.zeros_like(value[:, : target.shape[1] - n])], 1)
        else:
            raise ValueError(f"{key}: {tuple(value.shape)} does not fit {tuple(target.shape)}")
    net.load_state_dict(own)


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


def _grown(old: int, new: int, rng: torch.Generator) -> torch.Tensor:
    """Which old channel each of ``new`` channels copies: all old ones in order, then a
    random distinct ``new - old`` of them again."""
    if not old <= new <= 2 * old:
        raise ValueError(f"cannot grow {old} channels to {new} (at most doubling)")
    return torch.cat([torch.arange(old), torch.randperm(old, generator=rng)[: new - old]])


def _trunk_map(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, old: tuple) -> torch.Tensor:
    """A block's output is cat(a, b, c): the old trunk channel of each new one."""
    half, quarter = old[0], old[1]
    return torch.cat([a, b + half, c + half + quarter])


def widen_channels(net: FAN, channels: int, seed: int = 0) -> FAN:
    """``net`` with ``channels`` trunk channels instead of its own, computing the same
    function (Net2WiderNet, Chen et al. 2016): every new channel copies an old one; a
    layer reading copies of one channel gets that channel's weights split between them
    at random (shares summing to one), which keeps the output exact and lets the
    copies learn apart. Post-activated blocks only (every BatchNorm follows a conv).
    """
    config = dict(net.config)
    if config["block"] != "post":
        raise ValueError("widening needs post-activated blocks")
    old_c = config["channels"]
    rng = torch.Generator().manual_seed(seed)
    split = (old_c // 2, old_c // 4, old_c - old_c // 2 - old_c // 4)
    new_split = (channels // 2, channels // 4, channels - channels // 2 - channels // 4)
    a, b, c = (_grown(o, n, rng) for o, n in zip(split, new_split, strict=True))
    trunk = _trunk_map(a, b, c, split)
    stem = _grown(old_c // 2, channels // 2, rng)
    stem_in = _grown(old_c // 4, channels // 4, rng)
    maps = net.heads[0].out_channels
    hidden = net.presence[0].out_features if net.presence is not None else 0
    same = {n: torch.arange(n) for n in (3, maps, net.landmarks, hidden)}

    def maps_for(name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(input map, output map) of the conv / linear layer called ``name``."""
        block_in = stem if name.startswith("stem.6.") else trunk
        table = {
            "stem.0": (same[3], stem_in),
            "stem.3": (stem_in, stem),
            "conv1.0": (block_in, a),
            "conv2.0": (a, b),
            "conv3.0": (b, c),
            "skip.0": (block_in, trunk),
            "heads": (trunk, same[maps]),
            "merge_features": (trunk, trunk),
            "merge_heads": (same[maps], trunk),
            "presence.0": (torch.cat([trunk, old_c + same[net.landmarks]]), same[hidden]),
            "presence.2": (same[hidden], torch.arange(1)),
        }
        if name.startswith("features.") and name.endswith(".1"):
            return trunk, trunk
        for key, value in table.items():
            if name == key or name.endswith("." + key) or name.startswith(key + "."):
                return value
        raise ValueError(f"no channel map for {name}")

    wide = FAN(
        config["stacks"],
        channels,
        config["depth"],
        net.landmarks,
        "post",
        config["presence"],
        config.get("landmarks_3d", 0),
    )
    old_modules = dict(net.named_modules())
    last_out: torch.Tensor | None = None
    with torch.no_grad():
        for name, new in wide.named_modules():
            old = old_modules[name]
            if isinstance(new, nn.Conv2d | nn.Linear):
                src, dst = maps_for(name)
                weight = old.weight[dst][:, src].clone()
                # Split each old input among its copies: random shares summing to one.
                share = torch.rand(len(src), generator=rng) + 0.5
                totals = torch.zeros(int(src.max()) + 1).index_add_(0, src, share)
                shape = (1, -1) + (1,) * (weight.dim() - 2)
                weight *= (share / totals[src]).view(shape)
                new.weight.copy_(weight)
                if new.bias is not None:
                    new.bias.copy_(old.bias[dst])
                last_out = dst
            elif isinstance(new, nn.BatchNorm2d):
                # The BatchNorm after a conv: the conv's output map (the skip's too).
                for key in ("weight", "bias", "running_mean", "running_var"):
                    getattr(new, key).copy_(getattr(old, key)[last_out])
                new.num_batches_tracked.copy_(old.num_batches_tracked)
    return wide
