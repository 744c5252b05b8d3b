"""Draw: landmarks and contour lines per group, a side view of the 3D points, and the
heatmap grid. Images are uint8 RGB in and out."""

from __future__ import annotations

import cv2
import numpy as np

from .face import Face
from .landmarks import GROUPS

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


TEXT_COLOUR = (235, 235, 235)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def mark_sizes(bbox: np.ndarray) -> tuple[int, int]:
    """(line thickness, dot radius) in pixels for a face of this box: from the face's
    size, not the image's, so a small face in a large photo keeps distinct dots (a
    100 px face gets 1 and 1)."""
    x1, y1, x2, y2 = (float(v) for v in bbox[:4])
    size = float(np.sqrt(max(x2 - x1, 1.0) * max(y2 - y1, 1.0)))
    return max(1, round(size / 250)), max(1, round(size / 100))


def put_label(canvas: np.ndarray, text: str, origin: tuple[int, int], scale: float) -> None:
    """Light text with a dark outline, readable on any background; ``origin`` is the
    text's bottom-left corner."""
    x, y = int(origin[0]), int(origin[1])
    thickness = max(1, round(scale * 2))
    cv2.putText(canvas, text, (x, y), FONT, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(canvas, text, (x, y), FONT, scale, TEXT_COLOUR, thickness, cv2.LINE_AA)


def draw_contours(canvas: np.ndarray, points: np.ndarray, thickness: int, radius: int) -> None:
    """Draw the 68 points and their group contours onto ``canvas`` in place."""
    for name, (indices, closed) in GROUPS.items():
        colour = GROUP_COLOURS[name]
        pts = np.round(points[list(indices), :2] * 16).astype(np.int32)  # 4 fractional bits
        cv2.polylines(canvas, [pts], closed, colour, thickness, cv2.LINE_AA, shift=4)
        for x, y in pts:
            cv2.circle(canvas, (int(x), int(y)), radius * 16, colour, -1, cv2.LINE_AA, shift=4)


# Head-pose axes (RGB): the head's x (the image's right on a frontal face), its up, and
# its forward (out of the face).
POSE_AXIS_COLOURS = ((255, 60, 60), (60, 230, 60), (70, 120, 255))
NOSE_TIP = 30


def draw_pose_axes(canvas: np.ndarray, face: Face, thickness: int) -> None:
    """The face's head-pose axes from its nose tip, half the face box long."""
    if face.pose is None:
        return
    points = face.landmarks_3d if face.landmarks_3d is not None else face.landmarks
    origin = np.asarray(points[NOSE_TIP, :2], np.float64)
    x1, y1, x2, y2 = (float(v) for v in face.bbox[:4])
    length = 0.5 * np.sqrt(max(x2 - x1, 1.0) * max(y2 - y1, 1.0))
    axes = face.pose.image_rotation.T * np.array([1.0, -1.0, 1.0])[:, None]  # x, up, forward
    start = (int(round(origin[0])), int(round(origin[1])))
    for axis, colour in zip(axes, POSE_AXIS_COLOURS, strict=True):
        end = origin + length * axis[:2]
        cv2.arrowedLine(canvas, start, (int(round(end[0])), int(round(end[1]))), colour,
                        max(2, thickness), cv2.LINE_AA, tipLength=0.15)  # fmt: skip


def draw_faces(
    image_rgb: np.ndarray, faces: list[Face], draw_boxes: bool = True, draw_pose: bool = False
) -> np.ndarray:
    """A copy of the image with every face's box, points and contours (and with
    ``draw_pose`` its head-pose axes); with several faces each is numbered (1, 2, ...)
    as in the 3D side view."""
    canvas = image_rgb.copy()
    for number, face in enumerate(faces, start=1):
        thickness, radius = mark_sizes(face.bbox)
        x1, y1, x2, y2 = (int(round(v)) for v in face.bbox)
        if draw_boxes:
            cv2.rectangle(canvas, (x1, y1), (x2, y2), BOX_COLOUR, thickness, cv2.LINE_AA)
        draw_contours(canvas, face.landmarks, thickness, radius)
        if draw_pose:
            draw_pose_axes(canvas, face, thickness)
        if len(faces) > 1:
            scale = max(0.4, (x2 - x1) / 300)
            put_label(canvas, str(number), (x1 + 3 * thickness, y1 - 4 * thickness), scale)
    return canvas


SIDE_VIEW_TITLE_HEIGHT = 28  # px above the faces for the panel's label


def side_view(faces: list[Face], height: int, yaw_deg: float = 70.0) -> np.ndarray:
    """A panel with each face's 3D points seen from ``yaw_deg`` off its own front: a
    face with a head pose is first turned to face the camera (its pose undone), so a
    face already turned is not shown nearly frontal; one without is turned as it is.

    The panel has a fixed width (half the height, at least 160 px) however many faces
    there are: they share it in a grid of slots, numbered as in draw_faces. Points
    farther from the camera are darker, so depth is readable at a glance.
    """
    panel_w = max(height // 2, 160)
    panel = np.full((height, panel_w, 3), 24, np.uint8)
    shown = [(k, f) for k, f in enumerate(faces, start=1) if f.landmarks_3d is not None]
    top = min(SIDE_VIEW_TITLE_HEIGHT, height // 4)
    if shown:
        # Columns so that slots stay about as tall as wide within the panel.
        columns = max(1, min(len(shown), round(np.sqrt(len(shown) * panel_w / (height - top)))))
        rows = -(-len(shown) // columns)
        slot_w, slot_h = panel_w / columns, (height - top) / rows
    rad = np.deg2rad(yaw_deg)
    for i, (number, face) in enumerate(shown):
        row, column = divmod(i, columns)
        pts = np.asarray(face.landmarks_3d, dtype=np.float64)
        centred = pts - pts.mean(0)
        if face.pose is not None:  # rows p = R X: X = p R
            centred = centred @ face.pose.image_rotation
        # x' = x cos - z sin: turning the face shows its depth as horizontal offset.
        x = centred[:, 0] * np.cos(rad) - centred[:, 2] * np.sin(rad)
        depth = centred[:, 0] * np.sin(rad) + centred[:, 2] * np.cos(rad)
        y = centred[:, 1]
        x, y = x - (x.max() + x.min()) / 2, y - (y.max() + y.min()) / 2  # centre the extent
        span = max(np.ptp(x), np.ptp(y), 1e-6)
        zoom = 0.8 * min(slot_w, slot_h) / span
        centre = (slot_w * (column + 0.5), top + slot_h * (row + 0.5))
        view = np.stack([x * zoom + centre[0], y * zoom + centre[1]], axis=1)
        draw_contours(panel, view, 1, 1)
        shade = (depth - depth.min()) / max(np.ptp(depth), 1e-6)
        dot = max(1, min(3, round(min(slot_w, slot_h) / 60)))
        for (px, py), s in zip(view, shade, strict=True):
            cv2.circle(panel, (int(px), int(py)), dot, (int(80 + 175 * s),) * 3, 1, cv2.LINE_AA)
        if len(faces) > 1:
            put_label(
                panel, str(number), (int(slot_w * column) + 4, int(top + slot_h * row) + 16), 0.5
            )
    put_label(panel, f"3D: {yaw_deg:.0f} deg off front", (6, top - 10), 0.45)
    put_label(panel, "light = nearer", (6, height - 8), 0.4)
    return panel


def with_side_view(image_rgb: np.ndarray, faces: list[Face]) -> np.ndarray:
    """The drawn image with the side-view panel to its right (one fixed-width panel
    for all the faces)."""
    return np.hstack([image_rgb, side_view(faces, image_rgb.shape[0])])


def heatmap_grid(heatmaps: np.ndarray, columns: int = 12, tile: int = 64) -> np.ndarray:
    """The 68 heatmaps of one face as one colour-mapped grid image (uint8 RGB), each
    tile numbered with its landmark index (0-based, as in the JSON and .pts files)."""
    count = len(heatmaps)
    rows = -(-count // columns)
    grid = np.zeros((rows * tile, columns * tile), np.float32)
    for k, heat in enumerate(heatmaps):
        r, c = divmod(k, columns)
        grid[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] = cv2.resize(
            heat.astype(np.float32), (tile, tile), interpolation=cv2.INTER_LINEAR
        )
    scaled = (np.clip(grid, 0, 1) * 255).astype(np.uint8)
    image = cv2.applyColorMap(scaled, cv2.COLORMAP_JET)[..., ::-1].copy()
    for k in range(count):
        r, c = divmod(k, columns)
        put_label(image, str(k), (c * tile + 2, r * tile + max(8, tile // 5)), tile / 200)
    return image
