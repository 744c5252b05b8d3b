"""Heatmap losses that weigh the foreground, and an integral (soft-argmax) loss.

Plain MSE on 64x64 maps with a 68-point foreground of a few pixels each is dominated by
the background and stalls near the all-zero map; these losses do not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def foreground_weight(
    target: torch.Tensor, weight: float = 10.0, threshold: float = 0.2
) -> torch.Tensor:
    """1 on the background, 1 + weight on the dilated foreground (AWing's weight map)."""
    mask = F.max_pool2d((target > threshold).float(), 3, 1, 1)
    return 1.0 + weight * mask


def adaptive_wing(
    pred: torch.Tensor,
    target: torch.Tensor,
    weight_map: torch.Tensor,
    alpha: float = 2.1,
    omega: float = 14.0,
    epsilon: float = 1.0,
    theta: float = 0.5,
) -> torch.Tensor:
    """Adaptive wing loss (Wang et al., ICCV 2019), weighted, averaged over elements."""
    diff = (pred - target).abs()
    power = alpha - target
    ratio = theta / epsilon
    a = omega / (1 + ratio**power) * power * ratio ** (power - 1) / epsilon
    c = theta * a - omega * torch.log1p(ratio**power)
    small = omega * torch.log1p((diff / epsilon).clamp(min=1e-12) ** power)
    loss = torch.where(diff < theta, small, a * diff - c)
    return (loss * weight_map).mean()


def weighted_mse(
    pred: torch.Tensor, target: torch.Tensor, weight_map: torch.Tensor
) -> torch.Tensor:
    return ((pred - target) ** 2 * weight_map).mean()


def relu_centroid(heatmaps: torch.Tensor) -> torch.Tensor:
    """(B, N, H, W) -> (B, N, 2): centroid (x, y) of the positive part of each map.

    For the Gaussian target this is exactly its centre, so this integral loss and the
    heatmap loss agree at their optimum. (A softmax over the map does not: its
    background mass pulls toward the map centre, and the network learned negative
    blobs and border artefacts to counter it, which wrecked the heatmap peaks.)
    """
    positive = F.relu(heatmaps)
    mass = positive.sum((2, 3)).clamp(min=1e-6)
    h, w = heatmaps.shape[2:]
    xs = torch.arange(w, dtype=heatmaps.dtype, device=heatmaps.device)
    ys = torch.arange(h, dtype=heatmaps.dtype, device=heatmaps.device)
    x = (positive.sum(2) * xs).sum(-1) / mass
    y = (positive.sum(3) * ys).sum(-1) / mass
    return torch.stack([x, y], dim=-1)


def integral_loss(heatmaps: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance (heatmap pixels) between the maps' centroids and the targets."""
    return (relu_centroid(heatmaps) - points).abs().sum(-1).mean()
