# Version 7: version 6's network widened from 64 to 80 channels (exactly, Net2Wider),
# then trained on in the same joint 2D + 3D run.
python -m training.train_2d --workdir training/runs/fan_v7 --init training/runs/fan_v6/last.pt \
  --channels 80 \
  --out training/runs/fan_v7/fan2d_compact.onnx --out-3d training/runs/fan_v7/fan3d_compact.onnx \
  --epochs 14 --first-cycle-epochs 14 --lr 2.5e-4 --average-decay 0.998 \
  --turn 0.5 --turned-negatives 0.25 --most-3d 75 --seed 7 --val-every 600 "$@"
