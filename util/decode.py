"""Heatmaps <-> points: the Gaussian targets, and the sub-pixel decoding of peaks.

A heatmap of size R over a crop of size S: crop pixel u (centre at integer u) sits at
heatmap coordinate (u + 0.5) * R / S - 0.5. Training targets and decoding share these
two functions, so the convention cannot drift apart.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


def crop_to_heatmap(points: np.ndarray, crop_size: int, heatmap_size: int) -> np.ndarray:
    """Crop-pixel coordinates -> heatmap coordinates."""
    ratio = heatmap_size / crop_size
    return (np.asarray(points, dtype=np.float64) + 0.5) * ratio - 0.5


def heatmap_to_crop(points: np.ndarray, crop_size: int, heatmap_size: int) -> np.ndarray:
    """Heatmap coordinates -> crop-pixel coordinates."""
    ratio = crop_size / heatmap_size
    return (np.asarray(points, dtype=np.float64) + 0.5) * ratio - 0.5


def gaussian_maps(points: np.ndarray, size: int, sigma: float) -> np.ndarray:
    """(N, size, size) float32 maps with a unit-peak Gaussian at each sub-pixel point."""
    grid = np.arange(size, dtype=np.float32)
    pts = np.asarray(points, dtype=np.float32)
    gx = np.exp(-((grid[None, :] - pts[:, :1]) ** 2) / (2 * sigma**2))
    gy = np.exp(-((grid[None, :] - pts[:, 1:2]) ** 2) / (2 * sigma**2))
    return gy[:, :, None] * gx[:, None, :]


def _blur(heatmaps: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of (N, H, W) maps (no OpenCV: keeps this module pure)."""
    radius = max(1, int(round(3 * sigma)))
    taps = np.exp(-(np.arange(-radius, radius + 1) ** 2) / (2 * sigma**2))
    taps /= taps.sum()
    padded = np.pad(heatmaps, ((0, 0), (radius, radius), (radius, radius)), mode="edge")
    rows = sum(t * padded[:, i : i + heatmaps.shape[1], :] for i, t in enumerate(taps))
    return sum(t * rows[:, :, i : i + heatmaps.shape[2]] for i, t in enumerate(taps))


def decode_heatmaps(heatmaps: np.ndarray, blur_sigma: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel peaks of (N, H, W) heatmaps -> ((N, 2) heatmap coords (x, y), (N,) scores).

    The integer argmax is refined by a second-order Taylor expansion of the log of the
    (lightly blurred) heatmap around it (DARK, Zhang et al. 2020): for a Gaussian blob
    this recovers the true centre exactly, unlike FAN's quarter-pixel shift. The offset
    is clipped to one pixel; a flat or degenerate peak falls back to FAN's shift.
    """
    maps = np.asarray(heatmaps, dtype=np.float64)
    count, height, width = maps.shape
    flat = maps.reshape(count, -1)
    index = flat.argmax(axis=1)
    scores = flat[np.arange(count), index].astype(np.float32)
    py, px = np.divmod(index, width)

    smooth = np.log(np.maximum(_blur(maps, blur_sigma), 1e-10))
    padded = np.pad(smooth, ((0, 0), (1, 1), (1, 1)), mode="edge")
    n = np.arange(count)
    y, x = py + 1, px + 1

    def at(dy: int, dx: int) -> np.ndarray:
        return padded[n, y + dy, x + dx]

    dx = 0.5 * (at(0, 1) - at(0, -1))
    dy = 0.5 * (at(1, 0) - at(-1, 0))
    dxx = at(0, 1) - 2 * at(0, 0) + at(0, -1)
    dyy = at(1, 0) - 2 * at(0, 0) + at(-1, 0)
    dxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    det = dxx * dyy - dxy**2
    ok = (det > 1e-12) & (dxx < 0) & (dyy < 0)
    safe = np.where(ok, det, 1.0)
    off_x = np.where(ok, -(dyy * dx - dxy * dy) / safe, 0.0)
    off_y = np.where(ok, -(dxx * dy - dxy * dx) / safe, 0.0)

    # FAN's quarter-pixel shift toward the larger neighbour where the expansion fails.
    raw = np.pad(maps, ((0, 0), (1, 1), (1, 1)), mode="edge")
    fan_x = 0.25 * np.sign(raw[n, y, x + 1] - raw[n, y, x - 1])
    fan_y = 0.25 * np.sign(raw[n, y + 1, x] - raw[n, y - 1, x])
    off_x = np.clip(np.where(ok, off_x, fan_x), -1.0, 1.0)
    off_y = np.clip(np.where(ok, off_y, fan_y), -1.0, 1.0)

    points = np.stack([px + off_x, py + off_y], axis=1)
    return points, scores


@lru_cache(maxsize=8)
def _disks(height: int, width: int, radius: float) -> np.ndarray:
    """[height - 1 - y, width - 1 - x] -> the (height, width) mask of the pixels within
    ``radius`` of (x, y): windows of one disk twice the map's size, made once, so each
    decode gathers its masks instead of building distance maps (5x faster decode)."""
    dy = np.arange(-(height - 1), height)[:, None]
    dx = np.arange(-(width - 1), width)[None, :]
    disk = dy**2 + dx**2 <= radius**2
    return np.lib.stride_tricks.sliding_window_view(disk, (height, width))


def positive_centroid(
    heatmaps: np.ndarray, radius: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Centroid (x, y) of the positive part of each map; scores are the peaks.

    The decoding of models trained with an integral loss on that centroid (ours): it
    is exactly what their coordinate loss optimised, and it is unbiased for a Gaussian.
    ``radius`` (heatmap px) keeps only the mass within that distance of the map's
    maximum, so that a stray blob far away (at a crop border, on another face) cannot
    drag the point across the face.
    """
    # The maps stay float32 (the model's output, no float64 copy of them: this runs on
    # every view of every face); only the sums are float64.
    maps = np.asarray(heatmaps, dtype=np.float32)
    count, height, width = maps.shape
    flat = maps.reshape(count, -1)
    peak = flat.argmax(axis=1)
    scores = flat[np.arange(count), peak]
    positive = np.maximum(maps, np.float32(0.0))
    if radius is not None:
        py, px = np.divmod(peak, width)
        positive *= _disks(height, width, float(radius))[height - 1 - py, width - 1 - px]
    columns = positive.sum(axis=1, dtype=np.float64)  # (count, width)
    lines = positive.sum(axis=2, dtype=np.float64)  # (count, height)
    mass = np.maximum(columns.sum(axis=1), 1e-12)
    xs = columns @ np.arange(width, dtype=np.float64) / mass
    ys = lines @ np.arange(height, dtype=np.float64) / mass
    return np.stack([xs, ys], axis=1), scores.astype(np.float32)


def face_roll(points: np.ndarray) -> float:
    """In-plane angle (radians) of the line from the right-eye centre (points 36-41) to
    the left-eye centre (42-47): 0 for an upright face."""
    dx, dy = np.asarray(points[42:48]).mean(0) - np.asarray(points[36:42]).mean(0)
    return float(np.arctan2(dy, dx))


def face_rotation(points: np.ndarray) -> np.ndarray:
    """2x2 rotation from the face's own frame (x along the eye line) to the image's:
    ``vectors @ R.T`` turns face-frame vectors into image ones, ``vectors @ R`` back."""
    angle = face_roll(points)
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def apply_offsets(points: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Add per-landmark offsets given in the face's own frame (x along the eye line),
    rotated by the face's roll: a model's calibration, measured on its training set."""
    rotation = face_rotation(points)
    return np.asarray(points, dtype=np.float64) + np.asarray(offsets) @ rotation.T


def decode(
    heatmaps: np.ndarray, method: str = "dark", radius: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Decode with the method a model's spec names: "dark" (peak + Taylor refinement,
    for FAN-style Gaussian heatmaps) or "centroid" (integral-loss models; ``radius``
    limits it to the mass around the maximum)."""
    if method == "centroid":
        return positive_centroid(heatmaps, radius)
    if method == "dark":
        return decode_heatmaps(heatmaps)
    raise ValueError(f"unknown heatmap decoding {method!r} (dark or centroid)")
