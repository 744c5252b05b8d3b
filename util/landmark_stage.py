"""The landmark stage: crop a face, run the FAN model on it, decode its heatmaps.

The model turns a 256x256 face crop into 68 heatmaps of 64x64; the model's
``HeatmapCodec`` (util/heatmap_codec.py) turns them into crop points, and the crop's
affine maps those back to the image.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .crop import crop_box, crop_matrix, invert_matrix, transform_points, warp_crop
from .heatmap_codec import HeatmapCodec
from .landmarks import MIRROR_PERMUTATION, NUM_LANDMARKS
from .model_facts import LandmarkFacts
from .runtime import (
    Model,
    ModelError,
    ModelSpec,
    check_single_input,
    format_shape,
    load_model,
    shape_fits,
)

if TYPE_CHECKING:
    from .face import Face

# The original 2DFAN-4.onnx / 3DFAN-4.onnx carry no metadata: RGB, 0-1 floats, NCHW.
# Their crop is FAN's own (side about 2x the detector box); with BlazeFace boxes this
# is our best estimate, not a measured value (the original weights are not here).
ORIGINAL_FAN_SPEC = ModelSpec(
    kind="fan2d",
    input_size=(256, 256),
    channel_order="RGB",
    layout="NCHW",
    scale=1.0 / 255.0,
    extra={"heatmap_size": 64, "crop_scale": 2.0, "crop_shift_y": -0.05},
)
# 3DFAN-4.onnx: the same contract; its points are the 3D landmarks' projections.
ORIGINAL_FAN3D_SPEC = replace(ORIGINAL_FAN_SPEC, kind="fan3d")


@dataclass(frozen=True)
class FaceCrop:
    """A face crop and the affine that made it (original image -> crop pixels)."""

    image: np.ndarray  # uint8 RGB, crop_size x crop_size
    matrix: np.ndarray  # 2x3
    side: float  # side of the square in original-image pixels
    roll: float = 0.0  # degrees the crop is turned to make the face upright

    @property
    def inverse(self) -> np.ndarray:
        return invert_matrix(self.matrix)

    @classmethod
    def of_face(cls, image_rgb: np.ndarray, face: Face) -> FaceCrop:
        """The crop a face's 2D reading ended with (``Face.landmark_crop``), cut again
        from ``image_rgb``."""
        matrix, size = face.landmark_crop
        matrix = np.asarray(matrix, np.float64)
        side = size / float(np.hypot(*matrix[0, :2]))
        return cls(warp_crop(image_rgb, matrix, size), matrix, side, face.roll)


@dataclass(frozen=True)
class PresenceGate:
    """The presence check: a crop whose face presence is below ``threshold`` holds no
    face. No threshold (a model without presence output, or boxes read as given) or no
    presence rejects nothing."""

    threshold: float | None

    def rejects(self, presence: float | None) -> bool:
        return presence is not None and self.threshold is not None and presence < self.threshold


class LandmarkModel:
    """A FAN-format model with the crop it was trained for (from its spec).

    ``referee``: for an int8 file whose spec has a ``presence_referee`` band, the fp32
    model it was quantized from. Quantized features move the presence of non-faces
    (training/quantize.py measured the drift), so a crop whose int8 presence falls
    inside the band has its presence read by the referee; the heatmaps stay int8's.
    Face crops read about 1.0 and never pay for it."""

    def __init__(self, model: Model, referee: Model | None = None) -> None:
        self.model = model
        facts = model.facts
        if not isinstance(facts, LandmarkFacts):
            raise ModelError(f"{model.path}: spec kind {model.spec.kind!r}, not a landmark model")
        self.facts: LandmarkFacts = facts
        self.codec = HeatmapCodec.from_facts(model.spec, facts.codec)
        self._check_shapes()
        self.crop_scale = facts.crop_scale
        self.crop_shift_y = facts.crop_shift_y
        # Which output is which: our models name them in the spec; the original FAN
        # files have heatmaps only (the last output).
        names = list(facts.outputs)
        shapes = getattr(model, "output_shapes", None) or []
        ranked = [i for i, shape in enumerate(shapes) if len(shape) == 4]
        fallback = ranked[0] if len(ranked) == 1 else -1
        self.heatmap_output = names.index("heatmaps") if "heatmaps" in names else fallback
        self.presence_output = names.index("presence") if "presence" in names else None
        self.presence_threshold = facts.presence_threshold
        band = facts.presence_referee
        self.referee: LandmarkModel | None = None
        self.referee_band = (1.0, 0.0)  # empty
        if referee is not None and band is not None and self.presence_output is not None:
            self.referee = LandmarkModel(referee)
            if not self.referee.has_presence:
                raise ModelError(f"{referee.path}: no presence output to referee {model.path}")
            self.referee_band = (band.low, band.high)

    def _check_shapes(self) -> None:
        """A ModelError unless the file takes the crop and gives 68 heatmaps: one output
        (N, 68, H, W), alone or with one small extra output (e.g. a presence score)."""
        model = self.model
        check_single_input(model, model.spec.tensor_shape(3), "an RGB crop")
        outputs = getattr(model, "output_shapes", None)
        if outputs is None:
            return
        size = self.codec.heatmap_size
        wanted = (None, NUM_LANDMARKS, size, size)
        heatmaps = [s for s in outputs if len(s) == 4]
        if len(outputs) > 2 or len(heatmaps) != 1 or not shape_fits(heatmaps[0], wanted):
            given = ", ".join(format_shape(s) for s in outputs)
            raise ModelError(f"{model.path}: gives {given}, not heatmaps {format_shape(wanted)}")

    @property
    def has_presence(self) -> bool:
        """True when the model also says how likely its crop holds a face."""
        return self.presence_output is not None

    def crop(self, image_rgb: np.ndarray, bbox: np.ndarray, roll: float = 0.0) -> FaceCrop:
        """The model's square crop around a detection box, turned by ``roll`` degrees
        (the face's in-plane angle) so that the face in it is upright. The crop's
        downward shift follows the face's own down."""
        size = self.codec.crop_size
        centre, side = crop_box(bbox, self.crop_scale, 0.0)
        rad = np.deg2rad(roll)
        shift = self.crop_shift_y * side / self.crop_scale
        centre = centre + shift * np.array([-np.sin(rad), np.cos(rad)])
        matrix = crop_matrix(centre, side, size, roll)
        return FaceCrop(warp_crop(image_rgb, matrix, size), matrix, side, roll)

    def heatmaps(self, crop: FaceCrop, flip: bool = False) -> np.ndarray:
        """(V, 68, H, W) float32 heatmaps of one crop: V = 1, or 2 with ``flip``."""
        return self.run_crops([crop], flip)[0][0]

    def run_crops(
        self, crops: list[FaceCrop], flip: bool = False
    ) -> list[tuple[np.ndarray, float | None]]:
        """Per crop: ((V, 68, H, W) heatmap views, face presence or None).

        V = 1, or 2 with ``flip``: the mirrored crop too, whose maps come back mirrored
        with the iBUG left/right swap, so both views are in the crop's frame (mirroring
        crop pixel u to S-1-u maps heatmap column j to H-1-j exactly). Every view of
        every crop goes through the model in one call when it takes a batch.
        """
        images = []
        for crop in crops:
            images.append(crop.image)
            if flip:
                images.append(np.ascontiguousarray(crop.image[:, ::-1]))
        heat, presence = self._run(images)
        views = len(images) // max(len(crops), 1)
        results = []
        for i in range(len(crops)):
            maps = heat[i * views : (i + 1) * views]
            if flip:
                maps = np.stack([maps[0], maps[1][MIRROR_PERMUTATION, :, ::-1]])
            face = None if presence is None else float(presence[i * views : (i + 1) * views].mean())
            results.append((maps, face))
        return results

    def with_mirror_views(
        self, crops: list[FaceCrop], single: list[tuple[np.ndarray, float | None]]
    ) -> list[tuple[np.ndarray, float | None]]:
        """``run_crops(crops, flip=True)`` from ``single`` = ``run_crops(crops)``: only
        the mirrored crops go through the model. The upside-down check has the
        unmirrored views already; running them again cost a quarter of the landmark
        step of an image with flip (4 crops per face instead of 3)."""
        results = []
        for (maps, face), (mirrored, presence) in zip(
            single, self.mirror_views(crops), strict=True
        ):
            if face is not None and presence is not None:
                face = (face + presence) / 2.0  # the mean of the views, as run_crops gives
            results.append((np.concatenate([maps[:1], mirrored]), face))
        return results

    def mirror_views(self, crops: list[FaceCrop]) -> list[tuple[np.ndarray, float | None]]:
        """Per crop: ((1, 68, H, W) the mirrored crop's heatmaps, brought back into the
        crop's frame with the iBUG left/right swap, as ``run_crops`` does; its presence)."""
        if not crops:
            return []
        heat, presence = self._run([np.ascontiguousarray(c.image[:, ::-1]) for c in crops])
        return [
            (heat[i][MIRROR_PERMUTATION, :, ::-1][None],
             None if presence is None else float(presence[i]))  # fmt: skip
            for i in range(len(crops))
        ]

    def _run(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, 68, H, W) heatmaps and (N,) presence (or None) of N crops."""
        spec = self.model.spec
        if getattr(self.model, "dynamic_batch", False):
            batches = [spec.to_batch(images)]
        else:
            batches = [spec.to_tensor(image) for image in images]
        heat, presence = [], []
        for batch in batches:
            outputs = self.model.run(batch)
            heat.append(np.asarray(outputs[self.heatmap_output], dtype=np.float32))
            if self.presence_output is not None:
                presence.append(np.asarray(outputs[self.presence_output]).reshape(-1))
        if not presence:
            return np.concatenate(heat), None
        faces = np.concatenate(presence).astype(np.float64)
        if self.referee is not None:
            low, high = self.referee_band
            unsure = np.flatnonzero((faces > low) & (faces < high))
            if unsure.size:
                faces[unsure] = self.referee._run([images[i] for i in unsure])[1]
        return np.concatenate(heat), faces

    def reading_quality(self, views: np.ndarray, presence: float | None) -> float:
        """How well the model reads a crop: the mean heatmap peak, times presence when
        the model has it. The upside-down check and the choice between two readings of
        one face compare crops by it."""
        return float(self.codec.peaks(views)[1].mean()) * (1.0 if presence is None else presence)

    @property
    def upright_read_quality(self) -> float | None:
        """Reading quality above which a crop is taken to be upright without reading
        its half-turned twin (the spec's, chosen by training/choose_presence.py), or
        None: always read the twin."""
        return self.facts.upright_read_quality

    def peaks(self, views: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Heatmap views -> ((68, 2) heatmap coordinates, (68,) peak scores), uncorrected
        (``HeatmapCodec.peaks``: each view decoded, the points averaged)."""
        return self.codec.peaks(views)

    def landmarks(self, views: np.ndarray, crop: FaceCrop) -> tuple[np.ndarray, np.ndarray]:
        """Heatmap views -> ((68, 2) original-image points, (68,) peak scores)."""
        peaks, scores = self.peaks(views)
        return self.to_image(peaks, crop), scores

    def to_image(self, peaks: np.ndarray, crop: FaceCrop, yaw: float | None = None) -> np.ndarray:
        """(68, 2) heatmap peaks -> original-image points, corrected by the model's
        calibration (at the face's ``yaw``, for a model whose calibration depends on it)."""
        return transform_points(self.codec.correct(peaks, yaw), crop.inverse)


def load_landmark_model(
    path: str | os.PathLike,
    default_spec: ModelSpec,
    expected_kind: str,
    **load_args: object,
) -> LandmarkModel:
    """A landmark model from its file, with the presence referee its spec names (the
    fp32 file beside an int8 one) loaded through the same runtime. Without that file
    the int8 presence decides alone, with a warning."""
    model = load_model(path, default_spec=default_spec, expected_kind=expected_kind, **load_args)
    band = model.facts.presence_referee if isinstance(model.facts, LandmarkFacts) else None
    referee = None
    if band is not None:
        referee_path = Path(path).with_name(band.model)
        if referee_path.is_file():
            referee = load_model(
                referee_path, default_spec=default_spec, expected_kind=expected_kind, **load_args
            )
        else:
            warnings.warn(
                f"{path}: {referee_path.name} is not beside it; the int8 presence decides "
                "alone (it accepts more non-faces)",
                stacklevel=2,
            )
    return LandmarkModel(model, referee)


def load_mirror_model(model: LandmarkModel, **load_args: object) -> LandmarkModel | None:
    """The model that reads ``model``'s mirror views under --flip auto: the file its
    spec names (``mirror_model``, beside it), or None when it names none. A named file
    that is missing is a warning, and ``model`` reads its own mirror views."""
    name = model.facts.mirror_model if isinstance(model.facts, LandmarkFacts) else None
    if name is None:
        return None
    path = Path(model.model.path).with_name(name)
    if not path.is_file():
        warnings.warn(
            f"{model.model.path}: its mirror model {path} is missing; it reads its own "
            "mirror views (slower with --flip auto)",
            stacklevel=2,
        )
        return None
    return load_landmark_model(path, default_spec=ORIGINAL_FAN_SPEC, expected_kind="fan2d",
                               **load_args)  # fmt: skip
