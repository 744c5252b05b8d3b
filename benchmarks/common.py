"""What the benchmark's parts share: paths, targets, the models of a run (``Setup``), the
notes the report prints, and small helpers (timing medians, memory, MACs of a graph).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from training.paths import REPO, SAMPLES_DIR, VAL_300W

DEFAULT_DATA = VAL_300W
DEFAULT_OUT = REPO / "benchmarks" / "results"
DEFAULT_CACHE = REPO / "benchmarks" / ".cache"
VIDEO_SOURCE = SAMPLES_DIR / "astronaut.png"
FRAME_SIZE = (640, 480)  # width, height
LANDMARK_SPEEDUP_TARGET = 25.0  # our shipped landmark step vs FAN-4 fp32, same threads
VIDEO_FPS_TARGET = 30.0  # end to end, 2D model, 2 threads (busy machine; 100 when quiet)
VIDEO_FPS_QUIET_TARGET = 100.0
VIDEO_THREADS = 2
FOLDER_THREADS = 2
FOLDER_IMAGES_PER_S_TARGET = 60.0  # folder with flip, 2 threads
# Flat memory over the folder run: the median RSS of its last quarter at most this much
# above that of its second quarter, after the warm-up (single samples swing by +-15 MiB
# with the sizes of the images in flight, so start and end alone would say little).
FOLDER_RSS_GROWTH_LIMIT_MIB = 10.0
# FAN-4 has random weights and is timed only, so its ranges need no more crops than
# make the quantized graph; 200 (quantize.py's default) took over 45 min on a loaded
# machine through FAN-4's 17 GMACs with every tensor's range read out.
FAN4_CALIBRATION_FACES = 20


# --------------------------------------------------------------------------- helpers


def median_ms(values: list[float] | None) -> float | None:
    return 1000.0 * statistics.median(values) if values else None


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def rss_bytes() -> int | None:
    """Resident set size of this process now (psutil, else /proc), or None."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        pass
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far.

    Linux: VmHWM, the high-water mark of this program's memory (ru_maxrss would carry
    over the parent's peak across fork and exec). Elsewhere ru_maxrss.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f}"


def onnx_gmacs(path: Path) -> float | None:
    """Multiply-accumulates of one forward pass, counted from the ONNX graph (Conv, Gemm,
    MatMul with a weight initializer, also through a DequantizeLinear), in billions; None
    when onnx is not installed."""
    try:
        import onnx
    except ImportError:
        return None
    try:
        model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    except Exception:  # noqa: BLE001 - any unreadable graph: no count
        return None
    graph = model.graph
    shapes = {
        v.name: [max(1, d.dim_value) for d in v.type.tensor_type.shape.dim]
        for v in [*graph.value_info, *graph.output, *graph.input]
    }
    weights = {w.name: list(w.dims) for w in graph.initializer}
    for node in graph.node:  # int8 (QDQ) models: a weight reaches its op dequantized
        if node.op_type == "DequantizeLinear" and node.input[0] in weights:
            weights[node.output[0]] = weights[node.input[0]]
    total = 0
    for node in graph.node:
        if len(node.input) < 2 or node.input[1] not in weights or node.output[0] not in shapes:
            continue
        w, out = weights[node.input[1]], math.prod(shapes[node.output[0]])
        if node.op_type == "Conv":
            total += out * math.prod(w[1:])
        elif node.op_type == "Gemm":
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            total += out * (w[1] if trans_b else w[0])
        elif node.op_type == "MatMul" and len(w) == 2:
            total += out * w[0]
    return total / 1e9


def model_row(name: str, path: Path | None) -> dict:
    if path is None or not Path(path).is_file():
        return {"name": name, "path": None, "size_mb": None, "gmacs": None}
    return {
        "name": name,
        "path": rel(path),
        "size_mb": Path(path).stat().st_size / 1e6,
        "gmacs": onnx_gmacs(Path(path)),
    }


def rel(path: Path | str) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- the models


@dataclass
class Notes:
    """What the report says about skipped or qualified systems."""

    lines: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        if text in self.lines:
            return
        print(f"note: {text}", file=sys.stderr)
        self.lines.append(text)


def fan4_model(cache: Path, notes: Notes) -> tuple[Path | None, float | None]:
    """FAN-4 (random weights) exported to ONNX in the cache; (path, GMACs by count_macs)."""
    path = cache / "fan4_random_seed0.onnx"
    info = cache / "fan4_random_seed0.info.json"
    if path.is_file() and info.is_file():
        return path, json.loads(info.read_text())["gmacs"]
    try:
        from benchmarks.fan4 import FAN4_GMACS_RANGE, export_fan4
    except ImportError as exc:
        notes.add(f"FAN-4 architecture skipped: cannot build it ({exc}; needs torch and onnx)")
        return None, None
    print("building FAN-4 (random weights) and exporting it to ONNX ...", file=sys.stderr)
    cache.mkdir(parents=True, exist_ok=True)
    try:
        gmacs = export_fan4(path) / 1e9
    except ImportError as exc:
        notes.add(f"FAN-4 architecture skipped: cannot export it ({exc}; needs onnx)")
        return None, None
    lo, hi = FAN4_GMACS_RANGE
    if not lo <= gmacs <= hi:
        notes.add(f"FAN-4 has {gmacs:.2f} GMACs, outside the expected {lo}-{hi}")
    info.write_text(json.dumps({"gmacs": gmacs}))
    return path, gmacs


def fan4_int8_model(fan4: Path | None, notes: Notes) -> Path | None:
    """FAN-4 quantized by training/quantize.py with its defaults, calibrated on training
    crops made as for our models (cached beside the fp32 file), so that the int8 speed-up
    of ours is not compared with an fp32 FAN-4 only; None when it cannot be made."""
    if fan4 is None:
        return None
    from util.runtime import int8_path

    path = int8_path(fan4)
    if path.is_file():
        return path
    try:
        from training import quantize
        from util.runtime import read_spec
    except ImportError as exc:
        notes.add(f"FAN-4 int8 skipped: cannot quantize it ({exc})")
        return None
    faces = quantize.pick_faces(quantize.DEFAULT_DATA, FAN4_CALIBRATION_FACES)
    if not faces:
        notes.add(f"FAN-4 int8 skipped: no training faces in {quantize.DEFAULT_DATA}")
        return None
    print("quantizing FAN-4 (int8, training/quantize.py) ...", file=sys.stderr)
    spec = read_spec(fan4)
    quantize.quantize(fan4, path, quantize.model_inputs(spec, faces), spec)
    return path


@dataclass
class Setup:
    """The models of this run, resolved once."""

    model_2d: Path | None
    model_depth: Path | None
    detector: Path | None
    fan2d: Path | None
    fan_depth: Path | None
    notes: Notes
    model_2d_int8: Path | None = None  # NAME.int8.onnx beside each, when there
    model_depth_int8: Path | None = None
    # --model-2d was given: video runs it too, else what the video running mode loads.
    model_2d_given: bool = False

    def ours(self) -> list[tuple[str, Path, Path | None]]:
        """(precision, 2D model, depth model) of each of our versions; int8 when there."""
        if self.model_2d is None:
            return []
        versions = [("fp32", self.model_2d, self.model_depth)]
        if self.model_2d_int8 is not None:
            versions.append(("int8", self.model_2d_int8, self.model_depth_int8 or self.model_depth))
        return versions

    @property
    def shipped(self) -> tuple[str, Path, Path | None]:
        """What the tool runs by default: the int8 version when there."""
        return self.ours()[-1]

    @property
    def ours_2d(self) -> bool:
        return self.model_2d is not None

    @property
    def ours_3d(self) -> bool:
        return self.model_2d is not None and self.model_depth is not None


def resolve_setup(args: argparse.Namespace) -> Setup:
    from util.aligner import DEFAULT_MODEL_2D, DEFAULT_MODEL_DEPTH
    from util.runtime import int8_path

    notes = Notes()

    def existing(path, what: str, default=None) -> Path | None:
        target = Path(path) if path else default
        if target is None:
            return None
        if not target.is_file():
            notes.add(f"{what}: {target} not found, skipped")
            return None
        return target

    def int8_beside(path: Path | None, what: str) -> Path | None:
        """NAME.int8.onnx beside ``path`` (training/quantize.py writes it), or None."""
        if path is None:
            return None
        target = int8_path(path)
        if not target.is_file():
            notes.add(
                f"{what}: no int8 file {rel(target)} (python -m training.quantize {rel(path)})"
            )
            return None
        return target

    model_2d = existing(args.model_2d, "our 2D model", DEFAULT_MODEL_2D)
    model_depth = existing(args.model_depth, "our depth model", DEFAULT_MODEL_DEPTH)
    return Setup(
        model_2d=model_2d,
        model_depth=model_depth,
        detector=Path(args.detector) if args.detector else None,
        fan2d=existing(args.fan2d, "original FAN 2D model (--fan2d)"),
        fan_depth=existing(args.fan_depth, "original FAN depth model (--fan-depth)"),
        notes=notes,
        model_2d_int8=int8_beside(model_2d, "our 2D model"),
        model_depth_int8=int8_beside(model_depth, "our depth model"),
        model_2d_given=bool(args.model_2d),
    )


def make_aligner(
    setup: Setup,
    model_2d,
    model_depth=None,
    threads: int = 0,
    flip: bool | None = False,
    running_mode: str = "image",
):
    """``model_2d`` None: the running mode's default model, as the tool loads it."""
    from util.aligner import FaceAligner

    return FaceAligner(
        model_2d=model_2d,
        model_depth=model_depth,
        detector_model=setup.detector,
        active_3d=model_depth is not None,
        runtime="onnxruntime",
        threads=threads,
        flip=flip,
        running_mode=running_mode,
    )


def make_detector(setup: Setup, threads: int = 0):
    from util.detect import FaceDetector

    return FaceDetector(setup.detector, runtime="onnxruntime", threads=threads)
