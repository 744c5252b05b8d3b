"""The heatmap codec: training targets and run-time decoding share one convention, and
the torch centroid the integral loss trains agrees with the numpy one the tool decodes."""

from __future__ import annotations

import numpy as np
import pytest

from util.heatmap_codec import HeatmapCodec, crop_to_heatmap, gaussian_maps, positive_centroid
from util.runtime import ModelSpec

SPEC = ModelSpec(
    kind="fan2d",
    input_size=(256, 256),
    extra={"heatmap_size": 64, "heatmap_sigma": 1.5, "decode": "centroid"},
)


def _crop_points(count: int = 68, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(40, 216, (count, 2))


def test_codec_reads_its_spec_and_fan_defaults() -> None:
    codec = HeatmapCodec.from_spec(SPEC)
    assert (codec.crop_size, codec.heatmap_size, codec.sigma) == (256, 64, 1.5)
    assert codec.method == "centroid" and codec.centroid_radius is None
    bare = HeatmapCodec.from_spec(ModelSpec(kind="fan2d", input_size=(256, 256)))
    assert (bare.heatmap_size, bare.sigma, bare.method) == (64, None, "dark")
    with pytest.raises(ValueError, match="heatmap_sigma"):
        bare.encode(_crop_points())
    depth = HeatmapCodec.from_spec(ModelSpec(kind="depth", input_size=(256, 256)))
    assert (depth.heatmap_size, depth.sigma) == (256, 2.0)


def test_encode_is_the_gaussian_at_the_mapped_points() -> None:
    points = _crop_points()
    codec = HeatmapCodec.from_spec(SPEC)
    expected = gaussian_maps(crop_to_heatmap(points, 256, 64), 64, 1.5)
    np.testing.assert_array_equal(codec.encode(points), expected)


def test_pooled_encoding_is_the_pool_of_the_maps() -> None:
    points = _crop_points(5)
    codec = HeatmapCodec.from_spec(ModelSpec(kind="depth", input_size=(64, 64)))
    full = codec.encode(points / 4)
    pooled = codec.encode(points / 4, pool=4)
    np.testing.assert_allclose(pooled, full.reshape(5, 16, 4, 16, 4).mean((2, 4)), atol=1e-6)


def test_decode_inverts_encode_in_crop_pixels() -> None:
    points = _crop_points()
    codec = HeatmapCodec.from_spec(SPEC)
    decoded, scores = codec.decode(codec.encode(points))
    np.testing.assert_allclose(decoded, points, atol=0.02)
    np.testing.assert_allclose(scores, 1.0, atol=0.1)


def test_torch_and_numpy_centroids_agree() -> None:
    """relu_centroid (training's integral loss) and positive_centroid (the tool's
    "centroid" decoding, without a radius) give the same points on the same maps: maps
    with negative lobes and noise, as a trained network gives them."""
    torch = pytest.importorskip("torch")
    from training.losses import relu_centroid

    rng = np.random.default_rng(1)
    points = rng.uniform(4, 60, (2, 68, 2))
    maps = np.stack([gaussian_maps(p, 64, 1.5) for p in points])
    maps -= 0.6 * np.stack([gaussian_maps(p + rng.normal(0, 6, p.shape), 64, 3.0) for p in points])
    maps += rng.normal(0, 0.02, maps.shape).astype(np.float32)
    maps = maps.astype(np.float32)
    trained = relu_centroid(torch.from_numpy(maps)).numpy()
    decoded = np.stack([positive_centroid(view)[0] for view in maps])
    np.testing.assert_allclose(trained, decoded, atol=1e-3)
    assert np.abs(decoded - points).max() > 0.05  # the lobes and noise move the centroids
