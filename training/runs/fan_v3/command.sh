python training/train_2d.py --workdir training/runs/fan_v3 --init training/runs/fan2d_v2/last.pt \
  --out models/fan2d_compact.onnx --out-3d models/fan3d_compact.onnx \
  --epochs 24 --first-cycle-epochs 24 --lr 3e-4 --turn 0.5 --turned-negatives 0.25 --most-3d 75 "$@"
