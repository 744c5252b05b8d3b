python -m training.train_2d --workdir training/runs/fan_v4 --init training/runs/fan_v3/last.pt \
  --out models/fan2d_compact.onnx --out-3d models/fan3d_compact.onnx \
  --epochs 24 --first-cycle-epochs 24 --lr 2e-4 --turn 0.5 --turned-negatives 0.25 --most-3d 75 --seed 4 "$@"
