"""The crop policy: which crops of a face the landmark model reads.

A detection's crop is read once (the probe). The policy then decides, from what that
reading says: whether the face may be upside down (read its half-turned twin too),
whether it is cropped again (its landmarks' roll or box disagree with the detector's),
and, when the upright and the turned detector passes found one face twice, which
reading stays. All its thresholds are here, with what measured them.
"""

from __future__ import annotations

import numpy as np

from .crop import box_from_landmarks
from .detect import Candidate, box_iou
from .face import Face
from .face_frame import angle_difference, face_roll
from .landmark_stage import FaceCrop, LandmarkModel

# Residual roll (degrees) past which a face is cropped again at its landmarks' roll.
ROLL_RECROP_DEGREES = 15.0
# --flip auto: a re-cropped face's probe stands in for its new crop's unmirrored view
# when the boxes overlap this much (probe_can_stand_in). Measured on 300w/val and its
# close-ups (training.evaluate --wild): for every re-cropped face (0), close-ups
# 1.11x of whole photos; at 0.65, 1.04x (as --flip on) and val 3.38 %, at 1.20x the
# command line's time of --flip off; for none (same box only), 1.03x but 1.35x.
PROBE_STANDS_IN_IOU = 0.65
# The twin check compares peak x presence, but since the presence head was retrained on
# profiles (aa09390) an upside-down face's upright crop can score 0.98 at a mean peak of
# 0.34 while its twin, the right reading, scores 0.21 at 0.57: the rotation sweep's 180
# deg read 6.4 % (1.9x upright). A twin whose mean peak is at least TWIN_SURE_PEAK (good
# upright readings peak about 0.65) and TWIN_PEAK_RATIO times the upright crop's wins on
# its heatmaps. Measured on the unsure crops of the 249 AFLW2000-3D validation faces
# (profiles: no twin peak above 0.52) and of the sweep's 180 deg faces.
TWIN_SURE_PEAK = 0.55
TWIN_PEAK_RATIO = 1.5
# Roll (degrees) past which a face found by an upright detector pass stands outside
# BlazeFace's range (it finds faces within about 45 deg of upright, util/detect.py) and
# the model's (trained for a residual roll up to 45 deg): the turned passes look again.
UPRIGHT_DEGREES = 45.0
# Detector boxes overlapping by more than this are one face (as merge_detections has it).
SAME_FACE_IOU = 0.3
# Box overlap below which a face is cropped again from its landmarks' box: measured on
# 120 HELEN close-ups of 300w/val (training/evaluate.py --wild --close-ups-only
# --recrop-iou X): NME 7.37 % never, 5.98 % at 0.7, 5.73 % at 0.85, 5.72 % at 0.95; the
# whole photos 3.95, 3.95, 3.93, 3.91 %.
RECROP_IOU = 0.85


def is_upright(face: Face) -> bool:
    return abs(angle_difference(face.roll, 0.0)) <= UPRIGHT_DEGREES


def face_reading_quality(face: Face) -> float:
    """How well the model read a face (LandmarkModel.reading_quality, from the face's
    peak scores)."""
    presence = 1.0 if face.presence is None else face.presence
    return float(np.mean(face.landmark_scores)) * presence


def same_reading(candidate: Candidate, face: Face, min_iou: float) -> bool:
    """``candidate`` is ``face`` in its box (IoU >= ``min_iou``), at the roll it was
    read with."""
    bbox = np.asarray(candidate.bbox, np.float64)[None]
    if float(box_iou(face.bbox, bbox)[0]) < min_iou:
        return False
    return abs(angle_difference(candidate.roll, face.roll)) <= ROLL_RECROP_DEGREES


def better_readings(faces: list[Face], others: list[tuple[Face, np.ndarray]]) -> list[Face]:
    """``faces`` and the (face, box) ``others`` together, one face per spot: a face
    whose detector box overlaps an other's ``box`` by more than SAME_FACE_IOU is the
    same face, and the better read one stays; best detection score first. An other
    may be one of ``faces``, confirmed by a turned pass's box (which overlaps the
    upright pass's boxes of the face that did not overlap each other)."""
    kept = list(faces)
    for other, box in others:
        box = np.asarray(box, np.float64)
        same = [
            face
            for face in kept
            if face is not other and float(box_iou(box, face.bbox[None])[0]) > SAME_FACE_IOU
        ]
        if all(face_reading_quality(other) > face_reading_quality(face) for face in same):
            kept = [face for face in kept if not any(face is f for f in same)]
            kept += [] if any(face is other for face in kept) else [other]
    return sorted(kept, key=lambda face: -face.score)


def upright_box(landmarks: np.ndarray, roll: float, stats: dict) -> np.ndarray:
    """The detector box these landmarks would get if the face were upright, placed on
    the face: measured box-vs-landmark offsets apply in the face's own frame."""
    rad = np.deg2rad(roll)
    rotation = np.array([[np.cos(rad), -np.sin(rad)], [np.sin(rad), np.cos(rad)]])
    centre = landmarks.mean(0)
    upright = (landmarks - centre) @ rotation + centre  # turned by -roll
    box = box_from_landmarks(upright, stats["centre_dx"], stats["centre_dy"], stats["size_ratio"])
    box_centre = (box[:2] + box[2:]) / 2
    moved = (box_centre - centre) @ rotation.T + centre
    half = (box[2:] - box[:2]) / 2
    return np.concatenate([moved - half, moved + half])


def sure_twin(model: LandmarkModel, twin_views: np.ndarray, upright_views: np.ndarray) -> bool:
    """Whether the half-turned twin's reading wins on its heatmaps alone: peaks as high as
    a good upright reading's (TWIN_SURE_PEAK) and TWIN_PEAK_RATIO times the upright
    crop's. The presence of a half-turned crop is unreliable (see TWIN_SURE_PEAK)."""
    twin = float(model.codec.peaks(twin_views)[1].mean())
    upright = float(model.codec.peaks(upright_views)[1].mean())
    return twin >= TWIN_SURE_PEAK and twin >= TWIN_PEAK_RATIO * upright


def upright_or_upside_down(
    model: LandmarkModel, image_rgb: np.ndarray, candidates: list[Candidate], crops: list[FaceCrop]
) -> tuple[list[FaceCrop], list]:
    """(crops, their single-view model results). BlazeFace fires on an upside-down
    face as if it were upright (keypoints and all), and upside-down passes outscore
    upright ones on some upright faces, so the landmark model decides: a crop it
    reads less well than the spec's ``upright_read_quality`` (every crop, without
    one) has its half-turned twin read too (no flip), and the better reading stays;
    without flip that single read is the result. Measured on 40 val faces turned by
    180 deg: 97 % NME without this check, 3.9 % with it; the quality bar spares the
    twin of most upright faces (training/choose_presence.py)."""
    probes = model.run_crops(crops, flip=False)
    bar = model.upright_read_quality
    unsure = [
        i for i, (views, presence) in enumerate(probes)
        if bar is None or model.reading_quality(views, presence) < bar
    ]  # fmt: skip
    if not unsure:
        return crops, probes
    twins = [model.crop(image_rgb, candidates[i].bbox, candidates[i].roll + 180.0) for i in unsure]
    for i, twin, probe in zip(unsure, twins, model.run_crops(twins, flip=False), strict=True):
        if model.reading_quality(*probe) > model.reading_quality(*probes[i]) or sure_twin(
            model, probe[0], probes[i][0]
        ):
            crops[i], probes[i] = twin, probe
    return crops, probes


def recrop_place(
    points: np.ndarray,
    candidate: Candidate,
    crop: FaceCrop,
    box_stats: dict | None,
    recrop_iou: float,
) -> tuple[np.ndarray, float] | None:
    """(box, roll) to crop a face again at, or None to keep its crop. A face more tilted
    than the keypoints said (they are coarse) is cropped again with the landmarks' own
    roll, which the model was trained to correct; and one whose detector box is far from
    where the landmarks put it (close-ups, where the box is cut by the frame) is cropped
    again from the landmarks' box."""
    roll = float(np.degrees(face_roll(points)))
    box = candidate.bbox
    if recrop_iou > 0 and box_stats is not None:
        implied = upright_box(points, roll, box_stats)
        if float(box_iou(np.asarray(box, np.float64), implied)[0]) < recrop_iou:
            box = implied
    turned = abs(angle_difference(roll, crop.roll)) > ROLL_RECROP_DEGREES
    return (box, roll) if box is not candidate.bbox or turned else None


def probe_can_stand_in(first_box: np.ndarray, new_box: np.ndarray) -> bool:
    """Whether a face cropped again may keep its first crop's unmirrored reading (the
    probe) in place of its new crop's (--flip auto): when the new box overlaps the
    first by at least PROBE_STANDS_IN_IOU (a new roll, or a box moved a little). A face
    whose box moved further, such as a close-up cut by the frame, was read worse in its
    first crop."""
    first, new = np.asarray(first_box, np.float64), np.asarray(new_box, np.float64)
    return float(box_iou(first, new[None])[0]) >= PROBE_STANDS_IN_IOU
