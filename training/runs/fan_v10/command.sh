# Version 10: version 6's 64-channel network (0.86 GMACs, two thirds of version 8's cost)
# distilled from version 9's 80-channel one (--teacher: the heatmap targets are half the
# labels' Gaussians, half the teacher's maps), with version 9's data (--wide-total), so
# that the fast network may reach the accurate one's figures (issue 11: speed).
# (Started with 16 epochs; resumed at step 140 with 11, to end within the session.)
python -m training.train_2d --workdir training/runs/fan_v10 --init training/runs/fan_v6/last.pt \
  --teacher training/runs/fan_v9/last.pt --teacher-share 0.5 --channels 64 \
  --out training/runs/fan_v10/fan2d_compact.onnx --out-3d training/runs/fan_v10/fan3d_compact.onnx \
  --epochs 11 --first-cycle-epochs 11 --lr 1.5e-4 --average-decay 0.998 \
  --turn 0.6 --wide-share 0.75 --wide-total --most-3d 85 \
  --turned-negatives 0.25 --seed 10 --val-every 900 "$@"
