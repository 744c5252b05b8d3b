"""Folds of annotated faces, and the held-out calibration fitted on one of them."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training.folds import in_fold, parse_fold, source_of
from training.paths import MODELS_DIR, REPO, VAL_300W

NAMES = [f"helen_{i}" for i in range(7)] + [f"lfpw_test_{i}" for i in range(4)]


def test_folds_partition_the_names_and_keep_each_sources_share() -> None:
    halves = [in_fold(NAMES, (k, 2)) for k in (0, 1)]
    assert all(a != b for a, b in zip(*halves, strict=True))  # every name in exactly one
    for half in halves:
        chosen = [n for n, keep in zip(NAMES, half, strict=True) if keep]
        assert 3 <= sum(source_of(n) == "helen" for n in chosen) <= 4
        assert sum(source_of(n) == "lfpw" for n in chosen) == 2
    # membership depends on the names, not on the order they come in
    assert in_fold(NAMES[::-1], (0, 2)) == halves[0][::-1]
    assert in_fold(NAMES, None) == [True] * len(NAMES)


@pytest.mark.parametrize("text", ["2/2", "0/1", "a/2", "1"])
def test_a_bad_fold_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_fold(text)


@pytest.mark.skipif(not VAL_300W.is_dir(), reason="../shared/data/300w is not beside the repo")
def test_calibrate_writes_held_out_offsets_to_a_copy(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    model = MODELS_DIR / "fan2d_fast.int8.onnx"
    before = model.read_bytes()
    out = tmp_path / "calibrated.onnx"
    cmd = [sys.executable, "-m", "training.calibrate", "--model", str(model), "--out", str(out)]
    cmd += ["--fold", "1/2", "--limit", "6", "--threads", "1"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert model.read_bytes() == before  # --out: the shipped file is left alone
    import onnxruntime

    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    extra = json.loads(session.get_modelmeta().custom_metadata_map["model_spec"])["extra"]
    assert "3 faces of 300w/val, fold 1/2" in extra["landmark_offsets_from"]
    offsets = np.asarray(extra["landmark_offsets"])
    # 3 faces: noisy, but a heatmap pixel or two, not the tens a wrong frame would give
    assert offsets.shape == (68, 2) and 0 < np.abs(offsets).max() < 4
