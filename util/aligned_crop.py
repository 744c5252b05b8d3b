"""Aligned face crops, as face-recognition and face-generation datasets are made, from a
face's 68 landmarks, and pasting an edited crop back.

Templates:
- ``arcface``: insightface's ``norm_crop``: the least-squares similarity (Umeyama, as
  skimage's ``SimilarityTransform.estimate``) from five points (the eye centres, the
  mean of points 36-41 and of 42-47; the nose tip 30; the mouth corners 48 and 54) onto
  the ArcFace template, scaled from 112 to the size.
- ``ffhq``: NVlabs' ffhq-dataset ``recreate_aligned_images``: the oriented square from
  the eye centres and the mouth corners, with its reflected and blurred padding where
  the square leaves the image, scaled down without aliasing.
- ``square``: the crop the landmark model read: the face's box, turned upright by its
  roll.

Every crop comes with its 2x3 matrix, image pixels to crop pixels (pixel centres at
integer coordinates in both), so that ``paste_back`` can put an edited crop back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import cv2
import numpy as np

from .crop import invert_matrix, transform_points, warp_crop
from .io import InputError, StagedFiles, write_bytes_atomic

if TYPE_CHECKING:
    from .face import Face  # face.py imports this module for Face.crop

TEMPLATES = ("arcface", "ffhq", "square")
DEFAULT_SIZES = {"arcface": 112, "ffhq": 1024, "square": 256}
# insightface's ArcFace template for 112 x 112 crops (arcface_torch, norm_crop).
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
     [70.7299, 92.2041]]
)  # fmt: skip
# Largest intermediate side when a crop is made larger first and then scaled down.
MAX_SUPERSAMPLED = 4096


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """(5, 2): the eye centres (subject's right, then left), the nose tip, the mouth
    corners, from 68 landmarks."""
    points = np.asarray(landmarks, np.float64)[:, :2]
    return np.stack([points[36:42].mean(0), points[42:48].mean(0), points[30], points[48],
                     points[54]])  # fmt: skip


def umeyama(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The least-squares similarity (2x3) taking ``source`` points onto ``target``."""
    src, dst = np.asarray(source, np.float64), np.asarray(target, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sing, vt = np.linalg.svd(cov)
    flip = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        flip[1, 1] = -1
    rotation = u @ flip @ vt
    scale = np.trace(np.diag(sing) @ flip) / max(s.var(0).sum(), 1e-12)
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = mu_d - scale * rotation @ mu_s
    return matrix


def arcface_matrix(landmarks: np.ndarray, size: int) -> np.ndarray:
    return umeyama(five_points(landmarks), ARCFACE_112 * (size / 112.0))


def ffhq_quad(landmarks: np.ndarray) -> np.ndarray:
    """NVlabs' oriented square: corners c - x - y, c - x + y, c + x + y, c + x - y."""
    eye_left, eye_right, _, mouth_left, mouth_right = five_points(landmarks)
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = (mouth_left + mouth_right) / 2 - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def ffhq_matrix(landmarks: np.ndarray, size: int) -> np.ndarray:
    """The similarity taking the quad's corners to the crop's (PIL's QUAD transform in
    continuous coordinates, +0.5 on both sides for pixel centres at integers)."""
    quad = ffhq_quad(landmarks) + 0.5
    corners = np.array([[0.0, 0.0], [0.0, size], [size, size], [size, 0.0]])
    matrix = umeyama(quad, corners)
    matrix[:, 2] += matrix[:, :2] @ [0.5, 0.5] - 0.5
    return matrix


def square_matrix(crop_matrix: np.ndarray, crop_size: int, size: int) -> np.ndarray:
    """The landmark model's crop (``crop_matrix`` for ``crop_size`` pixels) at ``size``."""
    k = size / crop_size
    matrix = np.asarray(crop_matrix, np.float64) * k
    matrix[:, 2] += 0.5 * k - 0.5
    return matrix


def crop_scale(matrix: np.ndarray) -> float:
    """Crop pixels per image pixel."""
    return float(np.sqrt(abs(np.linalg.det(np.asarray(matrix)[:, :2]))))


def _padded_for_ffhq(
    image: np.ndarray, matrix: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """(image, matrix) with the image padded as NVlabs pads it where the crop leaves it:
    reflected, then blurred and flattened toward the median with the distance from the
    border; the matrix moved with the padding."""
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64) - 0.5
    source = transform_points(corners, invert_matrix(matrix))
    height, width = image.shape[:2]
    qsize = size / crop_scale(matrix)
    border = max(int(round(qsize * 0.1)), 3)
    low = np.floor(source.min(0)).astype(int) - border
    high = np.ceil(source.max(0)).astype(int) + border
    pad = np.maximum([-low[0], -low[1], high[0] - width + 1, high[1] - height + 1], 0)
    if not pad.any():
        return image, matrix
    # NumPy's "reflect" mirrors any number of times (cv2's stops at one image width).
    img = np.pad(image.astype(np.float32), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)),
                 mode="reflect")  # fmt: skip
    h, w = img.shape[:2]
    yy, xx = np.ogrid[:h, :w]
    p = np.maximum(pad, 1e-3).astype(np.float32)
    # NVlabs' mask: 0 on the image's border, 1 at the padding's edge, negative inside
    # (so the blur also reaches a third of the padding's width into the image).
    mask = np.maximum(
        1.0 - np.minimum(xx / p[0], (w - 1 - xx) / p[2]),
        1.0 - np.minimum(yy / p[1], (h - 1 - yy) / p[3]),
    )[..., None]
    blur = qsize * 0.02
    blurred = cv2.GaussianBlur(img, (0, 0), max(blur, 0.5))
    img += (blurred - img) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    img += (np.median(img, axis=(0, 1)) - img) * np.clip(mask, 0.0, 1.0)
    moved = matrix.copy()
    moved[:, 2] -= matrix[:, :2] @ [pad[0], pad[1]]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), moved


def warp(image: np.ndarray, matrix: np.ndarray, size: int, reflect: bool = False) -> np.ndarray:
    """The ``size`` x ``size`` crop of ``matrix``: made at up to an integer multiple of
    the size (so that no source pixel is skipped) and area-averaged down, which scales a
    large face down without aliasing; outside the image black, or (``reflect``) padded
    as ffhq-dataset pads."""
    if reflect:
        image, matrix = _padded_for_ffhq(image, matrix, size)
    factor = max(1, min(int(np.ceil(1.0 / max(crop_scale(matrix), 1e-9))),
                        MAX_SUPERSAMPLED // size))  # fmt: skip
    big = square_matrix(matrix, size, size * factor) if factor > 1 else matrix
    out = warp_crop(image, big, size * factor)
    if factor > 1:
        out = cv2.resize(out, (size, size), interpolation=cv2.INTER_AREA)
    return out


def aligned_matrix(landmarks: np.ndarray, template: str, size: int,
                   landmark_crop: tuple[np.ndarray, int] | None = None) -> np.ndarray:  # fmt: skip
    """The image-to-crop matrix of a template."""
    if template == "arcface":
        return arcface_matrix(landmarks, size)
    if template == "ffhq":
        return ffhq_matrix(landmarks, size)
    if template == "square":
        if landmark_crop is None:
            raise ValueError("the square template needs the landmark model's crop")
        return square_matrix(landmark_crop[0], landmark_crop[1], size)
    raise ValueError(f"unknown crop template {template!r} ({', '.join(TEMPLATES)})")


def paste_back(image: np.ndarray, crop: np.ndarray, matrix: np.ndarray,
               feather: float = 0.05) -> np.ndarray:  # fmt: skip
    """A copy of ``image`` with ``crop`` (made with ``matrix``) put back where it came
    from, blended in over a border of ``feather`` times the crop's side."""
    height, width = image.shape[:2]
    size = crop.shape[0]
    inverse = invert_matrix(matrix)
    back = cv2.warpAffine(crop, inverse, (width, height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT)  # fmt: skip
    margin = max(1, int(round(feather * size)))
    mask = np.zeros((size, size), np.float32)
    mask[margin:-margin, margin:-margin] = 1.0
    mask = cv2.GaussianBlur(mask, (0, 0), margin / 2)
    alpha = cv2.warpAffine(mask, inverse, (width, height), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)[..., None]  # fmt: skip
    blended = image.astype(np.float32) * (1 - alpha) + back.astype(np.float32) * alpha
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class CropSettings:
    """What --crops writes: the template and the crop side in pixels."""

    template: str = "arcface"
    size: int = DEFAULT_SIZES["arcface"]

    @classmethod
    def of(cls, template: str, size: int | None) -> CropSettings:
        return cls(template, DEFAULT_SIZES[template] if size is None else int(size))


def crop_stem(folder: str | os.PathLike, name: str) -> Path:
    """Where an input named ``name`` (a path, a URI, a Parquet row's name) has its crops
    below ``folder``: the name's own folders, with every way out of ``folder`` (a
    scheme, a root, a drive, "..") dropped, and no suffix."""
    text = name.split("://", 1)[-1].replace("\\", "/")
    parts = [p for p in PurePosixPath(text).parts if p not in ("/", ".", "..") and ":" not in p]
    relative = PurePosixPath(*parts) if parts else PurePosixPath("image")
    return Path(folder, *relative.with_suffix("").parts)


def write_face_crops(
    stem: Path,
    image: np.ndarray,
    faces: list[Face],
    settings: CropSettings,
    staged: StagedFiles | None,
    upsampled: list,
) -> list[tuple[Path, Path]]:
    """Each face's aligned crop, STEM_k.png (staged, or written whole when ``staged`` is
    None), and its ``crop_info`` for the record: the file, template, size and matrix,
    or the error that kept it from being written. The first crop made larger than its
    face is added to ``upsampled`` (for the run's one warning)."""
    pairs = []
    for k, face in enumerate(faces):
        path = stem.with_name(f"{stem.name}_{k}.png")
        try:
            crop, matrix = face.crop(image, settings.template, settings.size)
            if crop_scale(matrix) > 1.0 and not upsampled:
                upsampled.append(path)
            ok, encoded = cv2.imencode(".png", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
            if not ok:
                raise InputError(f"{path}: cannot encode the crop")
            path.parent.mkdir(parents=True, exist_ok=True)
            if staged is None:
                write_bytes_atomic(path, encoded.tobytes())
            else:
                pairs.append(staged.stage(path, encoded.tobytes()))
        except (InputError, OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            face.crop_info = {"error": f"{path}: cannot write ({reason})"}
            continue
        face.crop_info = {
            "file": str(path),
            "template": settings.template,
            "size": settings.size,
            "matrix": np.round(matrix, 6).tolist(),
        }
    return pairs
