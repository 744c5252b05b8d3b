"""The profile rescue (util/profile_rescue.py): the last detection pass, which reads a
box at the rolls its keypoints allow when no other pass found a face."""

from __future__ import annotations

import numpy as np
import pytest

from training.paths import DATA_ROOT
from util.detect import Detection
from util.profile_rescue import candidate_rolls


def _detection(right_eye, left_eye, mouth, turns: int = 0) -> Detection:
    keypoints = np.array([right_eye, left_eye, [0, 0], mouth, [0, 0], [0, 0]], np.float32)
    return Detection(np.array([0, 0, 100, 100], np.float32), 0.6, keypoints, turns)


def test_mouth_roll_follows_the_face_roll() -> None:
    for roll in (0.0, 30.0, -60.0, 120.0):
        r = np.radians(roll)
        across, down = np.array([np.cos(r), np.sin(r)]), np.array([-np.sin(r), np.cos(r)])
        centre = np.array([50.0, 50.0])
        det = _detection(centre - 10 * across, centre + 10 * across, centre + 25 * down)
        assert det.roll == pytest.approx(roll, abs=1e-3)
        assert det.mouth_roll == pytest.approx(roll, abs=1e-3)


def test_a_profile_gets_its_mouth_and_upright_rolls() -> None:
    """Both eyes on one side, one above the other (the eye line says -100 deg), the
    mouth below: the rolls to read are the eye line's, about 0 (the mouth's), and 0."""
    det = _detection([60, 48], [58, 36], [56, 80])
    rolls = candidate_rolls(det)
    assert rolls[0] == pytest.approx(det.roll)
    assert det.roll < -90
    assert any(abs(r) < 10 for r in rolls)
    assert len(rolls) == 2  # the mouth's roll and upright are within 15 deg: read once


@pytest.mark.skipif(not (DATA_ROOT / "aflw2000").is_dir(), reason="needs ../shared/data")
def test_rescue_finds_a_profile_the_other_passes_miss() -> None:
    """An AFLW2000-3D profile (yaw 81 deg) that the upright, zoomed and turned passes
    miss is found, where the labels are."""
    from training.aflw import AFLW_DIR, load_labels
    from util.aligner import FaceAligner
    from util.io import read_image

    labels = load_labels()
    i = int(np.flatnonzero(labels.names == "image00477")[0])
    image = read_image(AFLW_DIR / "images" / "image00477.jpg")
    aligner = FaceAligner(active_3d=True)
    rescue, aligner.profile_rescue = aligner.profile_rescue, None
    assert aligner.align(image) == []  # without the rescue
    aligner.profile_rescue = rescue
    faces = aligner.align(image)
    assert len(faces) == 1
    truth = labels.pt3d[i, :, :2]
    box = np.sqrt(np.prod(truth.max(0) - truth.min(0)))
    error = np.linalg.norm(faces[0].landmarks_3d[:, :2] - truth, axis=1).mean() / box
    assert error < 0.12
    assert faces[0].pose is not None and faces[0].pose.yaw > 30  # Pose_Para: 81
