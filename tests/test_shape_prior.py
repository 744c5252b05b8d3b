"""Tests for util/shape_prior.py: prior building, 2D -> 3D fit, z convention, save/load.

z convention under test: image frame x right, y down, z toward the camera (larger z =
closer). A subject turning to THEIR left (their left ear goes away from the camera) moves
the nose tip toward the IMAGE's right (larger x); their left jaw points 9-16, which lie on
the image's right, then get smaller z (farther) than their right jaw points 0-7 (image left).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.paths import DATA_ROOT, SHAPE_PRIOR_PATH
from util.landmarks import MIRROR_PERMUTATION
from util.shape_prior import (
    ShapePrior,
    _rotation_onto,
    build_prior,
    depth_from_2d,
    fit_to_2d,
)

REAL_SHAPES = DATA_ROOT / "aflw2000_3d_shapes.npy"
SHIPPED_PRIOR = SHAPE_PRIOR_PATH


def template() -> np.ndarray:
    """A crude 3D face in iBUG order: x right, y down, z toward the camera (units ~ pixels)."""
    pts = np.zeros((68, 3))
    t = np.linspace(0.0, 1.0, 17)
    alpha = np.pi * (t - 0.5)
    pts[0:17] = np.stack([70 * np.sin(alpha), 90 * np.sin(np.pi * t), 70 * np.cos(alpha) - 70], 1)
    brow = np.linspace(-55, -15, 5)
    pts[17:22] = np.stack([brow, np.full(5, -30.0), -10 + 0.2 * (brow + 55)], 1)
    pts[22:27] = pts[17:22][::-1] * [-1, 1, 1]
    pts[27:31] = np.stack([np.zeros(4), np.linspace(-20, 25, 4), np.linspace(5, 35, 4)], 1)
    pts[31:36] = np.stack([np.linspace(-15, 15, 5), np.full(5, 30.0), [12, 16, 20, 16, 12]], 1)
    ring = np.linspace(np.pi, -np.pi, 6, endpoint=False)
    pts[36:42] = np.stack([-30 + 12 * np.cos(ring), -15 + 5 * np.sin(ring), np.full(6, -5.0)], 1)
    pts[42:48] = pts[36:42] * [-1, 1, 1]
    pts[42:48] = pts[42:48][[3, 2, 1, 0, 5, 4]]
    lips = np.linspace(np.pi, -np.pi, 12, endpoint=False)
    pts[48:60] = np.stack([25 * np.cos(lips), 55 + 12 * np.sin(lips), 5 + 3 * np.cos(lips)], 1)
    inner = np.linspace(np.pi, -np.pi, 8, endpoint=False)
    pts[60:68] = np.stack([18 * np.cos(inner), 55 + 5 * np.sin(inner), np.full(8, 4.0)], 1)
    return pts


def rotation(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """Rotation in the image frame; positive yaw = the subject turns to THEIR left."""
    cy, sy = np.cos(np.radians(yaw)), np.sin(np.radians(yaw))
    cp, sp = np.cos(np.radians(pitch)), np.sin(np.radians(pitch))
    cr, sr = np.cos(np.radians(roll)), np.sin(np.radians(roll))
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return rz @ rx @ ry


def synthetic_modes(rng: np.random.Generator, count: int = 4) -> np.ndarray:
    """Smooth, left-right symmetric shape deformations (count, 68, 3)."""
    base = template()
    modes = []
    for _ in range(count):
        a = rng.normal(size=(3, 3)) * 0.08
        mode = base @ a.T  # linear (smooth) deformation
        mirrored = mode[MIRROR_PERMUTATION] * [-1, 1, 1]
        modes.append((mode + mirrored) / 2)
    return np.array(modes)


def posed(
    shape: np.ndarray, rot: np.ndarray, scale: float, shift: tuple[float, float]
) -> np.ndarray:
    out = scale * (shape - shape.mean(0)) @ rot.T
    out[:, :2] += shift
    return out


@pytest.fixture(scope="module")
def synthetic() -> tuple[ShapePrior, np.ndarray, np.random.Generator]:
    rng = np.random.default_rng(1)
    modes = synthetic_modes(rng)
    shapes = []
    for _ in range(150):
        shape = template() + np.einsum("k,kij->ij", rng.normal(size=len(modes)), modes)
        shape += rng.normal(size=shape.shape) * 0.3
        rot = rotation(rng.uniform(-60, 60), rng.uniform(-20, 20), rng.uniform(-20, 20))
        shapes.append(posed(shape, rot, rng.uniform(0.5, 3.0), tuple(rng.uniform(0, 500, 2))))
    return build_prior(np.array(shapes), variance=0.97), modes, rng


def test_prior_shapes_and_units(synthetic) -> None:
    prior, _, _ = synthetic
    k = prior.num_components
    assert 1 <= k <= 30
    assert prior.mean.shape == (68, 3) and prior.basis.shape == (k, 68, 3)
    assert np.allclose(prior.mean.mean(0), 0, atol=1e-9)
    assert np.allclose(prior.basis.reshape(k, -1) @ prior.basis.reshape(k, -1).T, np.eye(k))
    assert np.all(np.diff(prior.stddev) <= 1e-9)
    # Alignment removed pose: the mean is the template up to a similarity (nose forward).
    assert prior.mean[30, 2] > prior.mean[[0, 16], 2].max()
    assert prior.mean[36, 0] < prior.mean[45, 0]  # subject's right eye on the image's left


@pytest.mark.parametrize("yaw", [-40.0, -15.0, 0.0, 25.0, 40.0])
def test_recovers_synthetic_shape_and_pose(synthetic, yaw: float) -> None:
    prior, modes, rng = synthetic
    shape = template() + np.einsum("k,kij->ij", rng.normal(size=len(modes)), modes)
    rot = rotation(yaw, pitch=8.0, roll=-5.0)
    truth = posed(shape, rot, 2.5, (320.0, 240.0))
    fit = fit_to_2d(prior, truth[:, :2])
    box = np.sqrt(np.prod(np.ptp(truth[:, :2], axis=0)))
    z_true = truth[:, 2] - truth[:, 2].mean()
    assert np.abs(fit.points[:, 2] - z_true).mean() / box < 0.02
    assert fit.residual / box < 0.01
    assert np.allclose(fit.points[:, :2], truth[:, :2], atol=0.03 * box)
    assert (
        abs(
            fit.scale * np.linalg.norm(prior.mean) / np.linalg.norm(2.5 * (shape - shape.mean(0)))
            - 1
        )
        < 0.1
    )
    assert np.allclose(fit.translation, truth[:, :2].mean(0))
    assert np.isclose(np.linalg.det(fit.rotation), 1.0)
    # The recovered camera maps the model's forward axis like the true one does.
    fitted_yaw = np.degrees(np.arctan2(fit.rotation[0, 2], fit.rotation[2, 2]))
    assert abs(fitted_yaw - yaw) < 8.0
    assert abs(fit.points[:, 2].mean()) < 1e-9


def jaw_depths(z: np.ndarray) -> tuple[float, float]:
    """Mean z of the subject's right jaw (0-7) and left jaw (9-16)."""
    return float(z[0:8].mean()), float(z[9:17].mean())


def check_convention(prior: ShapePrior, shape: np.ndarray) -> None:
    for yaw in (30.0, -30.0):
        face = posed(shape, rotation(yaw), 3.0, (200.0, 200.0))
        fit = fit_to_2d(prior, face[:, :2])
        right, left = jaw_depths(fit.points[:, 2])
        nose_side = face[30, 0] - face[[0, 16], 0].mean()
        if yaw > 0:  # turned to the subject's left: nose to the image's right, left jaw farther
            assert nose_side > 0 and left < right
        else:
            assert nose_side < 0 and left > right
        assert fit.points[30, 2] > fit.points[[0, 16], 2].max()  # nose tip closest
        assert np.sign(right - left) == np.sign(
            jaw_depths(face[:, 2])[0] - jaw_depths(face[:, 2])[1]
        )


def test_z_convention_synthetic(synthetic) -> None:
    check_convention(synthetic[0], template())


@pytest.mark.skipif(not SHIPPED_PRIOR.exists(), reason="models/shape_prior.npz not built")
def test_z_convention_shipped_prior() -> None:
    prior = ShapePrior.load(SHIPPED_PRIOR)
    check_convention(prior, prior.mean)
    assert prior.mean[30, 2] > prior.mean[[0, 16], 2].max()


@pytest.mark.skipif(not REAL_SHAPES.exists(), reason="AFLW2000-3D shapes not available")
def test_real_shapes_held_out() -> None:
    shapes = np.load(REAL_SHAPES).astype(np.float64)
    prior = build_prior(shapes[:300])
    test = shapes[-100:]
    fit = fit_to_2d(prior, test[..., :2])
    box = np.sqrt(np.prod(np.ptp(test[..., :2], axis=1), axis=1))
    z_true = test[..., 2] - test[..., 2].mean(axis=1, keepdims=True)
    err = np.abs(fit.points[..., 2] - z_true).mean(axis=1) / box
    zero = np.abs(z_true).mean(axis=1) / box
    assert err.mean() < 0.03 and err.mean() < 0.25 * zero.mean()
    # The real data follow the convention: nose to the image's right <=> left jaw farther.
    nose_side = test[:, 30, 0] - test[:, [0, 16], 0].mean(axis=1)
    fitted = fit.points[..., 2]
    assert np.corrcoef(nose_side, fitted[:, 16] - fitted[:, 0])[0, 1] < -0.9


def test_batch_matches_single_and_depth_helper(synthetic) -> None:
    prior, _, _ = synthetic
    faces = np.stack([posed(template(), rotation(y), 2.0, (100.0, 50.0))[:, :2] for y in (-20, 35)])
    batch = fit_to_2d(prior, faces)
    assert batch.points.shape == (2, 68, 3) and batch.scale.shape == (2,)
    for i, face in enumerate(faces):
        single = fit_to_2d(prior, face)
        assert np.allclose(single.points, batch.points[i], atol=1e-6)
        assert np.allclose(depth_from_2d(prior, face), single.points[:, 2])
    with pytest.raises(ValueError):
        fit_to_2d(prior, np.zeros((5, 2)))


def test_rotations_only() -> None:
    rng = np.random.default_rng(3)
    source = template() - template().mean(0)
    reflected = source * [1, 1, -1]  # best match is a reflection; we must return a rotation
    rot = _rotation_onto(source, reflected)
    assert np.isclose(np.linalg.det(rot), 1.0)
    true = rotation(*rng.uniform(-50, 50, 3))
    assert np.allclose(_rotation_onto(source, source @ true.T), true)


def test_save_load_round_trip(synthetic, tmp_path: Path) -> None:
    prior = synthetic[0]
    path = tmp_path / "prior.npz"
    prior.save(path)
    loaded = ShapePrior.load(path)
    for name in ("mean", "basis", "stddev"):
        assert np.allclose(getattr(loaded, name), getattr(prior, name), rtol=1e-5, atol=1e-4)
    face = posed(template(), rotation(20.0), 2.0, (0.0, 0.0))[:, :2]
    assert np.allclose(depth_from_2d(loaded, face), depth_from_2d(prior, face), atol=1e-2)
    with pytest.raises(ValueError):
        ShapePrior(mean=np.zeros((68, 3)), basis=np.zeros((2, 68, 3)), stddev=np.ones(3))
