"""Landmarks in the 3D convention for 300-W faces, lifted with the shape prior.

300-W labels follow the 2D convention: on a turned face the far-side jaw follows the
visible outline. 3DFAN-4 and AFLW2000-3D instead give the projections of the 3D points,
where the far jaw lies behind the cheek. The two agree on frontal faces, so there the
2D labels are kept; on turned faces the jaw comes from the prior fitted to the inner
points only, blended in with the face's yaw.
"""

from __future__ import annotations

import numpy as np

from util.shape_prior import ShapePrior, fit_to_2d, fit_yaw

JAW = np.arange(17)
INNER = np.arange(17, 68)
# Yaw (degrees) where the 2D labels' jaw starts to give way to the fitted one, and
# where it is gone: 300-W's outline and the 3D jaw part within a few degrees of frontal.
BLEND_FROM, BLEND_TO = 10.0, 25.0


def lift_to_3d(prior: ShapePrior, points: np.ndarray) -> np.ndarray:
    """(N, 68, 3) 3D-convention landmarks for 2D-convention labels (N, 68, 2): x, y in
    image pixels, z in pixels, zero-mean, larger = closer."""
    points = np.asarray(points, np.float64)
    fit = fit_to_2d(prior, points, visible=INNER)
    yaw = np.abs(fit_yaw(fit.rotation))
    share = np.clip((yaw - BLEND_FROM) / (BLEND_TO - BLEND_FROM), 0.0, 1.0)[:, None, None]
    out = fit.points.copy()
    out[:, :, :2] = points
    out[:, JAW, :2] = (1 - share) * points[:, JAW] + share * fit.points[:, JAW, :2]
    return out
