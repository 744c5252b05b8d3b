"""Heatmaps <-> points: one codec object per model, built from its spec.

A heatmap of size R over a crop of size S: crop pixel u (centre at integer u) sits at
heatmap coordinate (u + 0.5) * R / S - 0.5. Training targets (``encode``) and the
decoding of predictions (``decode``) go through the same ``HeatmapCodec``, so the
convention, the Gaussian's sigma and the decoding method cannot drift apart between
training and the tool: they are read from the model's spec (``util/runtime.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .face_frame import apply_offsets
from .landmarks import MIRROR_PERMUTATION
from .model_facts import CodecFacts, read_facts
from .runtime import ModelSpec


def crop_to_heatmap(points: np.ndarray, crop_size: int, heatmap_size: int) -> np.ndarray:
    """Crop-pixel coordinates -> heatmap coordinates."""
    ratio = heatmap_size / crop_size
    return (np.asarray(points, dtype=np.float64) + 0.5) * ratio - 0.5


def heatmap_to_crop(points: np.ndarray, crop_size: int, heatmap_size: int) -> np.ndarray:
    """Heatmap coordinates -> crop-pixel coordinates."""
    ratio = crop_size / heatmap_size
    return (np.asarray(points, dtype=np.float64) + 0.5) * ratio - 0.5


def gaussian_maps(points: np.ndarray, size: int, sigma: float, pool: int = 1) -> np.ndarray:
    """(N, size, size) float32 maps with a unit-peak Gaussian at each sub-pixel point.

    ``pool`` > 1: the maps' ``pool`` x ``pool`` average pool, (N, size / pool, size /
    pool), computed separably (a Gaussian map is an outer product, and so is its pool).
    """
    grid = np.arange(size, dtype=np.float32)
    pts = np.asarray(points, dtype=np.float32)
    gx = np.exp(-((grid[None, :] - pts[:, :1]) ** 2) / (2 * sigma**2))
    gy = np.exp(-((grid[None, :] - pts[:, 1:2]) ** 2) / (2 * sigma**2))
    if pool > 1:
        gx = gx.reshape(len(pts), -1, pool).mean(-1)
        gy = gy.reshape(len(pts), -1, pool).mean(-1)
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


@lru_cache(maxsize=8)
def _moments(height: int, width: int) -> np.ndarray:
    """(height * width, 3) columns 1, x, y: a map's mass and first moments are then one
    matrix product for all maps (half the time of summing rows and columns)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack([np.ones(height * width, np.float32), xs.ravel(), ys.ravel()], axis=1)


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
    # every view of every face); the product accumulates in float32 too, which moves a
    # point by 1e-5 heatmap px at most against float64 sums.
    maps = np.asarray(heatmaps, dtype=np.float32)
    count, height, width = maps.shape
    flat = maps.reshape(count, -1)
    peak = flat.argmax(axis=1)
    scores = flat[np.arange(count), peak]
    positive = np.maximum(maps, np.float32(0.0))
    if radius is not None:
        py, px = np.divmod(peak, width)
        positive *= _disks(height, width, float(radius))[height - 1 - py, width - 1 - px]
    sums = (positive.reshape(count, -1) @ _moments(height, width)).astype(np.float64)
    mass = np.maximum(sums[:, 0], 1e-12)
    return sums[:, 1:] / mass[:, None], scores.astype(np.float32)


DECODINGS = ("dark", "centroid")


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


@dataclass(frozen=True, eq=False)
class HeatmapCodec:
    """A model's heatmap convention: crop and heatmap sizes, the Gaussian of its training
    targets, how its maps are decoded and calibrated (mmpose's codecs do the same job).

    ``encode`` makes training targets from crop points; ``decode`` turns the model's
    maps back into crop points. Build it with ``from_spec`` so both ends read one spec.
    """

    crop_size: int
    heatmap_size: int
    sigma: float | None = None  # heatmap px; None: unknown (a model trained elsewhere)
    method: str = "dark"  # one of DECODINGS
    centroid_radius: float | None = None  # heatmap px around the maximum, or all the map
    # Per-landmark corrections (heatmap px, face frame) measured on the training set by
    # training/calibrate.py; None for models without them.
    landmark_offsets: np.ndarray | None = None
    # Their change per 90 deg of the face's yaw (training/calibrate_3d.py): a 3D model's
    # bias on real faces grows as they turn (the hidden jaw most). None: no yaw term.
    offsets_per_yaw: np.ndarray | None = None

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> HeatmapCodec:
        """The codec a model's spec describes; what it leaves out takes FAN's defaults:
        landmark maps a quarter of the crop, decoded by "dark". A depth model takes its
        maps at the crop's own size, of sigma 2 crop px (FAN's depth_estimation)."""
        return cls.from_facts(spec, read_facts(CodecFacts, spec.extra, f"{spec.kind} spec"))

    @classmethod
    def from_facts(cls, spec: ModelSpec, facts: CodecFacts) -> HeatmapCodec:
        """``from_spec`` with its codec facts parsed already (as a model loads them)."""
        crop_size = int(spec.input_size[0])
        size, sigma = (crop_size, 2.0) if spec.kind == "depth" else (crop_size // 4, None)
        return cls(
            crop_size=crop_size,
            heatmap_size=size if facts.heatmap_size is None else facts.heatmap_size,
            sigma=sigma if facts.heatmap_sigma is None else facts.heatmap_sigma,
            method=facts.decode,
            centroid_radius=facts.centroid_radius,
            landmark_offsets=facts.landmark_offsets,
            offsets_per_yaw=facts.landmark_offsets_per_yaw,
        )

    def to_heatmap(self, points_crop: np.ndarray) -> np.ndarray:
        """Crop-pixel coordinates -> heatmap coordinates (float64)."""
        if self.heatmap_size == self.crop_size:  # maps at the crop's size: no rounding
            return np.asarray(points_crop, dtype=np.float64)
        return crop_to_heatmap(points_crop, self.crop_size, self.heatmap_size)

    def to_crop(self, points_heatmap: np.ndarray) -> np.ndarray:
        """Heatmap coordinates -> crop-pixel coordinates (float64)."""
        if self.heatmap_size == self.crop_size:
            return np.asarray(points_heatmap, dtype=np.float64)
        return heatmap_to_crop(points_heatmap, self.crop_size, self.heatmap_size)

    def encode(self, points_crop: np.ndarray, pool: int = 1) -> np.ndarray:
        """(N, R, R) float32 target maps (R = heatmap size), a unit-peak Gaussian of the
        codec's sigma at each crop point; ``pool``: their average pool (gaussian_maps)."""
        if self.sigma is None:
            raise ValueError("this model's spec names no heatmap_sigma: cannot make targets")
        return gaussian_maps(self.to_heatmap(points_crop), self.heatmap_size, self.sigma, pool)

    def peaks(self, heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(68, R, R) maps, or (V, 68, R, R) views of one crop -> ((68, 2) heatmap
        coordinates, (68,) float32 scores), uncalibrated.

        Each view is decoded on its own and the points averaged: averaging the maps
        first would let one view's negative lobes eat into the other's peak (measured:
        it spread the points 2 % too wide, 4.17 vs 3.98 % NME on 300w/val).
        """
        views = np.asarray(heatmaps)
        if views.ndim == 3:
            views = views[None]
        decoded = [decode(maps, self.method, self.centroid_radius) for maps in views]
        if len(decoded) == 1:  # video: one view, nothing to average
            return decoded[0][0], decoded[0][1].astype(np.float32)
        points = np.mean([points for points, _ in decoded], axis=0)
        scores = np.mean([view_scores for _, view_scores in decoded], axis=0)
        return points, scores.astype(np.float32)

    def offsets_at(self, yaw: float | None) -> np.ndarray | None:
        """(68, 2) face-frame offsets (heatmap px) for a face at ``yaw`` degrees (the
        shape fit's sign; None or no yaw term: the constant offsets). The yaw term is
        measured on faces turned to positive yaw; a face turned the other way is their
        mirror image, so it gets the term mirrored (points swapped left for right, x
        negated)."""
        if self.offsets_per_yaw is None or yaw is None:
            return self.landmark_offsets
        term = self.offsets_per_yaw * (abs(yaw) / 90.0)
        if yaw < 0:
            term = term[MIRROR_PERMUTATION] * np.array([-1.0, 1.0])
        base = 0.0 if self.landmark_offsets is None else self.landmark_offsets
        return base + term

    def decode(
        self, heatmaps: np.ndarray, yaw: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Maps or views as ``peaks`` takes them -> ((68, 2) crop points, (68,) scores):
        the peaks, corrected (``correct``), in crop pixels."""
        points, scores = self.peaks(heatmaps)
        return self.correct(points, yaw), scores

    def correct(self, peaks: np.ndarray, yaw: float | None = None) -> np.ndarray:
        """(68, 2) heatmap peaks -> crop points, corrected by the model's calibration (at
        ``yaw``: ``offsets_at``)."""
        offsets = self.offsets_at(yaw)
        if offsets is not None:
            peaks = apply_offsets(peaks, offsets)
        return self.to_crop(peaks)
