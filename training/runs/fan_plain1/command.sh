#!/usr/bin/env bash
# Issue 11's folder target needs a landmark view about 2.5x cheaper than version 8's
# (int8, 1 thread: 10.0 ms for the network). Of the layouts timed by
# `python -m benchmarks.architectures --int8`, one stack of plain blocks (one 3x3 conv
# of all 64 channels per block, training/model.py PlainBlock) at 64 channels is the one
# that cheap: 0.63 GMACs, 4.1 ms. This run measures how far it gets from scratch in one
# session, against version 2 (post blocks, 2 x 64, 110 minutes from scratch: 4.22 % in
# the training's own validation, 3.96 % end to end), with today's data recipe.
# (Started with 40 epochs; resumed after epoch 1 with 46, to fill the session.)
python -m training.train_2d --workdir training/runs/fan_plain1 --block plain --stacks 1 \
  --channels 64 --out training/runs/fan_plain1/fan2d_compact.onnx \
  --epochs 46 --first-cycle-epochs 46 --lr 1e-3 --average-decay 0.998 \
  --turn 0.6 --turned-negatives 0.25 --seed 21 --val-every 900 "$@"
