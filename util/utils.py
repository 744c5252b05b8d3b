"""``face_alignment.utils``: the FAN library's helper functions, with its names and
behaviour (version 1.5.0), for code written against that library (its own tests,
EMOCA, EmoNet, ...). Our own pipeline does not use them: util/crop.py and
util/heatmap_codec.py are its crop and decoding.

Conventions, as FAN's: points are 1-based where FAN's are (``transform``,
``draw_gaussian``); a face box becomes a centre and a scale by REFERENCE_SCALE and
CENTER_Y_OFFSET; heatmaps are 64 x 64. Functions take numpy arrays or, when torch is
installed, torch tensors, and give back torch tensors where FAN does when torch is
there (numpy without it). Torch is never imported unless a tensor is passed or torch
is already loaded.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any

import cv2
import numpy as np

from .landmarks import MIRROR_PERMUTATION, NUM_LANDMARKS

# FAN 1.5's face box -> crop: centre moved up by this share of the box height, and
# scale = (width + height) / REFERENCE_SCALE (a scale of 1 is a 200 px crop).
REFERENCE_SCALE = 195.0
CENTER_Y_OFFSET = 0.12
HEATMAP_SIZE = 64

__all__ = [
    "CENTER_Y_OFFSET",
    "NUM_LANDMARKS",
    "REFERENCE_SCALE",
    "create_bounding_box",
    "create_target_heatmap",
    "crop",
    "draw_gaussian",
    "flip",
    "get_image",
    "get_preds_fromhm",
    "shuffle_lr",
    "transform",
]


def _torch() -> Any | None:
    """The torch module when it is already imported (a tensor exists only then)."""
    return sys.modules.get("torch")


def _is_tensor(value: object) -> bool:
    torch = _torch()
    return torch is not None and isinstance(value, torch.Tensor)


def as_array(value: object) -> np.ndarray:
    """A numpy array of an array, a list or a torch tensor (detached, so one that
    requires grad is taken, as FAN runs under no_grad), without importing torch."""
    if _is_tensor(value):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _like(array: np.ndarray, template: object) -> object:
    """``array`` as a tensor when ``template`` is one."""
    return _torch().from_numpy(np.ascontiguousarray(array)) if _is_tensor(template) else array


def _tensor_if_torch(array: np.ndarray) -> object:
    """A tensor when torch is importable (as FAN returns), else the array."""
    try:
        import torch
    except ImportError:
        return array
    return torch.from_numpy(np.ascontiguousarray(array))


def transform(point: Any, center: Any, scale: float, resolution: float,
              invert: bool = False) -> Any:  # fmt: skip
    """A 1-based point of the image into the ``resolution`` crop around ``center`` of
    ``200 * scale`` pixels (or back, ``invert``), as whole pixels (int)."""
    side = 200.0 * float(as_array(scale))
    cx, cy = (float(v) for v in as_array(center).reshape(-1)[:2])
    res = float(resolution)
    matrix = np.array(
        [[res / side, 0.0, res * (-cx / side + 0.5)], [0.0, res / side, res * (-cy / side + 0.5)],
         [0.0, 0.0, 1.0]]
    )  # fmt: skip
    if invert:
        matrix = np.linalg.inv(matrix)
    x, y = (float(v) for v in as_array(point).reshape(-1)[:2])
    out = (matrix @ np.array([x, y, 1.0]))[:2].astype(np.int32)  # truncated, as FAN's .int()
    return _like(out, point)


def crop(image: np.ndarray, center: Any, scale: float, resolution: float = 256.0) -> np.ndarray:
    """The ``resolution`` x ``resolution`` crop around ``center`` (FAN's crop: the
    square from transform's corners, black outside the image, resized linearly)."""
    image = as_array(image)
    ul = np.asarray(as_array(transform([1, 1], center, scale, resolution, True)), np.int64)
    br = np.asarray(
        as_array(transform([resolution, resolution], center, scale, resolution, True)), np.int64
    )
    height, width = image.shape[:2]
    out = np.zeros((br[1] - ul[1], br[0] - ul[0], *image.shape[2:]), np.uint8)
    # Source and destination ranges, 0-based, half-open.
    x0, x1 = max(0, ul[0]), min(br[0], width)
    y0, y1 = max(0, ul[1]), min(br[1], height)
    if x1 > x0 and y1 > y0:
        out[y0 - ul[1] : y1 - ul[1], x0 - ul[0] : x1 - ul[0]] = image[y0:y1, x0:x1]
    size = int(resolution)
    return cv2.resize(out, (size, size), interpolation=cv2.INTER_LINEAR)


def _gaussian_kernel(size: int) -> np.ndarray:
    """FAN's kernel: a Gaussian of standard deviation size / 4, centred, peak 1."""
    centre = (size - 1) / 2.0
    grid = (np.arange(size) - centre) / (0.25 * size)
    return np.exp(-(grid[None, :] ** 2 + grid[:, None] ** 2) / 2.0).astype(np.float32)


def draw_gaussian(image: np.ndarray, point: Any, sigma: int) -> np.ndarray:
    """Add a Gaussian of 6 * sigma + 1 pixels at the 1-based ``point`` to the map
    ``image`` (in place; values capped at 1), as FAN draws its targets."""
    px, py = (float(v) for v in as_array(point).reshape(-1)[:2])
    size = int(6 * sigma + 1)
    # Top-left of the kernel, 0-based: FAN's floor(point - 3 sigma), 1-based.
    left, top = math.floor(px - 3 * sigma) - 1, math.floor(py - 3 * sigma) - 1
    height, width = image.shape[:2]
    if left >= width or top >= height or left + size <= 0 or top + size <= 0:
        return image
    kernel = _gaussian_kernel(size)
    x0, x1 = max(0, left), min(width, left + size)
    y0, y1 = max(0, top), min(height, top + size)
    image[y0:y1, x0:x1] += kernel[y0 - top : y1 - top, x0 - left : x1 - left]
    image[image > 1] = 1
    return image


def get_preds_fromhm(
    hm: Any, center: Any = None, scale: Any = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(points in heatmap pixels (B, C, 2), the same in the image when ``center`` and
    ``scale`` are given, else zeros, the maps' maxima (B, C)): each map's maximum,
    moved a quarter pixel toward its higher neighbour, as FAN decodes."""
    maps = as_array(hm).astype(np.float32)
    batch, count, height, width = maps.shape
    index = maps.reshape(batch, count, -1).argmax(-1)
    rows, cols = np.divmod(index, width)
    preds = np.stack([cols, rows], -1).astype(np.float32) + 1.0  # 1-based
    inner = (cols > 0) & (cols < width - 1) & (rows > 0) & (rows < height - 1)
    for b, c in zip(*np.nonzero(inner), strict=True):
        r, k, m = rows[b, c], cols[b, c], maps[b, c]
        diff = np.array([m[r, k + 1] - m[r, k - 1], m[r + 1, k] - m[r - 1, k]])
        preds[b, c] += np.sign(diff) * 0.25
    preds -= 0.5
    original = np.zeros_like(preds)
    if center is not None and scale is not None:
        for b in range(batch):
            for c in range(count):
                original[b, c] = as_array(transform(preds[b, c], center, scale, height, True))
    return preds, original, maps.reshape(batch, count, -1).max(-1)


def create_bounding_box(target_landmarks: Any, expansion_factor: float = 0.0) -> Any:
    """(B, 4) boxes x1, y1, x2, y2 of (B, 68, 2) landmarks, each side grown by
    ``expansion_factor`` of the box (half on each end)."""
    points = as_array(target_landmarks).reshape(-1, NUM_LANDMARKS, 2).astype(np.float32)
    low, high = points.min(1), points.max(1)
    grow = (high - low) * expansion_factor / 2.0
    return _like(np.concatenate([low - grow, high + grow], 1), target_landmarks)


def create_target_heatmap(target_landmarks: Any, centers: Any, scales: Any) -> Any:
    """(B, 68, 64, 64) training targets: a sigma-2 Gaussian at each landmark, in the
    crop of each centre and scale (a tensor when torch is installed, as FAN's)."""
    points = as_array(target_landmarks)
    centers, scales = as_array(centers).reshape(-1, 2), as_array(scales).reshape(-1)
    maps = np.zeros((len(points), NUM_LANDMARKS, HEATMAP_SIZE, HEATMAP_SIZE), np.float32)
    for i in range(len(points)):
        for p in range(NUM_LANDMARKS):
            cropped = as_array(transform(points[i, p] + 1, centers[i], scales[i], HEATMAP_SIZE))
            draw_gaussian(maps[i, p], cropped + 1, 2)
    return _tensor_if_torch(maps)


def shuffle_lr(parts: Any, pairs: list[int] | None = None) -> Any:
    """Maps (C, H, W) or (B, C, H, W) in the order of the mirrored face."""
    order = MIRROR_PERMUTATION if pairs is None else pairs
    return parts[order] if parts.ndim == 3 else parts[:, order]


def flip(tensor: Any, is_label: bool = False) -> Any:
    """An image (or, ``is_label``, a stack of landmark maps in mirrored order) flipped
    left-right along its last axis; a tensor when given one or when torch is there."""
    array = as_array(tensor)
    if is_label:
        array = shuffle_lr(array)
    flipped = np.ascontiguousarray(array[..., ::-1])
    return _like(flipped, tensor) if _is_tensor(tensor) else _tensor_if_torch(flipped)


def get_image(image_or_path: Any) -> np.ndarray | None:
    """An RGB (H, W, 3) array from a path, an array or a tensor (None for a file that
    cannot be read, with a message, as FAN)."""
    if isinstance(image_or_path, str | os.PathLike):
        from .io import InputError, read_image

        try:
            return read_image(image_or_path)
        except InputError as exc:
            print(f"error opening file :: {image_or_path} ({exc})")
            return None
    image = as_array(image_or_path)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    return image
