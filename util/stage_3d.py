"""The 3D stage: each face's ``landmarks_3d`` and head pose.

x, y come from the 3D-convention landmark model (3DFAN-4's convention: the projections
of the 3D points, the far jaw seen through the cheek), read on the crop the 2D model's
face ended with; z from the shape prior fitted to them (or from a depth network, FAN's
71-channel contract); the head pose from the fits to both models' points, in the 3D
model's own pose frame, and z is then the fitted shape seen at that pose.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from .crop import transform_points
from .depth import ORIGINAL_DEPTH_SPEC, DepthModel, ShapeFitDepth
from .face import Face, StageTimes
from .head_pose import POSE_REGULARISER, HeadPose, pose_fit
from .landmark_stage import ORIGINAL_FAN3D_SPEC, FaceCrop, LandmarkModel
from .paths import MODELS_DIR, SHAPE_PRIOR_PATH
from .runtime import load_model, model_for_precision
from .shape_prior import ShapePrior, fit_to_2d, fit_yaw

DEFAULT_MODEL_3D = MODELS_DIR / "fan3d_compact.onnx"


def calibration_yaw(
    prior: ShapePrior, model: LandmarkModel, peaks: np.ndarray, crop: FaceCrop
) -> float:
    """The yaw (degrees, the shape fit's sign) at which a 3D model's yaw-dependent
    offsets are read: the fit, at the model's regulariser, to its uncorrected points
    (``peaks`` of ``crop``). training/calibrate_3d.py measures the offsets at this yaw."""
    points = transform_points(model.codec.to_crop(peaks), crop.inverse)
    fit = fit_to_2d(prior, points, regulariser=model.facts.shape_fit_regulariser)
    return float(fit_yaw(fit.rotation))


class Stage3D:
    """``add(image, faces, crops, boxes, flip)`` fills each face's ``landmarks_3d`` and
    ``pose``. ``landmark_model_3d`` None: the 2D points are lifted instead."""

    def __init__(
        self,
        landmark_model_3d: LandmarkModel | None,
        depth_model: DepthModel | ShapeFitDepth,
        prior: ShapePrior,
        pose_frame: np.ndarray | None,
        times: StageTimes,
    ) -> None:
        self.landmark_model_3d = landmark_model_3d
        self.depth_model = depth_model
        self.prior = prior
        self.pose_frame = pose_frame
        self.times = times

    @classmethod
    def load(
        cls,
        model_3d: str | os.PathLike | None,
        model_depth: str | os.PathLike | None,
        precision: str,
        times: StageTimes,
        **load_args: object,
    ) -> Stage3D:
        """The stage for these files: ``model_3d`` None takes the shipped 3D model (at
        ``precision``) when it is there; ``model_depth`` None fits the shape prior."""
        if model_3d is None and DEFAULT_MODEL_3D.is_file():
            model_3d = model_for_precision(DEFAULT_MODEL_3D, precision, str(load_args["runtime"]))
        landmark_model_3d = None
        if model_3d is not None:
            landmark_model_3d = LandmarkModel(
                load_model(
                    Path(model_3d), default_spec=ORIGINAL_FAN3D_SPEC, expected_kind="fan3d",
                    **load_args,
                )
            )  # fmt: skip
        prior = ShapePrior.load(SHAPE_PRIOR_PATH)
        # The fit's regulariser suits the points' noise: a fact of the 3D model. With a
        # depth network the fit still gives the head pose.
        facts_3d = landmark_model_3d.facts if landmark_model_3d else None
        depth_model: DepthModel | ShapeFitDepth
        if model_depth is not None:
            depth_model = DepthModel(
                load_model(model_depth, default_spec=ORIGINAL_DEPTH_SPEC, expected_kind="depth",
                           **load_args)  # fmt: skip
            )
        else:
            depth_model = ShapeFitDepth.from_facts(prior, facts_3d)
        # The 3D model's own frame when its spec has one (its points sit a little
        # differently from the true ones the prior's was measured on).
        own = facts_3d.pose_frame if facts_3d else None
        pose_frame = prior.pose_frame if own is None else own
        return cls(landmark_model_3d, depth_model, prior, pose_frame, times)

    def sources(self) -> dict[str, str]:
        """What it runs: model files, or the method without one."""
        model_3d = self.landmark_model_3d
        return {
            "3D model": str(model_3d.model.path) if model_3d else "none (the 2D points are used)",
            "depth": (
                self.depth_model.describe()
                if isinstance(self.depth_model, ShapeFitDepth)
                else str(self.depth_model.model.path)
            ),
        }

    def add(
        self,
        image_rgb: np.ndarray,
        faces: list[Face],
        crops: list[FaceCrop],
        boxes: list[np.ndarray],
        flip: bool,
    ) -> None:
        """``landmarks_3d`` and ``pose`` of each face, read at the box and roll its 2D
        reading ended with (``crops``: those 2D crops, for a depth network without a 3D
        model)."""
        start = time.perf_counter()
        model = self.landmark_model_3d
        points = [face.landmarks for face in faces]
        if model is not None and faces:
            crops = [
                model.crop(image_rgb, box, face.roll)
                for face, box in zip(faces, boxes, strict=True)
            ]
            results = model.run_crops(crops, flip=flip)
            points = []
            for crop, (views, _) in zip(crops, results, strict=True):
                peaks, _ = model.peaks(views)
                yaw = None
                if model.codec.offsets_per_yaw is not None:
                    yaw = calibration_yaw(self.prior, model, peaks, crop)
                points.append(model.to_image(peaks, crop, yaw))
        self.times.add("landmarks_3d", time.perf_counter() - start)
        start = time.perf_counter()
        for face, crop, xy in zip(faces, crops, points, strict=True):
            made = None  # the pose's fit to these x, y, when the depth fit made it
            if isinstance(self.depth_model, ShapeFitDepth):
                # (the far half of a profile's x, y comes from the fit too)
                face.landmarks_3d, made = self.depth_model.fit_points(xy)
                if self.depth_model.regulariser != POSE_REGULARISER:
                    made = None
            else:
                points_crop = xy @ crop.matrix[:, :2].T + crop.matrix[:, 2]
                z = self.depth_model.depth(crop.image, points_crop, crop.side)
                face.landmarks_3d = np.column_stack([xy, z])
            if self.pose_frame is not None:
                fit, rotation = pose_fit(self.prior, face.landmarks_3d, face.landmarks, made)
                face.pose = HeadPose.from_fit(rotation, self.pose_frame)
                if isinstance(self.depth_model, ShapeFitDepth):
                    # z follows the pose (AFLW2000-3D validation faces: z 3.79 -> 3.34 %),
                    # at the rotation the pose frame says is true (the networks' own
                    # bias taken out), in the prior's frame again.
                    true = rotation @ self.pose_frame.T @ self.prior.pose_frame
                    face.landmarks_3d[:, 2] = self.depth_model.depth_turned(fit, true)
        self.times.add("depth", time.perf_counter() - start)
