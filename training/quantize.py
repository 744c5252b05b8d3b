"""Static int8 quantization of a model, calibrated on training crops made as at run time.

    python -m training.quantize models/fan2d_compact.onnx     # -> models/fan2d_compact.int8.onnx
    python -m training.quantize models/depth_compact.onnx     # the depth model the same way
    python -m training.quantize MODEL.onnx --out other.onnx --faces 100 --check 0

The tool picks NAME.int8.onnx when it sits beside the fp32 default model
(util.runtime.model_for_precision; ``--precision fp32`` keeps the other).

What it does, and why (measured on this machine, AMD EPYC with AVX-512 VNNI, issue 11):
  - uint8 activations and int8 weights (U8S8): S8S8, onnxruntime's documented default,
    ran slower than fp32 here;
  - calibration on TRAINING faces only (evenly spread over ``300w/train``, never the
    validation set), each cropped as the tool crops a detection (training.data's
    validation_crop: the mean BlazeFace-like box, no augmentation), in the model's own
    input format; for a depth model the crop plus the 68 Gaussian maps of the
    annotated points, as util.depth builds them;
  - MinMax ranges from the MEDIAN of the per-crop ranges (``activation_ranges``):
    plain MinMax (and Entropy) took one outlier crop's range (an early activation at
    4957 against a median of 26) and broke the model; Percentile 99.99 broke it too
    (points 13 % of the inter-ocular distance from fp32's); onnxruntime's moving average
    (the mean of the per-crop ranges) works, but the outlier still pulls it up: 1.27 %
    against 0.62 % with the median;
  - ``quant_pre_process`` first (shape inference and graph clean-up);
  - fully connected layers stay fp32 (``FP32_OPS``: the depth model's head);
  - for a 2D model, the landmark offsets of the spec get the int8 model's own bias added
    (``correct_offsets``, measured on training faces);
  - for a 2D model with a presence output, the band of int8 presences the fp32 file
    referees at run time (``referee_band``): quantized features move non-faces' presence
    logits (version 5: by +0.89 on average, 1.31 standard deviation, on training
    negatives; faces by 0.07), which turned 2 of 22 non-face pictures into faces;
  - the ``model_spec`` metadata is kept, with ``"precision": "int8"`` and how the file
    was made added to it, so the int8 file loads with the same contract;
  - afterwards (``--check N``, default 50) it compares int8 with fp32 on N other training
    crops: 1-thread latency (median of interleaved runs) and, for a 2D model, the
    landmark distance in percent of the inter-ocular distance. End to end on 300w/val:
    ``python -m training.evaluate --model-2d OUT``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from training.data import (
    CropSettings,
    Face,
    load_box_stats,
    validation_crop,
)
from training.paths import DATA_300W
from util.crop import transform_points
from util.landmark_stage import ORIGINAL_FAN_SPEC
from util.landmarks import read_pts
from util.model_facts import LandmarkFacts
from util.runtime import ModelSpec, int8_path, read_spec, spec_facts

DEFAULT_DATA = DATA_300W / "train"
DEFAULT_FACES = 200  # calibration crops
DEFAULT_OFFSET_FACES = 400  # faces to measure the int8 - fp32 landmark bias on
DEFAULT_REFEREE_NEGATIVES = 300  # non-face crops to measure the presence drift on
# The referee band's half-width, in standard deviations of the int8 - fp32 logit drift.
REFEREE_DEVIATIONS = 3.0
# Kept in fp32: the fully connected layers (the depth model's head). Measured on the
# depth model (z error over the box on 300w/val, fp32 1.45 %): all int8 1.51 %, the head
# in fp32 1.44 %, at the same speed. The 2D model has none.
FP32_OPS = ("Gemm", "MatMul")
RANGE_QUANTILE = 0.5  # of the per-crop activation ranges: see activation_ranges


# --------------------------------------------------------------------------- inputs


def pick_faces(folder: Path, count: int, exclude: set[str] = frozenset()) -> list[Face]:
    """``count`` faces spread evenly over the sorted NAME.jpg + NAME.pts of ``folder``,
    leaving out the names in ``exclude`` (so a check set does not repeat calibration)."""
    import cv2

    jpgs = [
        p
        for p in sorted(folder.glob("*.jpg"))
        if p.with_suffix(".pts").is_file() and p.stem not in exclude
    ]
    if not jpgs or count <= 0:
        return []
    chosen = [jpgs[i] for i in np.linspace(0, len(jpgs) - 1, min(count, len(jpgs))).astype(int)]
    faces = []
    for jpg in chosen:
        image = cv2.imread(str(jpg), cv2.IMREAD_COLOR)
        if image is not None:
            faces.append(Face(jpg.stem, image[..., ::-1].copy(), read_pts(jpg.with_suffix(".pts"))))
    return faces


def crop_settings(spec: ModelSpec) -> CropSettings:
    """The crop the model runs on: its spec's, else the tool's default (as a depth model,
    which reads the 2D model's crop)."""
    facts = spec_facts(spec, f"{spec.kind} spec")
    if not isinstance(facts, LandmarkFacts):
        return replace(CropSettings(), size=int(spec.input_size[0]))
    return CropSettings(
        size=int(spec.input_size[0]), scale=facts.crop_scale, shift_y=facts.crop_shift_y
    )


def model_inputs(spec: ModelSpec, faces: list[Face]) -> list[np.ndarray]:
    """One (1, C, S, S) float32 input per face, exactly as the tool feeds the model."""
    from util.depth import depth_input

    crop, stats = crop_settings(spec), load_box_stats()
    inputs = []
    for face in faces:
        image, matrix = validation_crop(face, crop, stats)
        if spec.kind == "depth":
            inputs.append(depth_input(image, transform_points(face.points, matrix), spec))
        else:
            inputs.append(spec.to_tensor(image))
    return inputs


# --------------------------------------------------------------------------- quantize


def activation_ranges(prepared: Path, inputs: list[np.ndarray], quantile: float, tmp: Path):
    """Each tensor's calibrated range: the ``quantile`` of the per-crop maxima (and the
    1 - ``quantile`` of the minima) over ``inputs``, as onnxruntime TensorsData.

    Why not onnxruntime's own MinMax: its plain form takes the extremes over all crops,
    and one outlier crop (an early activation at 4957 against a median of 26) broke the
    model; its moving average takes the mean of the per-crop ranges, which that outlier
    still pulls up (measured: points 1.27 % of the inter-ocular distance from fp32's on
    held-out training crops, against 0.62 % with the median, 0.66 % with 0.75 and 0.74 %
    with 0.9; at 0.97 the outliers take over: 18 %).
    """
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import TensorsData, create_calibrator

    calibrator = create_calibrator(
        prepared,
        augmented_model_path=str(tmp / "augmented.onnx"),
        calibrate_method=CalibrationMethod.MinMax,
    )
    session = calibrator.infer_session
    input_name = session.get_inputs()[0].name
    # The calibrator adds a ReduceMin and a ReduceMax output, NAME_ReduceMin/Max, per tensor.
    added = [o.name for o in session.get_outputs()][calibrator.num_model_outputs :]
    per_crop = np.array(
        [[np.asarray(v).item() for v in session.run(added, {input_name: x})] for x in inputs],
        np.float64,
    )
    ranges = {}
    for k in range(0, len(added), 2):
        tensor, kind = added[k].rsplit("_", 1)
        assert kind == "ReduceMin" and added[k + 1] == f"{tensor}_ReduceMax", added[k : k + 2]
        low = np.quantile(per_crop[:, k], 1.0 - quantile)
        high = np.quantile(per_crop[:, k + 1], quantile)
        ranges[tensor] = (np.array(low, np.float32), np.array(high, np.float32))
    del session, calibrator
    return TensorsData(CalibrationMethod.MinMax, ranges)


def fp32_node_names(
    graph: object, fp32_ops: tuple[str, ...], fp32_nodes: tuple[str, ...]
) -> list[str]:
    """Nodes kept in fp32: those named with one of ``fp32_nodes``, and those of a type
    in ``fp32_ops`` (the fully connected heads) with every node after them. A small
    head's output quantized to uint8 is coarse, and its range comes from face crops
    only: the presence logit's range was [0, max], so every non-face's negative logit
    became 0 and its presence 0.502, above the 0.5 threshold (the upside-down sample's
    false face). Only the heads' tails follow them: a name given for a node in the
    trunk would otherwise take the rest of the network to fp32."""
    heads = {n.name for n in graph.node if n.op_type in fp32_ops}
    kept = heads | {n.name for n in graph.node if any(k in n.name for k in fp32_nodes)}
    tensors = {t for n in graph.node if n.name in heads for t in n.output}
    for node in graph.node:  # topologically sorted: one pass reaches every consumer
        if tensors.intersection(node.input):
            kept.add(node.name)
            tensors.update(node.output)
    return [n.name for n in graph.node if n.name in kept]


def quantize(
    model_path: Path,
    out: Path,
    inputs: list[np.ndarray],
    spec: ModelSpec,
    quant_format: str = "qdq",
    per_channel: bool = True,
    fp32_nodes: tuple[str, ...] = (),
    fp32_ops: tuple[str, ...] = FP32_OPS,
    range_quantile: float = RANGE_QUANTILE,
) -> dict:
    """Write ``out``: ``model_path`` quantized (U8S8) with ranges from ``inputs``; the
    spec gains "precision": "int8" and a note of how. Returns that note."""
    import inspect

    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )
    from onnxruntime.quantization.calibrate import save_tensors_data

    from training.export import write_spec

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        raise RuntimeError("training/quantize.py needs onnxruntime >= 1.32 (calibration cache)")
    with tempfile.TemporaryDirectory(prefix="quantize_") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # onnx shape inference is enough; the symbolic one fails on the dynamic batch axis
        quant_pre_process(str(model_path), str(prepared), skip_symbolic_shape=True)
        graph = onnx.load(str(prepared))
        excluded = fp32_node_names(graph.graph, fp32_ops, fp32_nodes)
        # The ranges go to onnxruntime as a calibration cache: it then skips its own.
        cache = Path(tmp) / "ranges.json"
        save_tensors_data(activation_ranges(prepared, inputs, range_quantile, Path(tmp)), cache)
        quantized = Path(tmp) / "quantized.onnx"
        quantize_static(
            str(prepared),
            str(quantized),
            None,
            quant_format=QuantFormat.QDQ if quant_format == "qdq" else QuantFormat.QOperator,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=excluded,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            calibration_cache_path=str(cache),
        )
        note = {
            "format": quant_format,
            "activations": "uint8",
            "weights": "int8" + (" per channel" if per_channel else ""),
            "calibration": f"MinMax, quantile {range_quantile} of the per-crop ranges",
            "calibration_crops": f"{len(inputs)} training crops, made as at run time",
            "fp32_nodes": excluded,
            "by": "training/quantize.py",
        }
        extra = dict(spec.extra) | {"precision": "int8", "quantization": note}
        write_spec(quantized, dataclasses.replace(spec, extra=extra), out)
    return note


def correct_offsets(fp32: Path, int8: Path, faces: list[Face]) -> np.ndarray:
    """Add the quantization's own bias to the int8 model's per-landmark offsets.

    Quantization moves the points a little, and partly the same way on every face
    (measured on the first int8 model, on training crops: a mean shift from fp32 of
    1.3 % of the inter-ocular distance, half of it such a bias). The fp32 model's
    offsets (training/calibrate.py) get the mean fp32 - int8 difference of the decoded
    points on ``faces`` (training faces, with the mirror view, as calibrate.py measures),
    in the same units and frame; nothing else about the calibration changes, so fp32
    and int8 stay comparable. Returns the new (68, 2) offsets, written into ``int8``."""
    from training.calibrate import measure_offsets
    from training.export import write_spec
    from util.landmark_stage import LandmarkModel
    from util.runtime import load_model

    models = [LandmarkModel(load_model(p, default_spec=ORIGINAL_FAN_SPEC)) for p in (fp32, int8)]
    fp32_bias, int8_bias = (measure_offsets(m, faces, progress=False) for m in models)
    spec, codec = models[1].model.spec, models[1].facts.codec
    if codec.landmark_offsets is None:
        raise ValueError(f"{int8}: no landmark_offsets to correct")
    offsets = codec.landmark_offsets + (int8_bias - fp32_bias)
    extra = dict(spec.extra) | {"landmark_offsets": np.round(offsets, 4).tolist()}
    extra["landmark_offsets_from"] = (
        f"{codec.landmark_offsets_from or 'the fp32 model'}; plus the int8 - fp32 "
        f"bias on {len(faces)} training faces (training/quantize.py)"
    )
    write_spec(int8, dataclasses.replace(spec, extra=extra))
    return offsets


def referee_band(
    fp32: Path, int8: Path, faces: list[Face], count: int = DEFAULT_REFEREE_NEGATIVES
) -> dict:
    """Write into ``int8``'s spec the band of int8 presences in which the fp32 file
    decides (util.landmark_stage.LandmarkModel's referee): the threshold's logit plus or
    minus REFEREE_DEVIATIONS standard deviations of the int8 - fp32 logit drift on
    ``count`` non-face crops (training/negatives.py, a quarter of them turned faces, as
    in training) made from the training ``faces``. Returns the band's entry."""
    from training.export import write_spec
    from training.negatives import NegativeCrops

    spec = read_spec(int8)
    facts = spec_facts(spec, int8)
    threshold = facts.presence_threshold if isinstance(facts, LandmarkFacts) else None
    if threshold is None:
        raise ValueError(f"{int8}: no presence_threshold to referee")
    negatives = NegativeCrops(faces, spec.input_size[0]).with_turned_faces(0.25)
    rng = np.random.default_rng(0)
    crops = [spec.to_tensor(negatives(rng)) for _ in range(count)]
    a, b = session(fp32, 0), session(int8, 0)
    name = a.get_inputs()[0].name

    def logits(s) -> np.ndarray:
        p = np.array([float(s.run(None, {name: x})[1].ravel()[0]) for x in crops])
        p = np.clip(p, 1e-6, 1 - 1e-6)
        return np.log(p / (1 - p))

    drift = logits(b) - logits(a)
    centre = np.log(threshold / (1 - threshold))
    half = REFEREE_DEVIATIONS * float(drift.std())
    entry = {
        "model": fp32.name,
        "low": round(float(1 / (1 + np.exp(-(centre - half)))), 4),
        "high": round(float(1 / (1 + np.exp(-(centre + half)))), 4),
        "logit_drift_mean": round(float(drift.mean()), 3),
        "logit_drift_std": round(float(drift.std()), 3),
        "from": f"{count} non-face training crops, training/quantize.py",
    }
    extra = dict(spec.extra) | {"presence_referee": entry}
    write_spec(int8, dataclasses.replace(spec, extra=extra))
    return entry


# --------------------------------------------------------------------------- check


def session(path: Path, threads: int = 1):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def compare_latency(paths: list[Path], x: np.ndarray, runs: int = 50) -> list[float]:
    """Median ms of each model on 1 thread, runs interleaved so load hits all alike."""
    sessions = [session(p) for p in paths]
    names = [s.get_inputs()[0].name for s in sessions]
    for s, name in zip(sessions, names, strict=True):
        for _ in range(3):
            s.run(None, {name: x})
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(runs):
        for k, (s, name) in enumerate(zip(sessions, names, strict=True)):
            start = time.perf_counter()
            s.run(None, {name: x})
            times[k].append(time.perf_counter() - start)
    return [1000 * statistics.median(t) for t in times]


def compare_outputs(fp32: Path, int8: Path, spec: ModelSpec, inputs: list[np.ndarray]) -> dict:
    """How far the int8 model's result is from fp32's on ``inputs``: for a 2D model the
    decoded landmarks (mean distance in % of the inter-ocular distance, and the worst
    face), for others the largest output difference relative to the output's range."""
    from util.heatmap_codec import HeatmapCodec

    a, b = session(fp32, 0), session(int8, 0)
    name = a.get_inputs()[0].name
    codec = HeatmapCodec.from_spec(spec)
    per_face = []
    for x in inputs:
        out_a = a.run(None, {name: x})[0][0]  # heatmaps first, presence after
        out_b = b.run(None, {name: x})[0][0]
        if spec.kind == "depth":
            span = float(np.ptp(out_a)) or 1.0
            per_face.append(float(np.abs(out_a - out_b).max()) / span)
            continue
        pa, _ = codec.peaks(out_a)
        pb, _ = codec.peaks(out_b)
        eyes = np.linalg.norm(pa[36] - pa[45]) or 1.0
        per_face.append(float(np.linalg.norm(pa - pb, axis=1).mean() / eyes))
    key = "max_output_diff_over_range" if spec.kind == "depth" else "landmark_shift_io"
    return {f"{key}_mean": float(np.mean(per_face)), f"{key}_max": float(np.max(per_face))}


def check(fp32: Path, int8: Path, spec: ModelSpec, data: Path, count: int, used: list) -> None:
    """Print the 1-thread latency of both models and how far int8 is from fp32, on
    ``count`` training faces that were not among the calibration faces ``used``."""
    others = model_inputs(spec, pick_faces(data, count, exclude={f.name for f in used}))
    fp32_ms, int8_ms = compare_latency([fp32, int8], others[0])
    print(
        f"1 thread, median of 50 interleaved runs: fp32 {fp32_ms:.1f} ms, "
        f"int8 {int8_ms:.1f} ms ({fp32_ms / int8_ms:.2f}x)"
    )
    difference = compare_outputs(fp32, int8, spec, others)
    print(f"on {len(others)} other training crops: {json.dumps(difference)}")


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", type=Path, help="fp32 ONNX (2D FAN-format or depth)")
    parser.add_argument("--out", type=Path, default=None, help="default: NAME.int8.onnx beside it")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="training faces")
    parser.add_argument("--faces", type=int, default=DEFAULT_FACES, help="calibration crops")
    parser.add_argument("--format", choices=["qdq", "qoperator"], default="qdq")
    parser.add_argument(
        "--per-channel",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one weight scale per output channel",
    )
    parser.add_argument(
        "--range-quantile",
        type=float,
        default=RANGE_QUANTILE,
        help="activation range: this quantile of the per-crop maxima (0.5: their median)",
    )
    parser.add_argument(
        "--fp32-nodes",
        nargs="*",
        default=[],
        metavar="TEXT",
        help="keep in fp32 the nodes whose names contain one of these",
    )
    parser.add_argument(
        "--offset-faces",
        type=int,
        default=DEFAULT_OFFSET_FACES,
        help="2D models with landmark offsets: add the int8 - fp32 bias measured on N "
        "training faces to them (0: keep the fp32 offsets)",
    )
    parser.add_argument(
        "--check", type=int, default=50, help="compare with fp32 on N other training crops"
    )
    parser.add_argument(
        "--check-only", action="store_true", help="only compare an existing int8 file"
    )
    args = parser.parse_args(argv)

    spec = read_spec(args.model, ORIGINAL_FAN_SPEC)
    facts = spec_facts(spec, args.model)
    if getattr(facts, "precision", "fp32") == "int8":
        print(f"{args.model}: already int8", file=sys.stderr)
        return 2
    out = args.out or int8_path(args.model)
    faces = pick_faces(args.data, args.faces)
    if not faces:
        print(f"{args.data}: no NAME.jpg + NAME.pts faces", file=sys.stderr)
        return 2
    if args.check_only:
        if not out.is_file():
            print(f"{out}: not found", file=sys.stderr)
            return 2
        check(args.model, out, spec, args.data, max(1, args.check), faces)
        return 0
    start = time.perf_counter()
    note = quantize(
        args.model,
        out,
        model_inputs(spec, faces),
        spec,
        args.format,
        args.per_channel,
        tuple(args.fp32_nodes),
        range_quantile=args.range_quantile,
    )
    print(f"wrote {out} ({time.perf_counter() - start:.0f} s): {json.dumps(note)}")
    landmarks = facts if isinstance(facts, LandmarkFacts) else None
    if args.offset_faces > 0 and landmarks and landmarks.codec.landmark_offsets is not None:
        start = time.perf_counter()
        offsets = correct_offsets(args.model, out, pick_faces(args.data, args.offset_faces))
        moved = np.linalg.norm(offsets - landmarks.codec.landmark_offsets, axis=1)
        print(
            f"landmark offsets corrected by the int8 - fp32 bias on {args.offset_faces} "
            f"training faces ({time.perf_counter() - start:.0f} s): moved "
            f"{moved.mean():.3f} heatmap px on average"
        )
    if landmarks and "presence" in landmarks.outputs and landmarks.presence_threshold is not None:
        band = referee_band(args.model, out, faces)
        print(f"presence referee band: {json.dumps(band)}")
    if args.check > 0:
        check(args.model, out, spec, args.data, args.check, faces)
    return 0


if __name__ == "__main__":
    sys.exit(main())
