#!/usr/bin/env bash
# Version 13 of the 3D file: version 11 (models/fan3d_compact.onnx, imported by
# training/from_onnx.py) trained on with version 11's recipe plus the real AFLW2000-3D
# training faces of training/aflw.py's split (--real-3d, 3D maps only, each |yaw| bin
# repeated 1 / 2 / 3 times), their crops placed on the shipped pipeline's own 2D
# landmarks of them (aflw_records.jsonl: python -m training.evaluate_aflw --part all
# --json training/runs/fan_v13/aflw_records.jsonl, before this run, with the shape
# prior rebuilt from the training shapes). Validates on 300w/val and the AFLW val faces.
python -m training.train_2d --workdir training/runs/fan_v13 --init models/fan3d_compact.onnx \
  --channels 80 \
  --out training/runs/fan_v13/fan2d_compact.onnx --out-3d training/runs/fan_v13/fan3d_compact.onnx \
  --epochs 8 --first-cycle-epochs 8 --lr 2e-4 --average-decay 0.998 \
  --turn 0.6 --wide-share 0.75 --wide-total --most-3d 85 \
  --turned-negatives 0.25 --seed 13 --val-every 900 \
  --real-3d --real-3d-records training/runs/fan_v13/aflw_records.jsonl "$@"
