"""Large poses by synthesis: turn a training face out of plane and re-render it.

In the spirit of 3DDFA's face profiling (Zhu et al., CVPR 2016), coarse and cheap:
the shape prior gives the 68 landmarks a depth; anchors on the forehead and cheeks,
a ring around the head and fixed points on the image border complete a mesh
(Delaunay in the source image); the face turns about its vertical axis, and each
triangle is warped by its own affine, far ones first, so that near surfaces cover far
ones and triangles that turn their back are dropped.

Labels follow 300-W's 2D convention: on the side turning away, a jaw point hidden
behind the cheek moves along its image row to the visible outline of the face
("landmark marching"); the other points are the turned landmarks.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.spatial import Delaunay

from util.shape_prior import ShapePrior, fit_to_2d

JAW = np.arange(17)
BROWS = np.arange(17, 27)
# cheek anchors: midway between these jaw points and these inner points
CHEEK_PAIRS = [(2, 31), (3, 48), (4, 48), (5, 48), (14, 35), (13, 54), (12, 54), (11, 54),
               (1, 36), (15, 45), (3, 31), (13, 35)]  # fmt: skip


def face_depths(prior: ShapePrior, points: np.ndarray) -> np.ndarray:
    """(N, 68) z of each face's landmarks (pixels, larger = closer) from the prior fit."""
    return fit_to_2d(prior, np.asarray(points, np.float64)).points[..., 2]


def _mesh(points: np.ndarray, z: np.ndarray, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Vertices (x, y, z) of the face, its surroundings and the image border."""
    lo, hi = points.min(0), points.max(0)
    size = float(np.sqrt(np.prod(hi - lo)))
    centre = points.mean(0)
    brow_z = z[BROWS]
    forehead_1 = np.column_stack(
        [points[BROWS, 0], points[BROWS, 1] - 0.18 * size, brow_z - 0.04 * size]
    )
    forehead_2 = np.column_stack([points[BROWS, 0] * 0.9 + centre[0] * 0.1,
                                  points[BROWS, 1] - 0.4 * size, brow_z - 0.14 * size])  # fmt: skip
    cheeks = np.array([
        [*(points[a] + points[b]) / 2, (z[a] + z[b]) / 2 + 0.06 * size] for a, b in CHEEK_PAIRS
    ])  # fmt: skip
    face = np.vstack([np.column_stack([points, z]), forehead_1, forehead_2, cheeks])
    outline = np.vstack([face[JAW], forehead_2])
    ring = outline.copy()
    ring[:, :2] = centre + (outline[:, :2] - centre) * 1.25
    ring[:, 2] = z.min() - 0.15 * size
    h, w = shape
    t = np.linspace(0, 1, 6)[:-1]
    border_xy = np.vstack([
        np.column_stack([t * (w - 1), np.zeros_like(t)]),
        np.column_stack([np.full_like(t, w - 1), t * (h - 1)]),
        np.column_stack([(1 - t) * (w - 1), np.full_like(t, h - 1)]),
        np.column_stack([np.zeros_like(t), (1 - t) * (h - 1)]),
    ])  # fmt: skip
    border = np.column_stack([border_xy, np.full(len(border_xy), z.min() - 2.0 * size)])
    return {"face": face, "ring": ring, "border": border, "centre": centre, "size": size}


def _turn(vertices: np.ndarray, centre_x: float, yaw: float) -> np.ndarray:
    """Rotate (x, y, z) about the vertical axis through (centre_x, z = 0)."""
    c, s = np.cos(yaw), np.sin(yaw)
    out = vertices.copy()
    dx = vertices[:, 0] - centre_x
    out[:, 0] = centre_x + dx * c + vertices[:, 2] * s
    out[:, 2] = vertices[:, 2] * c - dx * s
    return out


def _signed_area(tri: np.ndarray) -> float:
    (x0, y0), (x1, y1), (x2, y2) = tri
    return 0.5 * ((x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0))


def _warp_triangle(
    src_img: np.ndarray, dst_img: np.ndarray, src: np.ndarray, dst: np.ndarray
) -> None:
    x, y, w, h = cv2.boundingRect(np.round(dst).astype(np.int32))
    H, W = dst_img.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w + 1, W), min(y + h + 1, H)
    if x1 <= x0 or y1 <= y0:
        return
    matrix = cv2.getAffineTransform(src.astype(np.float32), (dst - [x0, y0]).astype(np.float32))
    patch = cv2.warpAffine(src_img, matrix, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT_101)  # fmt: skip
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillConvexPoly(mask, np.round((dst - [x0, y0]) * 4).astype(np.int32), 1, cv2.LINE_AA, 2)
    region = dst_img[y0:y1, x0:x1]
    region[mask > 0] = patch[mask > 0]


def _outline_x(
    vertices: np.ndarray, triangles: np.ndarray, row: float, side: float
) -> float | None:
    """Outermost x (toward ``side``: +1 right, -1 left) where front-facing triangles of
    the turned face cross image row ``row``."""
    best = None
    for tri in triangles:
        pts = vertices[tri, :2]
        if _signed_area(pts) <= 0:
            continue
        xs = []
        for a, b in ((0, 1), (1, 2), (2, 0)):
            (xa, ya), (xb, yb) = pts[a], pts[b]
            if (ya - row) * (yb - row) <= 0 and ya != yb:
                xs.append(xa + (row - ya) / (yb - ya) * (xb - xa))
        if xs:
            x = max(xs) if side > 0 else min(xs)
            if best is None or (x - best) * side > 0:
                best = x
    return best


def turn_face(
    image: np.ndarray,
    points: np.ndarray,
    z: np.ndarray,
    yaw_deg: float,
    carry: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The face turned by ``yaw_deg`` about its vertical axis: (image, 68 labels in the
    2D convention, ``carry`` turned). ``carry``: (K, 3) points x, y, z in the same frame
    as ``points`` and ``z`` (the 3D-convention landmarks), turned with the face."""
    mesh = _mesh(np.asarray(points, np.float64), np.asarray(z, np.float64), image.shape[:2])
    yaw = np.deg2rad(yaw_deg)
    cx = float(mesh["centre"][0])
    moving = np.vstack([mesh["face"], mesh["ring"]])
    source = np.vstack([moving, mesh["border"]])
    turned = np.vstack([_turn(moving, cx, yaw), mesh["border"]])
    # The border stays; keep the turned head inside it.
    turned[:, 0] = np.clip(turned[:, 0], 0, image.shape[1] - 1)
    triangles = Delaunay(source[:, :2]).simplices
    # Orient every triangle counter-clockwise in the source (y down: positive area).
    for i, tri in enumerate(triangles):
        if _signed_area(source[tri, :2]) < 0:
            triangles[i] = tri[[0, 2, 1]]
    depth = turned[triangles, 2].mean(1)
    out = image.copy()
    for i in np.argsort(depth):
        tri = triangles[i]
        dst = turned[tri, :2]
        if _signed_area(dst) <= 0.5:  # turned its back, or edge-on: hidden
            continue
        _warp_triangle(image, out, source[tri, :2], dst)

    labels = turned[:68, :2].copy()
    n_face = len(mesh["face"])
    face_tris = np.array([t for t in triangles if t.max() < n_face])
    # The side turning away: its jaw half ends up farther from the camera.
    far_left = turned[0:8, 2].mean() < turned[9:17, 2].mean()
    far_jaw, side = (range(0, 8), -1.0) if far_left else (range(9, 17), 1.0)
    for j in far_jaw:
        x = _outline_x(turned, face_tris, float(labels[j, 1]), side)
        if x is not None and (x - labels[j, 0]) * side > 0:
            labels[j, 0] = x
    carried = None if carry is None else _turn(np.asarray(carry, np.float64), cx, yaw)
    return out, labels.astype(np.float32), carried


def facing(points: np.ndarray) -> float:
    """Which way a face already looks: the nose tip's place between the jaw ends,
    minus the middle (> 0: toward the image's right)."""
    left, right, nose = points[0, 0], points[16, 0], points[30, 0]
    return float((nose - left) / max(right - left, 1e-6) - 0.5)


def look_side(yaw_now: float, rng: np.random.Generator) -> float:
    """The way to turn a face at ``yaw_now`` degrees (the prior fit's, ``fit_yaw``): on,
    the way it already looks (turning it back would have to show what the photo
    hides), or either way for a near-frontal face. +1 or -1, in ``turn_face``'s sense."""
    return float(np.sign(yaw_now)) if abs(yaw_now) > 5 else (1.0 if rng.random() < 0.5 else -1.0)


def turn_to(yaw_now: float, total: float, look: float) -> float:
    """The turn that brings a face at ``yaw_now`` degrees to ``total`` degrees of yaw
    the ``look`` way (never back: a face already turned more keeps its yaw)."""
    return look * max(total, abs(yaw_now)) - yaw_now


def random_total_turn(
    yaw_now: float, rng: np.random.Generator, least: float = 30.0, most: float = 88.0
) -> float:
    """A turn to a total yaw drawn uniformly in [``least``, ``most``] degrees, so that
    profiles are as common as half-turned faces. Measured with turns drawn as in
    ``random_yaw`` (few faces past 60 degrees in total, none past 75): the 3D maps
    turned faces 27 degrees too little at 70-80 degrees of yaw."""
    look = look_side(yaw_now, rng)
    return turn_to(yaw_now, float(rng.uniform(least, most)), look)


def random_yaw(points: np.ndarray, rng: np.random.Generator, most: float = 45.0) -> float:
    """A turn that moves the face further the way it already looks (turning it back
    would have to show what the photo hides), up to ``most`` degrees; either way
    for a near-frontal face."""
    look = facing(points)
    sign = np.sign(look) if abs(look) > 0.06 else (1.0 if rng.random() < 0.5 else -1.0)
    # A face already well turned gets less, so the total stays below about 65 degrees.
    limit = most * (1.0 - min(abs(look) / 0.35, 0.6))
    return float(sign * rng.uniform(10.0, max(limit, 12.0)))
