# Version 8: version 7 (80 channels) trained on in a fresh cosine cycle, same joint 2D + 3D recipe.
# Started with 16 epochs and resumed (--resume) at epoch 3 with 13, to end within the session.
python -m training.train_2d --workdir training/runs/fan_v8 --init training/runs/fan_v7/last.pt \
  --channels 80 \
  --out training/runs/fan_v8/fan2d_compact.onnx --out-3d training/runs/fan_v8/fan3d_compact.onnx \
  --epochs 13 --first-cycle-epochs 13 --lr 1.5e-4 --average-decay 0.998 \
  --turn 0.5 --turned-negatives 0.25 --most-3d 75 --seed 8 --val-every 900 "$@"
