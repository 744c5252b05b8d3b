"""A 3D shape prior for the 68 iBUG landmarks, and lifting 2D landmarks to 3D with it.

Coordinate convention (the same as the AFLW2000-3D / 3DDFA shapes the prior is built from,
and the same for every 3D output of this module):

* x points to the image's right, y points DOWN (image rows), both in pixels;
* z points TOWARD the camera: a larger z is closer to the viewer. z is in the same pixel
  units as x and y and is zero-mean over the 68 points of a face.

This frame (x right, y down, z toward the viewer) is left-handed as a physical frame, but
all rotations here act on coordinate triplets in this one frame, so they are ordinary
proper rotations (det +1) and the depth never needs a sign flip: the third row of the
camera rotation is ``r1 x r2``, and ``z = s * r3 . X`` is already "larger = closer".

Example: a subject who turns to THEIR left (their left ear goes away from the camera)
has the nose tip (30) moved toward the IMAGE's right (larger x), and their left jaw
points 9-16, which in a frontal photo lie on the image's right, get smaller z (farther)
than their right jaw points 0-7 (on the image's left). In this frame that pose is a
rotation about the y axis, ``[[c, 0, s], [0, 1, 0], [-s, 0, c]]`` with a positive angle.

Units of the prior: the mean shape is scaled so that the square root of its x-y bounding
box area is 100, i.e. model units are "percent of the face box". Hence the fit's
``regulariser`` is (2D noise std per coordinate, in % of the face box)^2 in the usual
MAP reading: regulariser = 1 expects about 1 % noise per coordinate.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .landmarks import MIRROR_PERMUTATION, NUM_LANDMARKS

_MODEL_BOX = 100.0  # box size of the mean shape, in model units
_EPS = 1e-12


@dataclass(frozen=True, eq=False)
class ShapePrior:
    """PCA model of 3D landmark shapes: ``mean + sum_k c_k * basis[k]``, c_k ~ N(0, stddev_k^2).

    ``mean`` (68, 3) is centred (zero centroid), ``basis`` (K, 68, 3) has orthonormal
    components (each of unit Frobenius norm, each with zero centroid), ``stddev`` (K,) is in
    model units (see the module docstring). Arrays are stored read-only.
    """

    mean: np.ndarray
    basis: np.ndarray
    stddev: np.ndarray
    # Rotation of the canonical frame relative to the head-pose benchmark's frontal head
    # (util.head_pose); None for a prior built without poses.
    pose_frame: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.pose_frame is not None:
            frame = np.array(self.pose_frame, dtype=np.float64)
            if frame.shape != (3, 3) or not np.allclose(frame @ frame.T, np.eye(3), atol=1e-4):
                raise ValueError("pose_frame must be a 3x3 rotation")
            frame.setflags(write=False)
            object.__setattr__(self, "pose_frame", frame)
        mean = np.array(self.mean, dtype=np.float64)
        basis = np.array(self.basis, dtype=np.float64)
        stddev = np.array(self.stddev, dtype=np.float64)
        # 68 points, or a subset of them (see ``subset``).
        if mean.ndim != 2 or mean.shape[1] != 3 or not 3 <= len(mean) <= NUM_LANDMARKS:
            raise ValueError(f"mean must be ({NUM_LANDMARKS}, 3), got {mean.shape}")
        if basis.ndim != 3 or basis.shape[1:] != mean.shape:
            raise ValueError(f"basis must be (K, {len(mean)}, 3), got {basis.shape}")
        if stddev.shape != (basis.shape[0],) or not np.all(stddev > 0):
            raise ValueError("stddev must be (K,) and positive")
        for name, value in (("mean", mean), ("basis", basis), ("stddev", stddev)):
            value.setflags(write=False)
            object.__setattr__(self, name, value)

    @property
    def num_components(self) -> int:
        return int(self.basis.shape[0])

    def subset(self, indices: np.ndarray) -> ShapePrior:
        """The prior of these points only, re-centred (the fit takes the model origin to
        be the points' centroid); the coefficients keep their meaning."""
        mean = self.mean[indices]
        basis = self.basis[:, indices]
        return ShapePrior(mean - mean.mean(0), basis - basis.mean(1, keepdims=True), self.stddev,
                          self.pose_frame)  # fmt: skip

    def shape(self, coefficients: np.ndarray) -> np.ndarray:
        """Model-frame shape(s) ``(..., 68, 3)`` for coefficients ``(..., K)``."""
        return self.mean + np.einsum("...k,kij->...ij", np.asarray(coefficients), self.basis)

    def save(self, path: str | os.PathLike) -> None:
        """Write the prior to a compressed ``.npz`` file (float32 arrays)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        frame = {} if self.pose_frame is None else {"pose_frame": self.pose_frame}
        with open(path, "wb") as handle:
            np.savez_compressed(
                handle,
                mean=self.mean.astype(np.float32),
                basis=self.basis.astype(np.float32),
                stddev=self.stddev.astype(np.float32),
                **frame,
            )

    @classmethod
    def load(cls, path: str | os.PathLike) -> ShapePrior:
        """Read a prior written by :meth:`save`."""
        with np.load(Path(path), allow_pickle=False) as data:
            frame = data["pose_frame"] if "pose_frame" in data.files else None
            return cls(data["mean"], data["basis"], data["stddev"], frame)


@dataclass(frozen=True, eq=False)
class Fit:
    """Result of :func:`fit_to_2d`. Leading ``N`` dimensions appear only for batched input.

    points: ``([N,] 68, 3)`` fitted 3D landmarks in image coordinates: x, y are the model's
        projection (close to the input 2D points), z is in pixels, zero-mean per face,
        larger z = closer to the camera.
    rotation: ``([N,] 3, 3)`` proper rotation from the model frame to the image frame.
    scale: pixels per model unit (float, or ``(N,)``).
    translation: ``([N,] 2)`` image position of the model origin (the 2D centroid).
    coefficients: ``([N,] K)`` shape coefficients (model units; divide by
        ``prior.stddev`` for standard scores).
    residual: mean distance in pixels between the projection and the input 2D points
        (float, or ``(N,)``).
    """

    points: np.ndarray
    rotation: np.ndarray
    scale: float | np.ndarray
    translation: np.ndarray
    coefficients: np.ndarray
    residual: float | np.ndarray


def _centre(points: np.ndarray) -> np.ndarray:
    return points - points.mean(axis=-2, keepdims=True)


def _rotation_onto(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Proper rotation(s) R minimising ``||target - source @ R.T||`` for centred (..., n, 3)."""
    cov = np.einsum("...ni,...nj->...ij", target, source)  # sum_n target_n source_n^T
    u, _, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt))
    d = np.where(d == 0, 1.0, d)
    u = u.copy()
    u[..., :, 2] *= d[..., None]  # no reflections: rotations only
    return u @ vt


def _mirror(shapes: np.ndarray) -> np.ndarray:
    mirrored = shapes[:, MIRROR_PERMUTATION].copy()
    mirrored[..., 0] *= -1.0
    return mirrored


def _box_size(points: np.ndarray) -> np.ndarray:
    span = points[..., :2].max(axis=-2) - points[..., :2].min(axis=-2)
    return np.sqrt(np.maximum(span[..., 0] * span[..., 1], _EPS))


def _frontal_rotation(shape: np.ndarray) -> np.ndarray:
    """Rotation that puts a shape in the canonical frontal frame of the prior.

    x: from the subject's right to their left (jaw corners, eye corners, mouth corners,
    brow ends); y: down, from the eyes to the mouth, made orthogonal to x; z = x cross y,
    toward the viewer. So in this frame the eye centroid (36-47) and the mouth centroid
    (48-67) are at the same depth: "frontal" means pitched that way, not a camera standard.
    """
    pairs = ((0, 16), (36, 45), (48, 54), (17, 26))
    x = sum(shape[left] - shape[right] for right, left in pairs)
    x = x / np.linalg.norm(x)
    down = shape[48:68].mean(axis=0) - shape[36:48].mean(axis=0)
    y = down - (down @ x) * x
    y = y / np.linalg.norm(y)
    return np.stack([x, y, np.cross(x, y)])


def build_prior(
    shapes: np.ndarray,
    variance: float = 0.97,
    max_components: int = 30,
    iterations: int = 5,
    mirror: bool = True,
) -> ShapePrior:
    """Build a :class:`ShapePrior` from 3D landmark shapes ``(M, 68, 3)``.

    The shapes must all be in the module's frame (x right, y down, z toward the camera).
    They are aligned by generalised Procrustes analysis (3D similarity transforms with
    proper rotations only; ``iterations`` rounds), then the smallest number of principal
    components that explains ``variance`` of the aligned variation is kept (at most
    ``max_components``). The mean is turned to the canonical frontal frame (see
    ``_frontal_rotation``), so a fit's rotation is the head pose. With ``mirror`` the
    left-right mirror image of every shape is added, so the prior has no left/right bias.
    """
    shapes = np.asarray(shapes, dtype=np.float64)
    if shapes.ndim != 3 or shapes.shape[1:] != (NUM_LANDMARKS, 3) or len(shapes) < 2:
        raise ValueError(f"shapes must be (M >= 2, {NUM_LANDMARKS}, 3), got {shapes.shape}")
    if not np.all(np.isfinite(shapes)):
        raise ValueError("shapes contain non-finite values")
    if mirror:
        shapes = np.concatenate([shapes, _mirror(shapes)])

    # Centre and scale every shape to unit centroid size.
    aligned = _centre(shapes)
    aligned /= np.linalg.norm(aligned, axis=(1, 2), keepdims=True) + _EPS
    reference = aligned[0]
    for _ in range(max(1, iterations)):
        rot = _rotation_onto(aligned, reference[None])
        aligned = aligned @ np.swapaxes(rot, -1, -2)
        # Least-squares scale of every shape onto the reference.
        dots = np.einsum("nij,ij->n", aligned, reference)
        aligned = (
            aligned
            * (dots / np.maximum(np.einsum("nij,nij->n", aligned, aligned), _EPS))[:, None, None]
        )
        new_reference = aligned.mean(axis=0)
        new_reference = new_reference @ _rotation_onto(new_reference, reference).T
        new_reference /= np.linalg.norm(new_reference)
        change = np.linalg.norm(new_reference - reference)
        reference = new_reference
        if change < 1e-9:
            break
    rot = _rotation_onto(aligned, reference[None])
    aligned = aligned @ np.swapaxes(rot, -1, -2)

    aligned = aligned @ _frontal_rotation(aligned.mean(axis=0)).T
    mean = aligned.mean(axis=0)
    unit = _MODEL_BOX / float(_box_size(mean))
    mean *= unit
    deviations = (aligned * unit - mean).reshape(len(aligned), -1)
    # Eigen-decomposition of the small (204, 204) covariance: cheaper than an SVD of the data.
    var, vecs = np.linalg.eigh(deviations.T @ deviations / max(len(aligned) - 1, 1))
    var, vt = np.maximum(var[::-1], 0.0), vecs[:, ::-1].T
    cumulative = np.cumsum(var) / var.sum()
    k = int(np.searchsorted(cumulative, variance) + 1)
    k = max(1, min(k, max_components, len(var)))
    keep = var[:k] > _EPS * var[0]
    basis = vt[:k][keep].reshape(-1, NUM_LANDMARKS, 3)
    stddev = np.sqrt(var[:k][keep])
    return ShapePrior(mean=_centre(mean), basis=basis, stddev=stddev)


def _scaled_rotation_from_affine(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest scaled rotation to 2x3 affine camera(s): rotation (..., 3, 3), scale (...)."""
    u, sing, vt = np.linalg.svd(affine, full_matrices=False)  # u (2,2), vt (2,3)
    rows = u @ vt
    rot = np.concatenate([rows, np.cross(rows[..., 0, :], rows[..., 1, :])[..., None, :]], -2)
    return rot, sing.mean(axis=-1)


def fit_yaw(rotation: np.ndarray) -> np.ndarray:
    """Yaw in degrees of fitted rotations (..., 3, 3); > 0: the nose toward the image's
    right (the shape prior's convention)."""
    return np.degrees(np.arctan2(rotation[..., 0, 2], rotation[..., 2, 2]))


def near_side(prior: ShapePrior, rotation: np.ndarray, margin: float = 0.02) -> np.ndarray:
    """Indices of the landmarks on the half of the face that a fit's ``rotation`` turns
    toward the camera, the midline included (mean-shape x within ``margin`` of the
    face's width of it): on a turned face, the points the image shows."""
    x = prior.mean[:, 0]
    # A point at frontal x comes out at depth rotation[2, 0] * x (larger = closer).
    side = 1.0 if float(np.asarray(rotation)[2, 0]) >= 0 else -1.0
    return np.flatnonzero(side * x >= -margin * float(np.ptp(x)))


def fit_to_2d(
    prior: ShapePrior,
    points_2d: np.ndarray,
    regulariser: float = 1.0,
    iterations: int = 10,
    pose_steps: int = 3,
    visible: np.ndarray | None = None,
) -> Fit:
    """Fit the prior to 2D landmarks ``(68, 2)`` (or a batch ``(N, 68, 2)``) in image pixels.

    Scaled orthographic camera ``x_2d = s * (R @ X)[:2] + t`` with shape
    ``X = mean + sum_k c_k basis_k``. Alternating least squares, starting from the mean
    shape: the pose is initialised by an affine camera solve projected onto the nearest
    scaled rotation, then refined each round by ``pose_steps`` orthogonal Procrustes steps
    (3D Procrustes on the 2D points completed with the current depths, which never
    increases the 2D error); the coefficients are a linear Tikhonov solve with weight
    ``regulariser / stddev^2`` (see the module docstring for the units).

    ``visible``: indices of the points to fit (the others are ignored, e.g. a jaw drawn
    on the outline rather than where its 3D points project); all 68 come back.
    """
    if visible is not None:
        return _fit_visible(prior, points_2d, np.asarray(visible), regulariser, iterations,
                            pose_steps)  # fmt: skip
    pts = np.asarray(points_2d, dtype=np.float64)
    single = pts.ndim == 2
    if single:
        pts = pts[None]
    n_points = len(prior.mean)
    if pts.ndim != 3 or pts.shape[1:] != (n_points, 2):
        raise ValueError(f"points_2d must be ({n_points}, 2) or (N, {n_points}, 2)")
    if not np.all(np.isfinite(pts)):
        raise ValueError("points_2d contain non-finite values")
    count = len(pts)
    mean, basis = prior.mean, prior.basis
    k = prior.num_components
    penalty = float(regulariser) / prior.stddev**2

    translation = pts.mean(axis=1)  # model shapes have zero centroid
    target = pts - translation[:, None]

    # Initial pose: affine camera for the mean shape, then the nearest scaled rotation.
    affine = np.einsum("nij,jk->nik", np.swapaxes(target, 1, 2), mean) @ np.linalg.inv(
        mean.T @ mean
    )
    rotation, scale = _scaled_rotation_from_affine(affine)
    scale = np.maximum(scale, _EPS)
    coeffs = np.zeros((count, k))
    shape = np.broadcast_to(mean, (count, n_points, 3))
    eye = np.eye(k)

    for _ in range(max(1, iterations)):
        # Shape: linear least squares in model units with the Gaussian prior.
        proj = rotation[:, :2]  # (N, 2, 3)
        jac = np.einsum("nde,kie->nidk", proj, basis).reshape(count, -1, k)
        rhs = (target / scale[:, None, None] - mean @ np.swapaxes(proj, 1, 2)).reshape(count, -1)
        normal = np.swapaxes(jac, 1, 2) @ jac + eye * penalty
        coeffs = np.linalg.solve(normal, np.einsum("nmk,nm->nk", jac, rhs)[..., None])[..., 0]
        shape = prior.shape(coeffs)
        # Pose: orthogonal Procrustes with the unknown depths taken from the current fit.
        for _ in range(max(1, pose_steps)):
            depth = scale[:, None] * np.einsum("nij,nj->ni", shape, rotation[:, 2])
            full = np.concatenate([target, depth[..., None]], axis=-1)
            rotation = _rotation_onto(shape, full)
            rotated = shape @ np.swapaxes(rotation, 1, 2)
            scale = np.einsum("nij,nij->n", rotated[..., :2], target) / np.maximum(
                np.einsum("nij,nij->n", rotated[..., :2], rotated[..., :2]), _EPS
            )
            scale = np.maximum(scale, _EPS)

    rotated = shape @ np.swapaxes(rotation, 1, 2) * scale[:, None, None]
    points = np.empty((count, n_points, 3))
    points[..., :2] = rotated[..., :2] + translation[:, None]
    points[..., 2] = rotated[..., 2] - rotated[..., 2].mean(axis=1, keepdims=True)
    residual = np.linalg.norm(points[..., :2] - pts, axis=-1).mean(axis=-1)
    if single:
        return Fit(
            points=points[0],
            rotation=rotation[0],
            scale=float(scale[0]),
            translation=translation[0],
            coefficients=coeffs[0],
            residual=float(residual[0]),
        )
    return Fit(points, rotation, scale, translation, coeffs, residual)


def _fit_visible(
    prior: ShapePrior,
    points_2d: np.ndarray,
    visible: np.ndarray,
    regulariser: float,
    iterations: int,
    pose_steps: int,
) -> Fit:
    """fit_to_2d on the ``visible`` points, extended to all 68 with the same shape
    coefficients and pose."""
    pts = np.asarray(points_2d, dtype=np.float64)
    single = pts.ndim == 2
    part = fit_to_2d(prior.subset(visible), pts[..., visible, :], regulariser, iterations,
                     pose_steps)  # fmt: skip
    shape = prior.shape(part.coefficients)
    # The subset's model origin is its own centroid.
    shape = shape - shape[..., visible, :].mean(-2, keepdims=True)
    rotated = shape @ np.swapaxes(part.rotation, -1, -2) * np.asarray(part.scale)[..., None, None]
    points = rotated.copy()
    points[..., :2] += np.asarray(part.translation)[..., None, :]
    points[..., 2] -= points[..., 2].mean(-1, keepdims=True)
    residual = np.linalg.norm(points[..., visible, :2] - pts[..., visible, :], axis=-1).mean(-1)
    return Fit(points, part.rotation, part.scale, part.translation, part.coefficients,
               float(residual) if single else residual)  # fmt: skip


def depth_from_2d(prior: ShapePrior, points_2d: np.ndarray, **kwargs: float) -> np.ndarray:
    """z ``(68,)`` (or ``(N, 68)``) for 2D landmarks: pixels, zero-mean, larger = closer."""
    return fit_to_2d(prior, points_2d, **kwargs).points[..., 2]
