#!/usr/bin/env bash
# Version 12 of the 3D file: version 11 (models/fan3d_compact.onnx, imported by
# training/from_onnx.py: its checkpoint did not outlive its machine) trained on for one
# more cosine cycle with the same recipe at two thirds of the learning rate: version
# 11's cycle moved x, y at 60-90 deg of yaw from 5.53 to 5.20 % on the turned val
# faces, so the large poses were still being learnt.
python -m training.train_2d --workdir training/runs/fan_v12 --init models/fan3d_compact.onnx \
  --channels 80 \
  --out training/runs/fan_v12/fan2d_compact.onnx --out-3d training/runs/fan_v12/fan3d_compact.onnx \
  --epochs 12 --first-cycle-epochs 12 --lr 1e-4 --average-decay 0.998 \
  --turn 0.6 --wide-share 0.75 --wide-total --most-3d 85 \
  --turned-negatives 0.25 --seed 12 --val-every 900 "$@"
