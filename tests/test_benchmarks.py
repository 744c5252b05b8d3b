"""Fast checks of the benchmark's own parts: the FAN-4 architecture it times ours
against, and the MediaPipe 468 -> 68 point mapping (benchmarks/fan4.py, peers.py)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.peers import MEDIAPIPE_TO_IBUG68, mesh_to_ibug68


def test_fan4_has_the_original_cost_and_output():
    torch = pytest.importorskip("torch")
    from benchmarks.fan4 import FAN4_GMACS_RANGE, build_fan4
    from training.model import count_macs

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest, and steady on a busy CPU
    try:
        _check_fan4(torch, build_fan4(), FAN4_GMACS_RANGE, count_macs)
    finally:
        torch.set_num_threads(threads)


def _check_fan4(torch, net, gmacs_range, count_macs):
    # Every layer scales with the input area (the hourglass still reaches 1x1 from a 64x64
    # input), so a 64x64 pass costs exactly 1/16 of the 256x256 one and is far quicker.
    gmacs = count_macs(net, size=64) * 16 / 1e9
    lo, hi = gmacs_range
    assert lo <= gmacs <= hi
    params_mb = sum(p.numel() for p in net.parameters()) * 4 / 1e6
    assert 90 < params_mb < 100  # the original 2DFAN-4 weights file is about 95 MB
    with torch.no_grad():
        outputs = net(torch.zeros(1, 3, 64, 64))
    assert len(outputs) == 4
    assert all(tuple(o.shape) == (1, 68, 16, 16) for o in outputs)  # 1/4 of the input


def test_mediapipe_mapping_has_68_distinct_valid_points():
    assert len(MEDIAPIPE_TO_IBUG68) == 68
    assert all(1 <= len(group) <= 2 for group in MEDIAPIPE_TO_IBUG68)
    assert all(0 <= i < 468 for group in MEDIAPIPE_TO_IBUG68 for i in group)
    primary = [group[0] for group in MEDIAPIPE_TO_IBUG68]
    assert len(set(primary)) == 68
    assert len(set(MEDIAPIPE_TO_IBUG68)) == 68


def test_mesh_to_ibug68_picks_and_averages():
    mesh = np.arange(468 * 2, dtype=np.float64).reshape(468, 2)
    points = mesh_to_ibug68(mesh)
    assert points.shape == (68, 2)
    np.testing.assert_allclose(points[0], mesh[127])  # jaw start: one vertex
    np.testing.assert_allclose(points[3], (mesh[132] + mesh[58]) / 2)  # two: their mean
    # Subject's right eye outer corner (36) lies left of the left eye's (45) in the mesh
    # too: the same vertex order as the iBUG scheme, not mirrored.
    assert MEDIAPIPE_TO_IBUG68[36] == (33,) and MEDIAPIPE_TO_IBUG68[45] == (263,)
