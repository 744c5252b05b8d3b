"""Head pose: the angle convention (AFLW2000-3D's Pose_Para), the pose of a shape fit,
and the output contract (JSON, the API, drawing)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from training.paths import DATA_ROOT, REPO, SAMPLES_DIR, SHAPE_PRIOR_PATH
from util.head_pose import HeadPose, angles_from_rotation, rotation_from_angles
from util.shape_prior import ShapePrior, fit_to_2d

FLIP_Y = np.diag([1.0, -1.0, 1.0])


def _prior() -> ShapePrior:
    return ShapePrior.load(SHAPE_PRIOR_PATH)


@pytest.mark.parametrize("angles", [(0, 0, 0), (30, -15, 10), (-70, 20, -25), (85, 5, 40)])
def test_angles_round_trip(angles: tuple[float, float, float]) -> None:
    rotation = rotation_from_angles(*angles)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(rotation) == pytest.approx(1.0)
    np.testing.assert_allclose(angles_from_rotation(rotation), angles, atol=1e-9)


def test_pose_para_matrices() -> None:
    """The convention's factors, as 3DDFA writes them: a yaw alone, a pitch alone."""
    a = np.radians(20)
    np.testing.assert_allclose(
        rotation_from_angles(20, 0, 0),
        [[np.cos(a), 0, -np.sin(a)], [0, 1, 0], [np.sin(a), 0, np.cos(a)]],
    )
    np.testing.assert_allclose(
        rotation_from_angles(0, 20, 0),
        [[1, 0, 0], [0, np.cos(a), np.sin(a)], [0, -np.sin(a), np.cos(a)]],
    )


def test_shipped_prior_has_a_pose_frame() -> None:
    frame = _prior().pose_frame
    assert frame is not None
    np.testing.assert_allclose(frame @ frame.T, np.eye(3), atol=1e-5)


@pytest.mark.parametrize("yaw, pitch, roll", [(0, 0, 0), (40, 0, 0), (-60, 10, 0),
                                              (25, -20, 15), (75, 15, -10)])  # fmt: skip
def test_fit_recovers_a_synthesized_turn(yaw: float, pitch: float, roll: float) -> None:
    """A head at a known pose, drawn as the benchmark's frame says (the mean shape in
    the benchmark's frontal frame, turned, then in image coordinates, y down), projected
    to x, y and fitted: the pose comes back."""
    prior = _prior()
    true = FLIP_Y @ rotation_from_angles(yaw, pitch, roll) @ FLIP_Y
    points = 3.0 * prior.mean @ (true @ prior.pose_frame).T + [200.0, 220.0, 0.0]
    fit = fit_to_2d(prior, points[:, :2], regulariser=10.0)
    pose = HeadPose.from_fit(fit.rotation, prior.pose_frame)
    assert pose.yaw == pytest.approx(yaw, abs=1.0)
    assert pose.pitch == pytest.approx(pitch, abs=1.0)
    assert pose.roll == pytest.approx(roll, abs=1.0)


def test_yaw_sign_on_a_turned_face() -> None:
    """Pose_Para's yaw is positive when the nose turns toward the image's left."""
    prior = _prior()
    turned = FLIP_Y @ rotation_from_angles(45, 0, 0) @ FLIP_Y @ prior.pose_frame
    points = prior.mean @ turned.T
    assert points[30, 0] < points[:, 0].mean()  # the nose tip left of the centre
    pose = HeadPose.from_fit(fit_to_2d(prior, points[:, :2]).rotation, prior.pose_frame)
    assert pose.yaw > 30


@pytest.mark.skipif(not (DATA_ROOT / "aflw2000").is_dir(), reason="needs ../shared/data")
def test_fit_to_true_points_gives_the_benchmark_pose() -> None:
    """On the AFLW2000-3D validation faces (not those the pose frame was measured on),
    the fit to the true x, y agrees with Pose_Para: the frame and signs are right."""
    from training.aflw import POSE_RANGE, pose_mae, split

    labels = split("val")
    keep = np.all(np.abs(labels.pose) <= POSE_RANGE, axis=1)
    prior = _prior()
    fit = fit_to_2d(prior, labels.pt3d[keep, :, :2], regulariser=10.0)
    poses = [HeadPose.from_fit(r, prior.pose_frame) for r in fit.rotation]
    found = np.array([[p.pitch, p.yaw, p.roll] for p in poses])
    errors = pose_mae(found, labels.pose[keep])
    assert errors.mean() < 2.0, errors.mean(0)


def test_pose_in_json_and_api() -> None:
    """-3 gives every face a pose with yaw, pitch and roll in range and a rotation
    that is orthonormal and equal to the angles; without -3 there is none."""
    sample = SAMPLES_DIR / "astronaut.png"
    run = subprocess.run(
        [sys.executable, str(REPO / "face_alignment.py"), "-i", str(sample), "-3",
         "--json", "-", "-q"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    faces = json.loads(run.stdout)["faces"]
    assert faces
    for face in faces:
        pose = face["pose"]
        assert set(pose) == {"yaw", "pitch", "roll"}
        assert all(-180 <= v <= 180 for v in pose.values())
        assert abs(pose["yaw"]) <= 90
        rotation = np.array(face["rotation"])
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-4)
        np.testing.assert_allclose(
            rotation, rotation_from_angles(pose["yaw"], pose["pitch"], pose["roll"]), atol=1e-3
        )
        # The astronaut faces the camera.
        assert abs(pose["yaw"]) < 25 and abs(pose["pitch"]) < 30

    from util.aligner import FaceAligner

    plain = FaceAligner().align(str(sample))
    assert plain and all(face.pose is None for face in plain)
    assert "pose" not in plain[0].to_json()


def test_draw_pose_needs_3d(tmp_path) -> None:
    run = subprocess.run(
        [sys.executable, str(REPO / "face_alignment.py"), "-i", str(SAMPLES_DIR / "astronaut.png"),
         "-s", str(tmp_path / "out.png"), "--draw-pose", "-q"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0
    assert "--draw-pose is ignored" in run.stderr


def test_side_view_turns_each_face_from_its_own_front() -> None:
    """A face turned 60 deg with its pose and the same face frontal give the same side
    view: the panel shows each from 70 deg off its own front."""
    from util.draw import side_view
    from util.face import Face

    prior = _prior()
    frontal = FLIP_Y @ rotation_from_angles(0, 0, 0) @ FLIP_Y @ prior.pose_frame
    turned_r = FLIP_Y @ rotation_from_angles(60, 0, 0) @ FLIP_Y
    faces = []
    for pose_r in (np.eye(3), turned_r):
        points = 3.0 * prior.mean @ (pose_r @ frontal).T + [200.0, 200.0, 0.0]
        pose = HeadPose.from_rotation(FLIP_Y @ pose_r @ FLIP_Y)
        box = np.r_[points[:, :2].min(0), points[:, :2].max(0)]
        faces.append(Face(box, 1.0, points[:, :2], np.ones(68), landmarks_3d=points, pose=pose))
    a, b = (side_view([face], 300) for face in faces)
    assert np.mean(a != b) < 0.01


def test_video_smoothing_filters_the_pose_with_the_points() -> None:
    """The smoother's pose (filtered as the points are) jitters less than the raw pose
    about a steady turn, and stays a rotation."""
    from util.face import Face
    from util.head_pose import rotation_from_angles
    from util.smooth import FaceSmoother

    smoother = FaceSmoother(rate=30.0)
    rng = np.random.default_rng(1)
    yaws, raw = [], []
    for _frame in range(30):
        noisy = 20.0 + rng.normal(0, 1.0)  # a degree of jitter
        raw.append(noisy)
        pose = HeadPose.from_rotation(rotation_from_angles(noisy, 0.0, 0.0))
        points = np.zeros((68, 3))
        points[:, :2] = rng.normal(200, 30, (68, 2))
        face = Face(np.array([100.0, 100, 300, 300]), 0.9, points[:, :2], np.ones(68),
                    landmarks_3d=points, pose=pose)  # fmt: skip
        (out,) = smoother([face])
        np.testing.assert_allclose(out.pose.rotation @ out.pose.rotation.T, np.eye(3), atol=1e-9)
        yaws.append(out.pose.yaw)
    assert np.std(yaws[10:]) < 0.8 * np.std(raw[10:])
    assert abs(np.mean(yaws[10:]) - 20.0) < 1.0
