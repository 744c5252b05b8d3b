"""Read: images of any common format, and the list of inputs a user names.

Every failure is an ``InputError`` whose message names the file and the problem in
one line, so the CLI can report it and go on with the next file.
"""

from __future__ import annotations

import glob
import os
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np

# Beyond 100 megapixels decoding alone needs gigabytes and is almost surely a mistake
# (or a decompression bomb); Pillow's own bomb check stops at about 179 megapixels.
MAX_PIXELS = 100_000_000
IMAGE_SUFFIXES = {
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".tif",
    ".tiff",
    ".webp",
    ".gif",
    ".ppm",
    ".pgm",
    ".jp2",
}


class InputError(ValueError):
    """An input that cannot be used; the message names the file and the problem."""


def read_image(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """Decode an image file to uint8 RGB (H, W, 3).

    Grey, palette, 16-bit and float images are converted; alpha is composited on
    white; EXIF orientation is applied. Non-ASCII paths work (no OpenCV path API).
    Images of more than ``max_pixels`` (default MAX_PIXELS) are refused.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    limit = MAX_PIXELS if max_pixels is None else int(max_pixels)
    if Image.MAX_IMAGE_PIXELS is not None and limit > 2 * Image.MAX_IMAGE_PIXELS:
        # Pillow's own bomb check (an error past twice its limit) must not undercut a
        # limit the user raised on purpose; ours below stays the one that counts.
        Image.MAX_IMAGE_PIXELS = limit
    path = Path(path)
    if not os.path.exists(path):  # os.path: a name too long for the file system is not there
        raise InputError(f"{path}: file not found")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a folder, not an image")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file")
    try:
        # Pillow's warnings (decompression bomb, odd EXIF or palette data) are either
        # our own error below or harmless; they must not break the one-line output.
        # The filter must be in place before Image.open, which is where Pillow warns.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                width, height = img.size
                if width * height > limit:
                    raise InputError(
                        f"{path}: image too large ({width}x{height} pixels){_over(limit)}"
                    )
                if width == 0 or height == 0:
                    raise InputError(f"{path}: image has no pixels")
                fast = _decode_with_opencv(path, img)
                if fast is not None:
                    return fast
                img = ImageOps.exif_transpose(img)
                return _to_rgb8(img)
    except InputError:
        raise
    except Image.DecompressionBombError:
        raise InputError(f"{path}: image too large{_over(limit)}") from None
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image (or an unsupported format)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"{path}: corrupt or truncated image ({exc})") from None


def _over(limit: int) -> str:
    # The flag is the CLI's; the API's equivalent is FaceAligner(max_pixels=...).
    return f", over the limit of {limit} pixels (raise it with --max-pixels)"


# What a file must end with to be whole: OpenCV decodes a truncated JPEG or PNG without
# an error (grey or black below the cut), where Pillow raises; those go to Pillow.
_COMPLETE_ENDINGS = {"JPEG": b"\xff\xd9", "PNG": b"IEND\xaeB`\x82"}

# EXIF orientation -> the numpy view of Pillow's exif_transpose (the same pixels).
_ORIENTATIONS = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


def _decode_with_opencv(path: Path, img) -> np.ndarray | None:  # noqa: ANN001 - PIL.Image
    """The pixels of a plain 8-bit RGB or grey JPEG or PNG, decoded by OpenCV; None for
    anything else (Pillow handles those, and every error).

    Why: a folder run spent 11 % of its CPU time reading images, a third of that in
    Pillow's copies (exif_transpose copies the image, __array_interface__ copies it
    twice more through tobytes). OpenCV decodes straight into the array: 2.7 against
    4.1 ms CPU per 300w/val photo, pixel-identical on all 291 (both are libjpeg-turbo,
    tests/test_io.py checks it). Pillow still reads the header (size limit, mode, EXIF)."""
    if img.format not in _COMPLETE_ENDINGS or img.mode not in ("RGB", "L"):
        return None
    # 8 bits per sample only: 16-bit or 1-4-bit PNGs (raw modes "RGB;16B", "L;4", ...)
    # are scaled by each library in its own way.
    if len(img.tile) != 1:
        return None
    args = img.tile[0].args
    if (args[0] if isinstance(args, tuple) else args) not in ("RGB", "L"):
        return None
    if "transparency" in img.info:  # keep Pillow's handling of a transparent colour
        return None
    orientation = img.getexif().get(0x0112, 1)  # EXIF Orientation
    if orientation != 1 and orientation not in _ORIENTATIONS:
        return None
    import cv2

    data = np.fromfile(path, np.uint8)  # not cv2.imread: non-ASCII paths
    if data[-len(_COMPLETE_ENDINGS[img.format]) :].tobytes() != _COMPLETE_ENDINGS[img.format]:
        return None
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    bgr = cv2.imdecode(data, flags)
    if bgr is None or bgr.shape[:2] != (img.size[1], img.size[0]):
        return None
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if orientation != 1:
        rgb = np.ascontiguousarray(_ORIENTATIONS[orientation](rgb))
    return rgb


def _to_rgb8(img) -> np.ndarray:  # noqa: ANN001 - PIL.Image.Image
    """Any PIL mode -> uint8 RGB."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        data = np.asarray(img, dtype=np.float64)
        high = 65535.0 if mode.startswith("I;16") or data.max() > 255 else 255.0
        if mode == "F":
            high = 1.0 if data.max() <= 1.0 else 255.0
        grey = np.clip(data / high * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32)
        alpha = rgba[..., 3:4] / 255.0
        rgb = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
        return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
    if mode != "RGB":
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def _read_umask() -> int:
    umask = os.umask(0)  # the only way to read it is to set it
    os.umask(umask)
    return umask


# Read once, at import: setting it for a moment while a writer thread (the CLI's folder
# loop) or another thread creates files would give those files mode 666.
_UMASK = _read_umask()


def usual_mode(path: str | os.PathLike) -> None:
    """mkstemp makes owner-only files; give ``path`` the mode a plain open() would."""
    os.chmod(path, 0o666 & ~_UMASK)


def _written_temp(path: Path, data: bytes) -> Path:
    """``data`` in a new temporary file beside ``path`` (hidden, removed again when
    writing it fails), not yet in place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        usual_mode(tmp)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place, so
    a reader never sees half a file and a failure leaves the old file (or none)."""
    tmp = _written_temp(Path(path), data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def expand_inputs(specs: list[str]) -> list[Path]:
    """Files, folders (recursed, sorted, images only) and globs -> paths, in order.

    A name that matches nothing is kept, so that reading it reports the problem.
    """
    paths: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if os.path.isdir(path):
            paths += sorted(p for p in path.rglob("*") if p.is_file() and is_image_path(p))
        elif not os.path.exists(path) and glob.has_magic(spec):
            matches = sorted(Path(m) for m in glob.glob(spec, recursive=True))
            paths += [m for m in matches if m.is_file()] or [path]
        else:
            paths.append(path)
    return paths


class StagedFiles:
    """Outputs written whole under temporary names beside their targets (by a writer
    thread), then renamed into place together (``commit``) by the thread that writes
    their record, so that an interrupt never leaves an output without its record;
    ``discard`` removes what was staged and never committed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: set[Path] = set()

    def stage(self, path: str | os.PathLike, data: bytes) -> tuple[Path, Path]:
        """(temporary file, target) with ``data`` written, not yet in place."""
        path = Path(path)
        tmp = _written_temp(path, data)
        with self._lock:
            self._pending.add(tmp)
        return tmp, path

    def commit(self, staged: list[tuple[Path, Path]]) -> None:
        for tmp, path in staged:
            os.replace(tmp, path)
            with self._lock:
                self._pending.discard(tmp)

    def discard(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, set()
        for tmp in pending:
            tmp.unlink(missing_ok=True)
