"""Measure a 3D model's own pose frame on the AFLW2000-3D training faces and store it in
the model's spec (``pose_frame``), where the aligner takes it in place of the shape
prior's (util/head_pose.py).

    python -m training.evaluate_aflw --part all --json R.jsonl -- --model-3d M.onnx
    python -m training.pose_frame --records R.jsonl --model-3d M.onnx [--write]

The prior's frame is measured on the true points; the networks' points sit a little
differently (e.g. a whole face a few degrees pitched), which one fixed rotation takes
out. The fits are made again from the records' landmarks, as the aligner makes them
(util.head_pose.pose_fit), so the records must come from a run with that 3D
model. The frame is measured on the training faces and reported on the validation
faces, before and after. --write puts it into the model file and its int8 sibling
(NAME.int8.onnx), when there.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from training.aflw import POSE_RANGE, pose_mae, split
from training.evaluate_aflw import match_face, read_records
from training.export import write_spec
from training.paths import MODELS_DIR, SHAPE_PRIOR_PATH
from util.head_pose import HeadPose, pose_fit, pose_frame_from_fits
from util.runtime import read_spec
from util.shape_prior import ShapePrior


def fit_rotations(part: str, records: dict, prior: ShapePrior) -> tuple:
    """(labels, the fits' rotations (N, 3, 3), their faces' indices) of a part, faces
    whose every |angle| is within POSE_RANGE only."""
    labels = split(part)
    rotations, index = [], []
    for i, name in enumerate(labels.names):
        face = match_face(records.get(name), labels.pt3d[i])
        if face is None or face.get("landmarks_3d") is None:
            continue
        if np.all(np.abs(labels.pose[i]) <= POSE_RANGE):
            points_3d, points_2d = np.asarray(face["landmarks_3d"]), np.asarray(face["landmarks"])
            rotations.append(pose_fit(prior, points_3d, points_2d)[1])
            index.append(i)
    return labels, np.array(rotations), np.array(index, int)


def errors(rotations: np.ndarray, frame: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(pitch, yaw, roll) mean absolute errors in degrees."""
    poses = [HeadPose.from_fit(r, frame) for r in rotations]
    found = np.array([[p.pitch, p.yaw, p.roll] for p in poses])
    return pose_mae(found, truth).mean(0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=Path, required=True)
    parser.add_argument("--model-3d", type=Path, default=MODELS_DIR / "fan3d_compact.onnx")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    prior = ShapePrior.load(SHAPE_PRIOR_PATH)
    records = read_records(args.records)
    labels, rotations, index = fit_rotations("train", records, prior)
    # Pose_Para is (pitch, yaw, roll); the head_pose functions take (yaw, pitch, roll).
    frame = pose_frame_from_fits(rotations, labels.pose[index][:, [1, 0, 2]])
    for part in ("train", "val"):
        labels, rotations, index = fit_rotations(part, records, prior)
        for name, used in (("prior's frame", prior.pose_frame), ("model's frame", frame)):
            e = errors(rotations, used, labels.pose[index])
            print(f"{part} ({len(index)} faces), {name}: MAE {e.mean():.2f} deg "
                  f"(pitch {e[0]:.2f}, yaw {e[1]:.2f}, roll {e[2]:.2f})")  # fmt: skip
    if args.write:
        int8 = args.model_3d.with_name(args.model_3d.stem + ".int8.onnx")
        for path in (args.model_3d, int8):
            if path.is_file():
                spec = read_spec(path)
                extra = spec.extra | {"pose_frame": np.round(frame, 6).tolist()}
                write_spec(path, dataclasses.replace(spec, extra=extra))
                print(f"wrote pose_frame into {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
