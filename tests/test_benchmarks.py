"""Fast checks of the benchmark's own parts: the FAN-4 architecture it times ours
against, the MediaPipe 468 -> 68 point mapping (benchmarks/fan4.py, peers.py), and the
runner's ratios, model set-up and report (benchmarks/speed.py, common.py, report.py)."""

from __future__ import annotations

from pathlib import Path

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


def test_architectures_times_a_candidate_in_fp32_and_int8(capsys):
    pytest.importorskip("torch")
    from benchmarks import architectures
    from training import quantize

    if not quantize.pick_faces(quantize.DEFAULT_DATA, 1):
        pytest.skip("no training faces to calibrate the int8 file on")
    assert architectures.main(["--int8", "--no-training", "plain,1,16,2"]) == 0
    header, row = capsys.readouterr().out.strip().splitlines()
    assert header.split()[-4:] == ["fp32", "ms", "int8", "ms"]
    block, stacks, channels, depth, gmacs, fp32_ms, int8_ms = row.split()
    assert (block, stacks, channels, depth) == ("plain", "1", "16", "2")
    assert float(gmacs) > 0 and float(fp32_ms) > 0 and float(int8_ms) > 0
    with pytest.raises(SystemExit):
        architectures.main(["--no-training", "wide,1,16,2"])  # no such block


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


# -- the runner's parts (benchmarks/common.py, speed.py, report.py) ----------------------


def _stages(ms: dict[str, float]) -> dict:
    """Stage-table entries of landmark steps alone, as speed.stage_timing names them."""
    return {
        f"{name}, landmark step": {"landmarks": {"median_ms": v, "runs": 30}}
        for name, v in ms.items()
    }


def test_landmark_ratios_from_one_round_of_timings():
    from benchmarks.speed import landmark_ratios

    stages = _stages(
        {
            "ours fp32": 20.0,
            "ours int8": 8.0,
            "FAN-4 architecture": 240.0,
            "FAN-4 architecture int8": 120.0,
        }
    )
    r = landmark_ratios(stages, "int8")
    assert r["ratio"] == pytest.approx(30.0)  # the target's: FAN-4 fp32 / what ships
    assert r["ratio_fp32"] == pytest.approx(12.0)
    assert r["ratio_int8"] == pytest.approx(15.0)
    assert r["ours_int8_speedup"] == pytest.approx(2.5)
    assert r["fan4_int8_speedup"] == pytest.approx(2.0)
    # Without int8 files: the fp32 ratios only; without FAN-4: nothing to report.
    fp32_only = landmark_ratios(_stages({"ours fp32": 20.0, "FAN-4 architecture": 240.0}), "fp32")
    assert fp32_only["ratio"] == pytest.approx(12.0) and "ratio_int8" not in fp32_only
    assert landmark_ratios(_stages({"ours fp32": 20.0}), "fp32") == {}


def test_setup_runs_int8_beside_fp32_and_ships_int8(tmp_path: Path):
    from benchmarks.common import Notes, Setup

    fp32, int8 = tmp_path / "m.onnx", tmp_path / "m.int8.onnx"
    setup = Setup(fp32, None, None, None, None, Notes(), model_2d_int8=int8)
    assert [p for p, _, _ in setup.ours()] == ["fp32", "int8"]
    assert setup.shipped == ("int8", int8, None)
    alone = Setup(fp32, None, None, None, None, Notes())
    assert alone.shipped == ("fp32", fp32, None)
    assert Setup(None, None, None, None, None, Notes()).ours() == []


def test_report_shows_fp32_and_int8_side_by_side(tmp_path: Path):
    from benchmarks.common import Notes
    from benchmarks.report import target_summary, write_report
    from benchmarks.speed import landmark_ratios

    stages = _stages(
        {
            "ours fp32": 20.0,
            "ours int8": 8.0,
            "FAN-4 architecture": 240.0,
            "FAN-4 architecture int8": 120.0,
        }
    )
    speed = {
        "threads": [1],
        "reps": 3,
        "stages": {"1": stages},
        "ratio": {"1": landmark_ratios(stages, "int8")},
        "fan4": {"gmacs": 17.1},
        "video": {
            "file": "30 frames",
            "runs": [
                {"threads": 2, "frames_in_flight": 2, "depth": False, "precision": "int8"}
                | {"frames": 30, "faces": 30, "fps": 45.0}
            ],
        },
        "folder": {
            "images": 20,
            "images_per_s": 61.0,
            "faces": 20,
            "errors": 0,
            "threads": 2,
            "prefetch": 2,
            "precision": "int8",
            "rss_models_loaded": 200 * 2**20,
            "rss_at": {"10%": 201 * 2**20, "50%": 201 * 2**20, "100%": 202 * 2**20},
            "rss_peak_sampled": 202 * 2**20,
            "rss_peak_process": 210 * 2**20,
            "rss_growth_mib": 1.0,
        },
    }
    info = {"date": "d", "commit": "c", "cores": 2, "processor": "p", "platform": "x"}
    info |= {"python": "3", "onnxruntime": "1", "load_average": [9.0, 9.0, 9.0]}
    notes = Notes()
    notes.lines.append("a note")
    path = tmp_path / "report.md"
    write_report(path, info, [], {}, speed, notes, ["--quick"])
    text = path.read_text()
    assert "| ours int8, landmark step | landmarks | 8.00 |" in text
    assert "| FAN-4 architecture int8, landmark step | landmarks | 120.0 |" in text
    row = next(line for line in text.splitlines() if line.startswith("| 1 | 20.0 | 8.00 |"))
    assert "| 30.0x (int8) | 12.0x | 15.0x | 2.5x | 2.0x | met |" in row
    assert "| 2D int8 | 2 | 2 | 30 | 30 | 45.0 | met |" in text
    assert "| 61.0 | met | 20 | 0 | 200 | 201 | 201 | 202 | 202 | 210 |" in text
    assert "2 images ahead" in text and "- a note" in text
    # issue 11's three targets, each as measured / target
    summary = "\n".join(target_summary(speed))
    assert summary in text
    assert "= 30.0x, target 25x: 1.20x met" in summary
    assert "45.0 fps" in summary and "quiet target 100: 0.45x NOT met" in summary
    assert "busy target 30: 1.50x met" in summary
    assert "61.0 images/s" in summary and "target 60: 1.02x met" in summary
    assert "end 202" in summary and "+1.0 MiB (limit 10) flat" in summary


def test_rss_growth_compares_quarters_not_single_samples():
    from benchmarks.speed import rss_growth

    mib = 2**20
    swinging = [(160 + (15 if k % 3 == 0 else 0)) * mib for k in range(100)]
    assert abs(rss_growth(swinging)["rss_growth_mib"]) < 1.0
    growing = [(160 + k // 4) * mib for k in range(100)]
    assert rss_growth(growing)["rss_growth_mib"] > 10.0
    warming_up = [(86 + min(k, 30) * 3) * mib for k in range(100)]  # then flat
    assert rss_growth(warming_up)["rss_growth_mib"] == 0.0
    assert rss_growth([mib] * 4) == {}


def test_cpu_profile_puts_functions_in_their_stage():
    from benchmarks.cpu_profile import stage_of

    assert stage_of("{built-in method onnxruntime.capi.onnxruntime_pybind11_state.run}") == (
        "model (onnxruntime)"
    )
    assert stage_of("{imdecode}") == stage_of("{method 'read' of 'cv2.VideoCapture' objects}")
    assert stage_of("{resize}") == "detector letterbox"
    assert stage_of("/x/util/decode.py:102(positive_centroid)") == "heatmap decoding"
    assert stage_of("/x/util/aligner.py:306(_align_detections)").startswith("other")


def test_flip_tradeoff_scores_the_records_its_runs_wrote(tmp_path: Path):
    import json

    import numpy as np

    from benchmarks.flip_tradeoff import errors, markdown
    from training.evaluate import Sample
    from util.landmarks import inter_ocular, nme

    rng = np.random.default_rng(0)
    truth = [rng.uniform(100, 300, (68, 2)) for _ in range(3)]
    samples = [Sample(tmp_path / f"{k}.jpg", points) for k, points in enumerate(truth)]
    guess = truth[0] + 2.0
    records = tmp_path / "records.jsonl"
    lines = [
        {"image": str(samples[0].image), "faces": [
            {"bbox": [0, 0, 20, 20], "landmarks": (guess + 500).tolist()},  # another face
            {"bbox": [*truth[0].min(0), *truth[0].max(0)], "landmarks": guess.tolist()}]},
        {"image": str(samples[1].image), "faces": []},  # missed
    ]  # the third image has no record: missed too
    records.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    found, missed = errors(records, samples)
    assert missed == 2
    np.testing.assert_allclose(found, [nme(guess, truth[0], inter_ocular(truth[0]))])
    report = {"modes": {mode: {"nme_mean": 0.0336, "images_per_s": fps, "seconds": 100 / fps}
                        for mode, fps in (("off", 40.0), ("auto", 35.0), ("on", 28.0))}}
    table = markdown(report)
    assert "| auto (default for images) |" in table and "| 1.14x |" in table
    assert "| off (default for video) |" in table and "| 1.00x |" in table
