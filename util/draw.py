"""Draw: landmarks and contour lines per group, a side view of the 3D points, and the
heatmap grid. Images are uint8 RGB in and out."""

from __future__ import annotations

import cv2
import numpy as np

from util.landmarks import GROUPS

# One colour per group (RGB), chosen to stay distinct on skin tones.
GROUP_COLOURS: dict[str, tuple[int, int, int]] = {
    "jaw": (255, 200, 0),
    "right_brow": (255, 90, 40),
    "left_brow": (255, 90, 40),
    "nose_bridge": (0, 220, 255),
    "nose_base": (0, 220, 255),
    "right_eye": (60, 255, 60),
    "left_eye": (60, 255, 60),
    "outer_lips": (255, 40, 160),
    "inner_lips": (200, 120, 255),
}
BOX_COLOUR = (255, 255, 255)


def _thickness(image: np.ndarray) -> int:
    return max(1, int(round(max(image.shape[:2]) / 500)))


def draw_contours(canvas: np.ndarray, points: np.ndarray, thickness: int, radius: int) -> None:
    """Draw the 68 points and their group contours onto ``canvas`` in place."""
    for name, (indices, closed) in GROUPS.items():
        colour = GROUP_COLOURS[name]
        pts = np.round(points[list(indices), :2] * 16).astype(np.int32)  # 4 fractional bits
        cv2.polylines(canvas, [pts], closed, colour, thickness, cv2.LINE_AA, shift=4)
        for x, y in pts:
            cv2.circle(canvas, (int(x), int(y)), radius * 16, colour, -1, cv2.LINE_AA, shift=4)


def draw_faces(image_rgb: np.ndarray, faces: list, draw_boxes: bool = True) -> np.ndarray:
    """A copy of the image with every face's box, points and contours."""
    canvas = image_rgb.copy()
    thickness = _thickness(canvas)
    for face in faces:
        if draw_boxes:
            x1, y1, x2, y2 = (int(round(v)) for v in face.bbox)
            cv2.rectangle(canvas, (x1, y1), (x2, y2), BOX_COLOUR, thickness, cv2.LINE_AA)
        draw_contours(canvas, face.landmarks, thickness, thickness + 1)
    return canvas


def side_view(faces: list, height: int, yaw_deg: float = 70.0) -> np.ndarray:
    """A panel with each face's 3D points turned ``yaw_deg`` about the vertical axis.

    Faces stand side by side; points farther from the camera are darker, so depth is
    readable at a glance.
    """
    panel_w = max(height // 2, 160) * max(1, len(faces))
    panel = np.full((height, panel_w, 3), 24, np.uint8)
    slot = panel_w // max(1, len(faces))
    rad = np.deg2rad(yaw_deg)
    for i, face in enumerate(f for f in faces if f.landmarks_3d is not None):
        pts = np.asarray(face.landmarks_3d, dtype=np.float64)
        centred = pts - pts.mean(0)
        # x' = x cos - z sin: turning the face shows its depth as horizontal offset.
        x = centred[:, 0] * np.cos(rad) - centred[:, 2] * np.sin(rad)
        depth = centred[:, 0] * np.sin(rad) + centred[:, 2] * np.cos(rad)
        y = centred[:, 1]
        x, y = x - (x.max() + x.min()) / 2, y - (y.max() + y.min()) / 2  # centre the extent
        span = max(np.ptp(x), np.ptp(y), 1e-6)
        zoom = 0.8 * min(slot, height) / span
        view = np.stack([x * zoom + slot * (i + 0.5), y * zoom + height / 2], axis=1)
        draw_contours(panel, view, 1, 1)
        shade = (depth - depth.min()) / max(np.ptp(depth), 1e-6)
        for (px, py), s in zip(view, shade, strict=True):
            cv2.circle(panel, (int(px), int(py)), 3, (int(80 + 175 * s),) * 3, 1, cv2.LINE_AA)
    cv2.putText(
        panel,
        f"side view ({yaw_deg:.0f} deg)",
        (8, 20),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.5,
        (220, 220, 220),
        1,
        cv2.LINE_AA,
    )
    return panel


def with_side_view(image_rgb: np.ndarray, faces: list) -> np.ndarray:
    """The drawn image with the side-view panel to its right."""
    return np.hstack([image_rgb, side_view(faces, image_rgb.shape[0])])


def heatmap_grid(heatmaps: np.ndarray, columns: int = 12, tile: int = 64) -> np.ndarray:
    """The 68 heatmaps of one face as one colour-mapped grid image (uint8 RGB)."""
    count = len(heatmaps)
    rows = -(-count // columns)
    grid = np.zeros((rows * tile, columns * tile), np.float32)
    for k, heat in enumerate(heatmaps):
        r, c = divmod(k, columns)
        grid[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] = cv2.resize(
            heat.astype(np.float32), (tile, tile), interpolation=cv2.INTER_LINEAR
        )
    scaled = (np.clip(grid, 0, 1) * 255).astype(np.uint8)
    return cv2.applyColorMap(scaled, cv2.COLORMAP_JET)[..., ::-1].copy()
