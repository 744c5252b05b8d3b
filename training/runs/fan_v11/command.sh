#!/usr/bin/env bash
# Version 11 of the 3D file: version 9 (models/fan3d_compact.onnx, imported by
# training/from_onnx.py: its checkpoint did not outlive its machine) trained on for one
# more cosine cycle with version 9's recipe (3D maps' faces turned to a total yaw of
# 30-85 deg for three quarters of the turned faces): version 9 still turned faces at
# 70-80 deg of yaw 17 deg too little. The import's 2D maps start as copies of its 3D
# ones and its presence head untrained; the run trains both.
# (Started with 13 epochs; resumed at step 222 with 11, to end within the session.)
python -m training.train_2d --workdir training/runs/fan_v11 --init models/fan3d_compact.onnx \
  --channels 80 \
  --out training/runs/fan_v11/fan2d_compact.onnx --out-3d training/runs/fan_v11/fan3d_compact.onnx \
  --epochs 11 --first-cycle-epochs 11 --lr 1.5e-4 --average-decay 0.998 \
  --turn 0.6 --wide-share 0.75 --wide-total --most-3d 85 \
  --turned-negatives 0.25 --seed 11 --val-every 900 "$@"
