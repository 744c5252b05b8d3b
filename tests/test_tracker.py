"""The video tracker (util/tracker.py) and the smoother (util/smooth.py).

The tracker runs the shipped models on a short clip synthesized from the bundled sample
with a known motion (benchmarks/tracking.py makes it): the truth is the still image's
landmarks moved with the frames. The smoother is checked on synthetic faces.
"""

from __future__ import annotations

import copy
import dataclasses
import threading

import numpy as np
import pytest

from benchmarks.tracking import make_clip
from training.paths import SAMPLES_DIR
from util.aligner import DEFAULT_MODEL_2D, FaceAligner
from util.face import Face
from util.io import read_image
from util.landmarks import NUM_LANDMARKS, inter_ocular
from util.smooth import FaceSmoother
from util.tracker import FaceTracker, roll_degrees

SAMPLE = SAMPLES_DIR / "astronaut.png"
REDETECT = 5
# still 3 frames, 4 px and 1 degree per frame for 12, still 5
SCHEDULE = ((3, 0.0, 0.0), (12, 4.0, 1.0), (5, 0.0, 0.0))

needs_2d = pytest.mark.skipif(
    not DEFAULT_MODEL_2D.is_file(), reason=f"no trained 2D model at {DEFAULT_MODEL_2D}"
)


@pytest.fixture(scope="module")
def aligner() -> FaceAligner:
    return FaceAligner(flip=False, threads=1)


@pytest.fixture(scope="module")
def clip(aligner: FaceAligner):  # noqa: ANN201
    image = read_image(SAMPLE)
    aligner.flip = True  # the truth: the still image's points, as accurate as we get them
    try:
        (face,) = aligner.align(image)
    finally:
        aligner.flip = False
    return make_clip(image, face.landmarks, "astronaut", iod=70.0, seed=3, schedule=SCHEDULE)


@needs_2d
def test_tracker_follows_a_moving_face(aligner: FaceAligner, clip, monkeypatch) -> None:
    detected, followed = [], []
    detect, follow = aligner.detector.detect, aligner.follow
    tracker = FaceTracker(aligner, redetect=REDETECT)

    def spy_detect(image, *args, **kwargs):  # noqa: ANN001, ANN202
        detected.append(tracker.frames)
        return detect(image, *args, **kwargs)

    def spy_follow(image, previous, rolls=None):  # noqa: ANN001, ANN202
        followed.append((tracker.frames, rolls))
        return follow(image, previous, rolls=rolls)

    monkeypatch.setattr(aligner.detector, "detect", spy_detect)
    monkeypatch.setattr(aligner, "follow", spy_follow)
    errors = []
    for frame, truth in zip(clip.frames, clip.truth, strict=True):
        faces = tracker.process(frame)
        assert len(faces) == 1
        errors.append(np.linalg.norm(faces[0].landmarks - truth, axis=1).mean())
        # A followed face's box is on its own points, not on the previous frame's.
        centre = (faces[0].bbox[:2] + faces[0].bbox[2:]) / 2
        assert np.linalg.norm(centre - truth.mean(0)) < 0.5 * inter_ocular(truth)
    errors = np.array(errors) / inter_ocular(clip.truth[0])
    # About 1.5 % here; a face one frame behind (4 px, 1 degree) would be near 6 %.
    assert errors.max() < 0.04, errors.round(3)
    assert errors[clip.moving].mean() < 0.025
    # The detector every REDETECT frames (for new faces), the face followed on every
    # frame after the first: the same face, not a second one, on detection frames.
    frames = len(clip.frames)
    assert detected == list(range(0, frames, REDETECT))
    assert [k for k, _ in followed] == list(range(1, frames))
    assert tracker.detections == len(detected) and tracker.frames == frames
    # Each follow gets the roll of the previous frame's face (1 degree per frame here).
    for k, rolls in followed:
        assert len(rolls) == 1
        assert abs(rolls[0] - (roll_degrees(clip.truth[k - 1]))) < 2.0


@needs_2d
def test_two_frames_in_flight_keep_their_order_and_follow_the_face(
    aligner: FaceAligner, clip
) -> None:
    """process_frames with two workers (video files): every frame once and in order,
    each followed from the faces two frames back, as accurately as from one back (the
    crop moves 8 px and 2 degrees more; the model was trained on looser crops)."""
    tracker = FaceTracker(aligner, redetect=REDETECT)
    out = list(tracker.process_frames(iter(clip.frames), workers=2))
    assert all(out[k][0] is clip.frames[k] for k in range(len(clip.frames)))
    errors = []
    for (_, faces), truth in zip(out, clip.truth, strict=True):
        assert len(faces) == 1
        errors.append(np.linalg.norm(faces[0].landmarks - truth, axis=1).mean())
    errors = np.array(errors) / inter_ocular(clip.truth[0])
    assert errors.max() < 0.04, errors.round(3)
    assert errors[clip.moving].mean() < 0.025
    # Frames 0 and 1 detect (nothing to follow when they start), then every REDETECT
    # frames counted from frame 1: one detection more than one frame at a time.
    frames = len(clip.frames)
    assert tracker.frames == frames
    assert tracker.detections == 2 + len(range(1 + REDETECT, frames, REDETECT))
    # Stopping early waits for the frame under way and leaves no thread behind.
    threads = threading.active_count()
    tracker = FaceTracker(aligner, redetect=REDETECT)
    stream = tracker.process_frames(iter(clip.frames), workers=2)
    next(stream)
    stream.close()
    assert tracker.frames == 1 and threading.active_count() == threads


def test_frames_in_flight_follow_the_mean_of_the_last_two_frames() -> None:
    """A face followed from two frames back takes the mean of its points in the last two
    frames done (one chain, not two for even and odd frames); a face not in the older
    frame (new, or far away) keeps its own points."""
    from util.tracker import _coupled

    base = np.stack([np.arange(68.0), np.arange(68.0) / 2], axis=1) + 100

    def face(points: np.ndarray) -> Face:
        box = np.r_[points.min(0), points.max(0)]
        return Face(box, 1.0, points, np.ones(68))

    now, before, elsewhere = face(base + 4.0), face(base), face(base + 500.0)
    (coupled,) = _coupled([now], [elsewhere, before])
    np.testing.assert_allclose(coupled.landmarks, base + 2.0)
    (alone,) = _coupled([now], [elsewhere])
    assert alone is now


@needs_2d
def test_tracker_picks_up_a_new_face_at_the_next_detection(aligner: FaceAligner) -> None:
    image = read_image(SAMPLE)
    one = np.hstack([image, np.zeros_like(image)])
    two = np.hstack([image, image])
    tracker = FaceTracker(aligner, redetect=REDETECT)
    counts = [len(tracker.process(frame)) for frame in [one] * 3 + [two] * 4]
    # Followed alone until the detector runs again (frame 5), then both; never the
    # followed face twice.
    assert counts == [1, 1, 1, 1, 1, 2, 2]
    left, right = sorted(tracker.raw, key=lambda f: f.bbox[0])
    # The same face read from two crops (followed, detected): about 1 % of the
    # inter-ocular distance apart on average (the jaw's ends up to 5 %); a misplaced
    # crop or another face would be far more.
    apart = np.linalg.norm(right.landmarks - [image.shape[1], 0] - left.landmarks, axis=1)
    apart /= inter_ocular(left.landmarks)
    assert apart.mean() < 0.015 and apart.max() < 0.08, (apart.mean(), apart.max())


@needs_2d
def test_tracker_smooths_and_resets(aligner: FaceAligner, clip) -> None:
    tracker = FaceTracker(aligner, redetect=REDETECT, smooth=True)
    for frame in clip.frames[:4]:
        smoothed = tracker.process(frame)
    # The raw faces are kept apart from the smoothed ones, and are what is followed.
    assert tracker.raw[0] is not smoothed[0]
    assert not np.array_equal(tracker.raw[0].landmarks, smoothed[0].landmarks)
    tracker.reset()
    tracker.process(clip.frames[4])
    assert tracker.detections == 2  # frame 0, then again at once after the reset


def test_roll_degrees_is_the_eye_line_angle() -> None:
    points = np.zeros((NUM_LANDMARKS, 2))
    points[36:42] = [0.0, 0.0]
    points[42:48] = [10.0, 10.0]  # left eye lower in the image (y down): +45 degrees
    assert roll_degrees(points) == pytest.approx(45.0)
    points[42:48] = [10.0, -10.0]
    assert roll_degrees(points) == pytest.approx(-45.0)


# -- smoother ----------------------------------------------------------------------------


def _face(offset: np.ndarray, base: np.ndarray, with_3d: bool = False) -> Face:
    points = base + offset
    box = np.array([*(points.min(0) - 10), *(points.max(0) + 10)])
    z = np.linspace(-5, 5, NUM_LANDMARKS)[:, None]
    return Face(
        box,
        0.9,
        points,
        np.ones(NUM_LANDMARKS),
        landmarks_3d=np.hstack([points, z]) if with_3d else None,
    )


@pytest.fixture
def base() -> np.ndarray:
    return np.random.default_rng(0).uniform(100, 300, (NUM_LANDMARKS, 2))


def test_smoother_returns_new_faces_and_leaves_its_input(base: np.ndarray) -> None:
    smoother = FaceSmoother()
    rng = np.random.default_rng(1)
    for k in range(10):
        face = _face(np.array([3.0 * k, 0.0]) + rng.normal(0, 1, 2), base, with_3d=True)
        before = copy.deepcopy(face)
        (out,) = smoother([face])
        assert out is not face
        for name in ("bbox", "landmarks", "landmarks_3d"):
            np.testing.assert_array_equal(getattr(face, name), getattr(before, name))
        assert out.landmarks is not face.landmarks and out.bbox is not face.bbox
        np.testing.assert_allclose(out.landmarks, out.landmarks_3d[:, :2])
        assert out.score == face.score


def test_smoother_does_not_lag_a_constant_velocity(base: np.ndarray) -> None:
    # A face about 220 px wide moving 4 px per frame with 0.5 px of jitter, 30 fps.
    rng = np.random.default_rng(2)
    velocity = np.array([4.0, 1.0])
    smoother = FaceSmoother(rate=30.0)
    lags = []
    for k in range(60):
        true = base + velocity * k
        noisy = dataclasses.replace(
            _face(velocity * k, base), landmarks=true + rng.normal(0, 0.5, base.shape)
        )
        (out,) = smoother([noisy])
        if k >= 10:  # the filter has seen the motion
            behind = (true - out.landmarks).mean(0) @ velocity / (velocity @ velocity)
            lags.append(behind)
    assert np.mean(lags) < 1.0  # frames
    assert np.mean(lags) > -0.5  # and no overshoot ahead of the face


def test_smoother_takes_out_jitter_of_a_still_face(base: np.ndarray) -> None:
    rng = np.random.default_rng(3)
    smoother = FaceSmoother(rate=30.0)
    raw, out = [], []
    for _ in range(60):
        face = _face(np.zeros(2), base)
        face = dataclasses.replace(face, landmarks=base + rng.normal(0, 0.5, base.shape))
        raw.append(face.landmarks)
        out.append(smoother([face])[0].landmarks)
    spread = np.array(out[20:]).std(0).mean()
    assert spread < 0.5 * np.array(raw[20:]).std(0).mean()


def test_box_is_smoothed_with_the_points(base: np.ndarray) -> None:
    rng = np.random.default_rng(4)
    smoother = FaceSmoother(rate=30.0)
    offsets, boxes, raw_boxes = [], [], []
    for k in range(60):
        face = _face(np.array([4.0 * k, 0.0]), base)
        (out,) = smoother([face])
        # Moving together, box and points keep their offset: no sliding inside the box.
        centre = (out.bbox[:2] + out.bbox[2:]) / 2
        offsets.append(centre - out.landmarks.mean(0))
    offsets = np.array(offsets)
    assert np.abs(offsets - offsets[0]).max() < 1e-6
    # A jittering box on a still face comes out steadier.
    smoother = FaceSmoother(rate=30.0)
    for _ in range(60):
        face = _face(np.zeros(2), base)
        face = dataclasses.replace(face, bbox=face.bbox + rng.normal(0, 0.5, 4))
        raw_boxes.append(face.bbox)
        boxes.append(smoother([face])[0].bbox)
    assert np.array(boxes[20:]).std(0).mean() < 0.5 * np.array(raw_boxes[20:]).std(0).mean()


def test_smoother_keeps_faces_apart(base: np.ndarray) -> None:
    smoother = FaceSmoother(rate=30.0)
    for _ in range(5):
        a, b = smoother([_face(np.zeros(2), base), _face(np.array([1000.0, 0.0]), base)])
    np.testing.assert_allclose(a.landmarks, base, atol=1e-9)
    np.testing.assert_allclose(b.landmarks, base + [1000.0, 0.0], atol=1e-9)
    smoother.reset()
    (c,) = smoother([_face(np.array([500.0, 0.0]), base)])  # a new track, not pulled back
    np.testing.assert_allclose(c.landmarks, base + [500.0, 0.0], atol=1e-9)
