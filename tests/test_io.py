"""util.io.read_image: OpenCV's fast decoding gives Pillow's pixels, and every file it
cannot vouch for (truncated, odd modes, EXIF turns) still reads as Pillow reads it."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from util import io as uio
from util.io import InputError, read_image


def _pillow_only(path: Path, monkeypatch: pytest.MonkeyPatch) -> np.ndarray:
    """read_image without the OpenCV path: what it returned before."""
    with monkeypatch.context() as patch:
        patch.setattr(uio, "_decode_with_opencv", lambda path, img: None)
        return read_image(path)


def _photo(height: int = 48, width: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    noise = rng.normal(0, 30, (height, width, 3))
    return np.clip(ramp + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    ("name", "mode"),
    [("a.jpg", "RGB"), ("grey.jpg", "L"), ("a.png", "RGB"), ("grey.png", "L")],
)
def test_fast_decode_matches_pillow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, mode: str
) -> None:
    path = tmp_path / name
    Image.fromarray(_photo()).convert(mode).save(path)
    with Image.open(path) as img:
        assert uio._decode_with_opencv(path, img) is not None  # the fast path is taken
    fast = read_image(path)
    assert fast.dtype == np.uint8 and fast.shape == (48, 64, 3) and fast.flags.c_contiguous
    np.testing.assert_array_equal(fast, _pillow_only(path, monkeypatch))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_as_pillow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, orientation: int
) -> None:
    path = tmp_path / f"o{orientation}.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(_photo()).save(path, exif=exif.tobytes())
    fast = read_image(path)
    assert fast.flags.c_contiguous
    np.testing.assert_array_equal(fast, _pillow_only(path, monkeypatch))


def test_truncated_jpeg_is_still_an_error(tmp_path: Path) -> None:
    """OpenCV would decode the first rows and fill the rest; Pillow says truncated."""
    buffer = io.BytesIO()
    Image.fromarray(_photo(256, 256)).save(buffer, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(InputError, match="corrupt or truncated"):
        read_image(path)


def test_sixteen_bit_png_takes_pillow(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    Image.fromarray((np.arange(64 * 48).reshape(48, 64) * 20).astype(np.uint16)).save(path)
    with Image.open(path) as img:
        assert uio._decode_with_opencv(path, img) is None
    assert read_image(path).shape == (48, 64, 3)
