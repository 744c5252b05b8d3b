#!/usr/bin/env bash
# Version 14 of the 3D file: version 13 (models/fan3d_compact.onnx) trained on for 6 more
# epochs with version 13's recipe at half its learning rate, because version 13's
# in-training AFLW validation was still falling when its schedule ended (60-90 deg
# x, y 5.92 -> 5.79 % over its last 14 minutes). Same real-face records as version 13
# (aflw_records.jsonl: python -m training.evaluate_aflw --part all --json FILE).
python -m training.train_2d --workdir training/runs/fan_v14 --init models/fan3d_compact.onnx \
  --channels 80 \
  --out training/runs/fan_v14/fan2d_compact.onnx --out-3d training/runs/fan_v14/fan3d_compact.onnx \
  --epochs 6 --first-cycle-epochs 6 --lr 1e-4 --average-decay 0.998 \
  --turn 0.6 --wide-share 0.75 --wide-total --most-3d 85 \
  --turned-negatives 0.25 --seed 14 --val-every 900 \
  --real-3d --real-3d-records training/runs/fan_v14/aflw_records.jsonl "$@"
