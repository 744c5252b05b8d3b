# Version 9: version 8 trained on with the 3D maps' turns drawn as a total yaw, uniform
# from 30 to 85 degrees (--wide-total), for three quarters of the turned faces: version 8
# turned faces 27 degrees too little at 70-80 degrees of yaw, having seen few past 60.
python -m training.train_2d --workdir training/runs/fan_v9 --init training/runs/fan_v8/last.pt \
  --channels 80 \
  --out training/runs/fan_v9/fan2d_compact.onnx --out-3d training/runs/fan_v9/fan3d_compact.onnx \
  --epochs 13 --first-cycle-epochs 13 --lr 1.5e-4 --average-decay 0.998 \
  --turn 0.6 --wide-share 0.75 --wide-total --most-3d 85 \
  --turned-negatives 0.25 --seed 9 --val-every 900 "$@"
