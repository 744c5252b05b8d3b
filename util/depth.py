"""Depth: 68 z-values in original-image pixels, zero-mean per face, larger z = closer
to the camera, from one of two sources:

- ``DepthModel``: a network reads the crop plus 68 Gaussian maps of the points (71
  channels), as FAN's depth_estimation.onnx;
- ``ShapeFitDepth``: the shape prior fitted to the 3D-convention points (their x, y
  are the 3D points' projections, so the fit's depth is theirs).
"""

from __future__ import annotations

import numpy as np

from .heatmap_codec import HeatmapCodec
from .landmarks import NUM_LANDMARKS
from .model_facts import DepthFacts, LandmarkFacts
from .runtime import Model, ModelError, ModelSpec, check_single_input, format_shape
from .shape_prior import Fit, ShapePrior, fit_to_2d, fit_yaw, near_side

# The original depth_estimation.onnx (FAN's ResNet): RGB 0-1 crop, Gaussians of
# sigma 2 crop pixels, z in crop pixels. Its sign is not verified here.
ORIGINAL_DEPTH_SPEC = ModelSpec(
    kind="depth",
    input_size=(256, 256),
    channel_order="RGB",
    layout="NCHW",
    scale=1.0 / 255.0,
    extra={"heatmap_sigma": 2.0, "z_scale": 1.0, "z_sign": 1.0},
)


def depth_input(
    crop_rgb: np.ndarray,
    points_crop: np.ndarray,
    spec: ModelSpec,
    codec: HeatmapCodec | None = None,
) -> np.ndarray:
    """(1, 71, S, S) float32: the crop as the 2D model takes it, then 68 Gaussian maps
    (the spec's ``HeatmapCodec``, unless given: at the crop's size, sigma from its
    ``heatmap_sigma``)."""
    image = spec.to_tensor(crop_rgb)
    maps = (codec or HeatmapCodec.from_spec(spec)).encode(points_crop)[None]
    return np.concatenate([image, maps], axis=1).astype(np.float32)


def depth_to_image(
    z_model: np.ndarray, facts: DepthFacts, crop_size: float, crop_side: float
) -> np.ndarray:
    """Model z -> original-image pixels, zero-mean, larger = closer."""
    z = np.asarray(z_model, dtype=np.float64).reshape(-1)
    z = z * facts.z_scale * facts.z_sign
    z = z * crop_side / float(crop_size)  # crop pixels -> image pixels
    return z - z.mean()


class ShapeFitDepth:
    """z of the shape prior fitted to the points (no network). ``regulariser``: how
    strongly the fit keeps to the prior (util.shape_prior.fit_to_2d; about the squared
    noise of the points, in % of the face box): the 3D model's spec gives the one
    chosen for its points (``shape_fit_regulariser``, training/evaluate_3d.py).
    ``turned`` (from_yaw, regulariser): a face the fit finds turned by at least
    from_yaw degrees is fitted again with that regulariser (spec: ``shape_fit_turned``),
    because a turned face's points err together (the far side moves as one), which
    only a stronger pull to the prior averages out.

    ``far_side`` (from_yaw, regulariser; spec: ``shape_fit_far_side``): a face turned
    at least from_yaw degrees is fitted to the half the image shows (and the midline)
    only, and its far half's x, y are that fit's too. Measured on turned val faces
    (training/evaluate_3d.py): the 3D model draws the hidden half of a profile as if
    the face were turned 20-30 degrees less (far jaw a quarter of the box too far
    out), while the half it sees is right."""

    def __init__(
        self,
        prior: ShapePrior,
        regulariser: float = 1.0,
        turned: tuple[float, float] | None = None,
        far_side: tuple[float, float] | None = None,
    ) -> None:
        self.prior = prior
        self.regulariser = float(regulariser)
        self.turned = None if turned is None else (float(turned[0]), float(turned[1]))
        self.far_side = None if far_side is None else (float(far_side[0]), float(far_side[1]))

    @classmethod
    def from_facts(cls, prior: ShapePrior, facts: LandmarkFacts | None) -> ShapeFitDepth:
        """The fit a 3D model's spec asks for (regulariser 1, no refit, without one)."""
        if facts is None:
            return cls(prior)
        return cls(prior, facts.shape_fit_regulariser, facts.shape_fit_turned,
                   facts.shape_fit_far_side)  # fmt: skip

    def describe(self) -> str:
        """What the info line says of this stage."""
        turned = "" if self.turned is None else (
            f", {self.turned[1]:g} from {self.turned[0]:g} deg of yaw"
        )
        far = "" if self.far_side is None else (
            f"; from {self.far_side[0]:g} deg, the far half from the near half's fit"
        )
        return f"shape-prior fit (regulariser {self.regulariser:g}{turned}{far})"

    def points_3d(self, points: np.ndarray) -> np.ndarray:
        """(68, 3) for (68, 2) image points of the 3D convention: their x, y (the far
        half's from the fit when ``far_side`` applies) and the fit's z, in the points'
        pixels."""
        return self.fit_points(points)[0]

    def fit_points(self, points: np.ndarray) -> tuple[np.ndarray, Fit | None]:
        """(``points_3d``, the fit to the given x, y at ``regulariser`` when those x, y
        are kept, else None: the far half replaced), so that the head pose, which fits
        the same x, y, need not fit them again."""
        points = np.asarray(points, np.float64)
        fit = fit_to_2d(self.prior, points, regulariser=self.regulariser)
        yaw = abs(float(fit_yaw(fit.rotation)))
        out = np.column_stack([points, fit.points[:, 2]])
        if self.far_side is not None and yaw >= self.far_side[0]:
            near = near_side(self.prior, fit.rotation)
            refit = fit_to_2d(self.prior, points, regulariser=self.far_side[1], visible=near)
            far = np.setdiff1d(np.arange(len(points)), near)
            out[far, :2] = refit.points[far, :2]
            out[:, 2] = refit.points[:, 2]
            return out, None
        if self.turned is not None and yaw >= self.turned[0]:
            out[:, 2] = fit_to_2d(self.prior, points, regulariser=self.turned[1]).points[:, 2]
        return out, fit

    def depth_turned(self, fit: Fit, rotation: np.ndarray) -> np.ndarray:
        """(68,) z of a fit's shape seen at ``rotation`` (prior frame -> image frame)
        instead of the fit's own: the head pose's, which reads the tilt better than the
        fit to the 3D points alone (the z error is mostly tilt). Pixels, zero-mean,
        larger = closer."""
        z = fit.scale * (self.prior.shape(fit.coefficients) @ np.asarray(rotation).T)[:, 2]
        return z - z.mean()

    def depth(self, points: np.ndarray) -> np.ndarray:
        """(68,) z in the points' pixels for (68, 2) image points (``points_3d``'s)."""
        return self.points_3d(points)[:, 2]


class DepthModel:
    """A depth network with its spec."""

    def __init__(self, model: Model) -> None:
        if not isinstance(model.facts, DepthFacts):
            raise ModelError(f"{model.path}: spec kind {model.spec.kind!r}, not a depth model")
        self.model = model
        self.facts: DepthFacts = model.facts
        self.codec = HeatmapCodec.from_facts(model.spec, model.facts.codec)
        self._check_shapes()

    def _check_shapes(self) -> None:
        """A ModelError unless the file takes the crop plus 68 maps and gives 68 values."""
        model = self.model
        channels = 3 + NUM_LANDMARKS
        check_single_input(model, model.spec.tensor_shape(channels), "crop + 68 maps")
        outputs = getattr(model, "output_shapes", None)
        if outputs is None:
            return
        # (N, 68) for ours; a file may add unit dimensions, e.g. (N, 68, 1).
        sizes = [[d for d in s[1:] if d != 1] for s in outputs]
        if len(outputs) != 1 or sizes[0] not in ([NUM_LANDMARKS], [None]):
            given = ", ".join(format_shape(s) for s in outputs)
            raise ModelError(f"{model.path}: gives {given}, not 68 depth values (?, 68)")

    def depth(self, crop_rgb: np.ndarray, points_crop: np.ndarray, crop_side: float) -> np.ndarray:
        """(68,) z in original-image pixels for one face."""
        spec = self.model.spec
        outputs = self.model.run(depth_input(crop_rgb, points_crop, spec, self.codec))
        return depth_to_image(outputs[0], self.facts, spec.input_size[0], crop_side)
