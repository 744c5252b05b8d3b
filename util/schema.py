"""The output schema: every field of a record (one per image or video frame) and of a
face, declared once. The JSON Lines writer, the Parquet writer (util/ray_engine.py) and
the README's field list are all made from these tables, so a new output is one entry
here plus the code that computes it.

A face field's ``value`` reads it from a ``Face``; None leaves it out of the JSON (an
optional output that this run does not make, e.g. ``landmarks_3d`` without -3).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # face.py imports this module for Face.to_json
    from .face import Face


class Kind(Enum):
    """A field's value type, as JSON writes it and as Parquet stores it."""

    STRING = "string"
    INT = "integer"
    FLOAT = "number"
    FLOATS = "list of numbers"
    POINTS = "list of [x, y(, z)] lists"
    MATRIX = "list of rows"
    ANGLES = "object {yaw, pitch, roll}"
    CROP = "object {file, template, size, matrix} or {error}"
    FACES = "list of face objects (Parquet: one row per face, its index in `face`)"


@dataclass(frozen=True)
class Field:
    name: str
    kind: Kind
    doc: str
    value: Callable[[Face], object] | None = None  # face fields only
    optional: bool = False  # left out of a face's JSON when its value is None


def _rounded(values: np.ndarray, decimals: int) -> list:
    """Nested lists of Python floats rounded to ``decimals``, as JSON writes them.
    (numpy rounds whole arrays: 68 x 2 Python round() calls were 3 % of a video frame's
    CPU, benchmarks.cpu_profile video.)"""
    return np.round(np.asarray(values, dtype=np.float64), decimals).tolist()


def _maybe(value: object, convert: Callable[[object], object]) -> object:
    return None if value is None else convert(value)


FACE_FIELDS: tuple[Field, ...] = (
    Field("bbox", Kind.FLOATS, "face box x1, y1, x2, y2 (pixels)", lambda f: _rounded(f.bbox, 2)),
    Field("score", Kind.FLOAT, "detection score", lambda f: round(float(f.score), 4)),
    Field(
        "presence",
        Kind.FLOAT,
        "the 2D model's face probability (null for models without that output)",
        lambda f: _maybe(f.presence, lambda p: round(float(p), 4)),
    ),
    Field(
        "landmarks",
        Kind.POINTS,
        "68 points x, y (pixels, 2D convention)",
        lambda f: _rounded(f.landmarks, 2),
    ),  # fmt: skip
    Field(
        "landmark_scores",
        Kind.FLOATS,
        "68 heatmap peaks (0-1)",
        lambda f: _rounded(f.landmark_scores, 4),
    ),  # fmt: skip
    Field(
        "landmarks_3d",
        Kind.POINTS,
        "with -3: 68 points x, y, z (pixels; 3D convention; z zero-mean, larger = closer)",
        lambda f: _maybe(f.landmarks_3d, lambda p: _rounded(p, 2)),
        optional=True,
    ),
    Field(
        "pose",
        Kind.ANGLES,
        "with -3: head pose in degrees, AFLW2000-3D's Pose_Para convention (README)",
        lambda f: _maybe(
            f.pose, lambda p: {k: round(getattr(p, k), 2) for k in ("yaw", "pitch", "roll")}
        ),  # fmt: skip
        optional=True,
    ),
    Field(
        "rotation",
        Kind.MATRIX,
        "with -3: the pose's 3x3 rotation, Rx(pitch) Ry(yaw) Rz(roll) (README)",
        lambda f: _maybe(f.pose, lambda p: _rounded(p.rotation, 5)),
        optional=True,
    ),
    Field(
        "crop",
        Kind.CROP,
        "with --crops: the aligned crop's file, template, size and 2x3 image-to-crop "
        "matrix (or why it was not written)",
        lambda f: f.crop_info,
        optional=True,
    ),
)

RECORD_FIELDS: tuple[Field, ...] = (
    Field("image", Kind.STRING, "the input's path (a video's source for frames)"),
    Field("frame", Kind.INT, "video: the frame's index from 0 (images: absent)"),
    Field("width", Kind.INT, "image width in pixels (null when unreadable)"),
    Field("height", Kind.INT, "image height in pixels (null when unreadable)"),
    Field("faces", Kind.FACES, "the faces found, best detection score first"),
    Field("error", Kind.STRING, "why the input failed, else null"),
)


def face_json(face: Face) -> dict:
    """A face's JSON object, in FACE_FIELDS order."""
    data = {}
    for field in FACE_FIELDS:
        value = field.value(face)
        if value is not None or not field.optional:
            data[field.name] = value
    return data


def record_json(
    path: Path | str,
    faces: list[Face],
    error: str | None,
    image_shape: tuple[int, ...] | None,
    frame: int | None = None,
) -> dict:
    """One image's (or video frame's) record, in RECORD_FIELDS order."""
    values = {
        "image": str(path),
        "frame": frame,
        "width": image_shape[1] if image_shape else None,
        "height": image_shape[0] if image_shape else None,
        "faces": [face_json(face) for face in faces],
        "error": error,
    }
    return {f.name: values[f.name] for f in RECORD_FIELDS if f.name != "frame" or frame is not None}


def parquet_schema(pa):  # noqa: ANN001, ANN201 - pyarrow module and Schema, imported lazily
    """One row per face: the record fields (``faces`` becomes ``face``, the face's index,
    null for an image without faces) and then every face field."""
    types = {
        Kind.STRING: pa.string(),
        Kind.INT: pa.int32(),
        Kind.FLOAT: pa.float64(),
        Kind.FLOATS: pa.list_(pa.float64()),
        Kind.POINTS: pa.list_(pa.list_(pa.float64())),
        Kind.MATRIX: pa.list_(pa.list_(pa.float64())),
        Kind.ANGLES: pa.struct([(k, pa.float64()) for k in ("yaw", "pitch", "roll")]),
        Kind.CROP: pa.struct(
            [("file", pa.string()), ("template", pa.string()), ("size", pa.int32()),
             ("matrix", pa.list_(pa.list_(pa.float64()))), ("error", pa.string())]
        ),  # fmt: skip
    }
    columns = [
        ("face", pa.int32()) if f.name == "faces" else (f.name, types[f.kind])
        for f in RECORD_FIELDS
        if f.name != "frame"
    ]
    return pa.schema(columns + [(f.name, types[f.kind]) for f in FACE_FIELDS])


def fields_markdown() -> str:
    """The README's field list."""
    lines = ["| record field | type | meaning |", "| --- | --- | --- |"]
    lines += [f"| `{f.name}` | {f.kind.value} | {f.doc} |" for f in RECORD_FIELDS]
    lines += ["", "| face field | type | meaning |", "| --- | --- | --- |"]
    lines += [f"| `{f.name}` | {f.kind.value} | {f.doc} |" for f in FACE_FIELDS]
    return "\n".join(lines)
