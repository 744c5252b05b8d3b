#!/usr/bin/env bash
# The 2D model's presence head retrained on real profiles (AFLW2000-3D training faces)
# besides the 300-W faces; maps untouched. Records: the shipped pipeline's run over the
# AFLW images (see training/runs/fan_v13/command.sh).
python -m training.train_presence --records training/runs/fan_v13/aflw_records.jsonl \
  --out training/runs/presence --threads 1 "$@"
