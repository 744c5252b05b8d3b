python -m training.train_2d --workdir training/runs/fan_v6 --init training/runs/fan_v5/last.pt \
  --out training/runs/fan_v6/fan2d_compact.onnx --out-3d training/runs/fan_v6/fan3d_compact.onnx \
  --epochs 22 --first-cycle-epochs 22 --lr 1.5e-4 --average-decay 0.998 \
  --turn 0.5 --turned-negatives 0.25 --most-3d 75 --seed 6 "$@"
