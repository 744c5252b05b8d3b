"""What each kind of model file promises, as typed data parsed once when the file loads.

A model's spec (util/runtime.py) is JSON: the tensor contract (input size, channel
order, normalisation) plus the facts of its kind under ``extra``. This module is the
one place that reads ``extra``: one dataclass per kind declares every key the stages
use, its type and its default. A missing or malformed key is a one-line ModelError
naming the file and the key, raised when the file loads, not deep inside a stage.

Keys the code does not read (provenance such as ``trained_by``, ``training_data``,
``quantization``) stay in the spec for people and are ignored here.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .landmarks import NUM_LANDMARKS

# Where a detector's boxes sit on the face's landmark box (training/detector_box_stats.py
# measures them and writes them into the detector's spec under this key).
BOX_STATS_KEY = "box_vs_landmarks"
BOX_STATS_FIELDS = ("centre_dx", "centre_dy", "size_ratio")

_REQUIRED = object()


class SpecError(ValueError):
    """A key of a spec that is missing or malformed (util.runtime turns it into a
    ModelError naming the file)."""


def _fact(parse: Callable[[Any], Any], default: Any = _REQUIRED) -> Any:
    """A spec key: how it is parsed, and its default (none: the key is required)."""
    if default is _REQUIRED:
        return field(metadata={"parse": parse})
    return field(default=default, metadata={"parse": parse})


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(f"a number, not {value!r}")
    return float(value)


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(f"a positive whole number, not {value!r}")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise SpecError(f"text, not {value!r}")
    return value


def _names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"a list of names, not {value!r}")
    return tuple(value)


def _mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SpecError(f"an object, not {value!r}")
    return value


def _optional(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else parse(value)


@dataclass(frozen=True)
class PresenceReferee:
    """An int8 file's presence band read by the fp32 file it was quantized from."""

    model: str  # that file's name, beside the int8 one
    low: float
    high: float


def _referee(value: Any) -> PresenceReferee:
    try:
        return PresenceReferee(
            _text(value["model"]), _number(value["low"]), _number(value["high"])
        )
    except (KeyError, TypeError, SpecError):
        raise SpecError(f'{{"model": file, "low": x, "high": y}}, not {value!r}') from None


def _refit(value: Any) -> tuple[float, float]:
    """{"from_yaw": deg, "regulariser": r} -> (deg, r)."""
    try:
        return _number(value["from_yaw"]), _number(value["regulariser"])
    except (KeyError, TypeError, SpecError):
        raise SpecError(f'{{"from_yaw": deg, "regulariser": r}}, not {value!r}') from None


def _rotation(value: Any) -> np.ndarray:
    try:
        frame = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        frame = None
    if frame is None or frame.shape != (3, 3) or not np.allclose(
        frame @ frame.T, np.eye(3), atol=1e-4
    ):
        raise SpecError("a 3x3 rotation")
    return frame


def _offsets(value: Any) -> np.ndarray:
    try:
        offsets = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        offsets = None
    if offsets is None or offsets.shape != (NUM_LANDMARKS, 2):
        raise SpecError(f"{NUM_LANDMARKS} (dx, dy) pairs")
    return offsets


def _box_stats(value: Any) -> dict[str, float]:
    """{field: mean} for BOX_STATS_FIELDS, plus {field_std: spread} where measured (the
    spreads are for training's jittered boxes; the tool uses only the means)."""
    if not isinstance(value, dict):
        raise SpecError(f"an object, not {value!r}")
    spreads = [f"{key}_std" for key in BOX_STATS_FIELDS if f"{key}_std" in value]
    try:
        return {key: _number(value[key]) for key in [*BOX_STATS_FIELDS, *spreads]}
    except (KeyError, SpecError) as exc:
        raise SpecError(f"incomplete ({exc!r})") from None


@dataclass(frozen=True)
class CodecFacts:
    """How a model's heatmaps are made and decoded (util.heatmap_codec); None: the
    defaults of FAN's files (maps a quarter of the crop, "dark" decoding)."""

    heatmap_size: int | None = _fact(_optional(_count), None)
    heatmap_sigma: float | None = _fact(_optional(_number), None)
    decode: str = _fact(_text, "dark")
    centroid_radius: float | None = _fact(_optional(_number), None)
    # Per-landmark corrections (heatmap px) measured by training/calibrate.py.
    landmark_offsets: np.ndarray | None = _fact(_optional(_offsets), None)
    # How they change per 90 deg of yaw, for a face turned to the shape fit's positive
    # yaw (mirrored for the other side): training/calibrate_3d.py, fan3d files only.
    landmark_offsets_per_yaw: np.ndarray | None = _fact(_optional(_offsets), None)
    landmark_offsets_from: str | None = _fact(_optional(_text), None)  # what measured them


def _codec(extra: dict[str, Any], source: str | os.PathLike) -> CodecFacts:
    return read_facts(CodecFacts, extra, source)


@dataclass(frozen=True)
class LandmarkFacts:
    """A FAN-format landmark model (kinds fan2d and fan3d)."""

    # The crop it was trained on (util.crop.crop_box): the wrong one shifts every point.
    crop_scale: float = _fact(_number)
    crop_shift_y: float = _fact(_number)
    codec: CodecFacts = field(default_factory=CodecFacts, metadata={"nested": _codec})
    # Which output is which; empty: heatmaps only (the original FAN files).
    outputs: tuple[str, ...] = _fact(_names, ())
    # The presence check (training/choose_presence.py) and the detector threshold chosen
    # with it; the int8 file's band read by its fp32 referee (training/quantize.py).
    presence_threshold: float | None = _fact(_optional(_number), None)
    detector_min_score: float | None = _fact(_optional(_number), None)
    presence_referee: PresenceReferee | None = _fact(_optional(_referee), None)
    upright_read_quality: float | None = _fact(_optional(_number), None)
    # The file beside this one whose mirror view stands in for this model's under
    # --flip auto (a cheaper network: util.aligner, docs/experiments.md).
    mirror_model: str | None = _fact(_optional(_text), None)
    # Median heatmap peak below which a followed face counts as lost (video).
    follow_min_score: float = _fact(_number, 0.3)
    # fan3d: the shape fit for its points (training/evaluate_3d.py) and its pose frame
    # (training/pose_frame.py).
    shape_fit_regulariser: float = _fact(_number, 1.0)
    shape_fit_turned: tuple[float, float] | None = _fact(_optional(_refit), None)
    shape_fit_far_side: tuple[float, float] | None = _fact(_optional(_refit), None)
    pose_frame: np.ndarray | None = _fact(_optional(_rotation), None)
    # How the file was made (training/from_onnx.py rebuilds the network from these).
    precision: str = _fact(_text, "fp32")
    architecture: dict[str, Any] | None = _fact(_optional(_mapping), None)


@dataclass(frozen=True)
class DepthFacts:
    """A depth model: the crop plus 68 Gaussian maps in, one z per landmark out."""

    heatmap_sigma: float = _fact(_number)  # of its input maps, crop px (in codec too)
    z_scale: float = _fact(_number)  # model z -> crop pixels
    z_sign: float = _fact(_number)  # +1: larger z is closer
    precision: str = _fact(_text, "fp32")
    architecture: dict[str, Any] | None = _fact(_optional(_mapping), None)
    codec: CodecFacts = field(default_factory=CodecFacts, metadata={"nested": _codec})


@dataclass(frozen=True)
class DetectorFacts:
    """A BlazeFace detector: MediaPipe's anchors and decoding options."""

    anchors: dict[str, Any] = _fact(_mapping)
    min_score: float = _fact(_number)
    box_scale: float = _fact(_number)
    raw_score_limit: float = _fact(_number)
    nms_threshold: float = _fact(_number)
    num_keypoints: int = _fact(_count, 6)
    # None: nobody measured this detector; video following refuses it.
    box_vs_landmarks: dict[str, float] | None = _fact(_optional(_box_stats), None)


ModelFacts = LandmarkFacts | DepthFacts | DetectorFacts

# Each spec ``kind``: what it is (for messages) and the facts it carries.
FACTS_BY_KIND: dict[str, tuple[str, type]] = {
    "fan2d": ("a 2D landmark model", LandmarkFacts),
    "fan3d": ("a 3D-convention landmark model", LandmarkFacts),
    "depth": ("a depth model", DepthFacts),
    "blazeface": ("a BlazeFace detector", DetectorFacts),
}


def kind_name(kind: str) -> str:
    """What a spec kind is, in words."""
    return FACTS_BY_KIND[kind][0] if kind in FACTS_BY_KIND else "unknown kind"


def required_keys(kind: str) -> tuple[str, ...]:
    """The spec keys a kind must carry (its facts without a default)."""
    return tuple(
        fact.name
        for fact in dataclasses.fields(FACTS_BY_KIND[kind][1])
        if fact.default is dataclasses.MISSING and fact.default_factory is dataclasses.MISSING
    )


def parse_facts(kind: str, extra: dict[str, Any], source: str | os.PathLike) -> ModelFacts | None:
    """The typed facts of a spec of ``kind`` (None for kinds without any); a SpecError
    naming ``source`` and the key when one is missing or malformed."""
    if kind not in FACTS_BY_KIND:
        return None
    return read_facts(FACTS_BY_KIND[kind][1], extra, source, kind)


def read_facts(facts_type: type, extra: dict[str, Any], source: str | os.PathLike,
               kind: str | None = None) -> Any:  # fmt: skip
    """``facts_type`` filled from a spec's ``extra``: each field's key parsed, defaults
    for the keys left out, nested facts read from the same keys."""
    values = {}
    for fact in dataclasses.fields(facts_type):
        if "nested" in fact.metadata:
            values[fact.name] = fact.metadata["nested"](extra, source)
        elif fact.name in extra:
            try:
                values[fact.name] = fact.metadata["parse"](extra[fact.name])
            except SpecError as exc:
                raise SpecError(f"{source}: spec key {fact.name} must be {exc}") from None
        elif fact.default is dataclasses.MISSING and fact.default_factory is dataclasses.MISSING:
            needed = kind_name(kind) if kind else facts_type.__name__
            raise SpecError(
                f"{source}: spec of kind {kind!r} lacks {fact.name} (needed by {needed})"
            )
    return facts_type(**values)
