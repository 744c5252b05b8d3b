"""One reproducible report of accuracy and speed: our face alignment against its peers.

    python benchmarks/run.py                       # full run, writes benchmarks/results/
    python benchmarks/run.py --quick               # smoke run: 5 images, few repetitions
    python benchmarks/run.py --fan2d 2DFAN-4.onnx --fan-depth depth_estimation.onnx
    python benchmarks/run.py --skip-speed --out /tmp/bench    # accuracy only

Peers are optional installs (benchmarks/requirements.txt); a peer that is not installed
is skipped with a note in the report:
  - dlib's 68-point shape predictor, with dlib's HOG detector and from our BlazeFace boxes
  - MediaPipe's face mesh (468 points mapped to the 68 iBUG points), on our BlazeFace
    detections, run by ai-edge-litert
  - the FAN-4 architecture (random weights, built and exported here; timing only)
  - the original FAN ONNX files, when given with --fan2d / --fan-depth

Accuracy: every system end to end from the whole image with its own detector, on the
same annotated images (default ../shared/data/300w/val), the annotated face matched with
training.evaluate.match_annotated, metrics from training.evaluate.summarise.

Speed: per-stage medians (detection on a 640x480 frame, 2D landmarks, depth) at each
onnxruntime thread count; our landmark step against FAN-4 as a ratio measured in the same
run (interleaved, so a busy machine slows both alike); end-to-end frames per second on a
640x480 video through util.tracker.FaceTracker (the code path of `face_alignment.py -v`);
throughput and memory on a folder of N images (in a separate process, so the memory is
the tool's alone).

Writes OUT/report.md, OUT/ced.png and OUT/report.json (raw numbers).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from training.evaluate import (  # noqa: E402
    FAILURE_THRESHOLD,
    TABLE_HEADER,
    format_row,
    load_annotated,
    match_annotated,
    plot_ced,
    summarise,
)
from util.landmarks import box_size, inter_ocular, nme  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/300w/val"
DEFAULT_OUT = REPO / "benchmarks" / "results"
DEFAULT_CACHE = REPO / "benchmarks" / ".cache"
VIDEO_SOURCE = REPO / "samples" / "astronaut.png"
FRAME_SIZE = (640, 480)  # width, height
LANDMARK_SPEEDUP_TARGET = 15.0  # our landmark step vs FAN-4, same runtime and threads
VIDEO_FPS_TARGET = 30.0  # end to end, 2D model, 2 threads
FOLDER_THREADS = 2


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
    MatMul with a weight initializer), in billions; None when onnx is not installed."""
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
        "path": _rel(path),
        "size_mb": Path(path).stat().st_size / 1e6,
        "gmacs": onnx_gmacs(Path(path)),
    }


def _rel(path: Path | str) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- the systems


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


@dataclass
class Setup:
    """The models of this run, resolved once."""

    model_2d: Path | None
    model_depth: Path | None
    detector: Path | None
    fan2d: Path | None
    fan_depth: Path | None
    notes: Notes

    @property
    def ours_2d(self) -> bool:
        return self.model_2d is not None

    @property
    def ours_3d(self) -> bool:
        return self.model_2d is not None and self.model_depth is not None


def resolve_setup(args: argparse.Namespace) -> Setup:
    from util.aligner import DEFAULT_MODEL_2D, DEFAULT_MODEL_DEPTH

    notes = Notes()

    def existing(path, what: str, default=None) -> Path | None:
        target = Path(path) if path else default
        if target is None:
            return None
        if not target.is_file():
            notes.add(f"{what}: {target} not found, skipped")
            return None
        return target

    return Setup(
        model_2d=existing(args.model_2d, "our 2D model", DEFAULT_MODEL_2D),
        model_depth=existing(args.model_depth, "our depth model", DEFAULT_MODEL_DEPTH),
        detector=Path(args.detector) if args.detector else None,
        fan2d=existing(args.fan2d, "original FAN 2D model (--fan2d)"),
        fan_depth=existing(args.fan_depth, "original FAN depth model (--fan-depth)"),
        notes=notes,
    )


def make_aligner(setup: Setup, model_2d, model_depth=None, threads: int = 0, flip: bool = False):
    from util.aligner import FaceAligner

    return FaceAligner(
        model_2d=model_2d,
        model_depth=model_depth,
        detector_model=setup.detector,
        active_3d=model_depth is not None,
        runtime="onnxruntime",
        threads=threads,
        flip=flip,
    )


def make_detector(setup: Setup, threads: int = 0):
    from util.detect import FaceDetector

    return FaceDetector(setup.detector, runtime="onnxruntime", threads=threads)


@dataclass
class System:
    """One row of the accuracy table: a name, how it runs, what to say about it."""

    name: str
    run: object  # image_rgb -> list of (bbox, (68, 2) points, (68,) z or None)
    detector: str
    note: str = ""


def aligner_runner(aligner):
    def run(image):
        return [
            (f.bbox, f.landmarks, None if f.landmarks_3d is None else f.landmarks_3d[:, 2])
            for f in aligner.align(image)
        ]

    return run


def peer_runner(peer):
    def run(image):
        return [(bbox, points, None) for bbox, points in peer.landmarks(image)]

    return run


def accuracy_systems(setup: Setup, args: argparse.Namespace) -> list[System]:
    from benchmarks.peers import DlibPeer, MediaPipePeer, PeerUnavailable

    notes = setup.notes
    systems = []
    if setup.ours_2d:
        # The CLI averages with the mirror image on images (--flip auto), not on video.
        for flip, when in ((True, "images"), (False, "video")):
            aligner = make_aligner(setup, setup.model_2d, setup.model_depth, flip=flip)
            systems.append(
                System(
                    f"ours ({setup.model_2d.stem}{', flip' if flip else ''})",
                    aligner_runner(aligner),
                    "BlazeFace",
                    f"the CLI's default for {when}",
                )
            )
    if setup.fan2d is not None:
        aligner = make_aligner(setup, setup.fan2d, setup.fan_depth)
        systems.append(
            System(
                "FAN original (2DFAN-4)",
                aligner_runner(aligner),
                "BlazeFace",
                "FAN's own crop from a BlazeFace box is estimated (crop scale 2.0, see "
                "util/heatmaps.py ORIGINAL_FAN_SPEC); FAN shipped with an SFD detector"
                + (
                    "; depth sign and scale as util/depth.py ORIGINAL_DEPTH_SPEC (unverified)"
                    if setup.fan_depth is not None
                    else ""
                ),
            )
        )
    elif setup.fan_depth is not None:
        notes.add(
            "--fan-depth without --fan2d: FAN depth is timed, but its accuracy is "
            "measured only on FAN's own 2D points and crop (give --fan2d too)"
        )
    detector = make_detector(setup)
    try:
        hog = DlibPeer("hog", upsample=args.dlib_upsample)
        systems.append(
            System(
                "dlib (HOG detector)",
                peer_runner(hog),
                f"dlib HOG, upsampled {args.dlib_upsample}x",
                "dlib's model was trained on iBUG 300-W; whether its training images "
                "include these HELEN test images is not checked here",
            )
        )
        systems.append(
            System(
                "dlib (our BlazeFace boxes)",
                peer_runner(DlibPeer(detector)),
                "BlazeFace",
                "dlib's predictor was trained from its HOG detector's boxes (tighter, lower); "
                "our BlazeFace box is given to it unchanged",
            )
        )
    except PeerUnavailable as exc:
        notes.add(f"dlib skipped: {exc}")
    try:
        systems.append(
            System(
                "MediaPipe face mesh -> 68",
                peer_runner(MediaPipePeer(detector, threads=2)),
                "BlazeFace",
            )
        )
    except PeerUnavailable as exc:
        notes.add(f"MediaPipe face mesh skipped: {exc}")
    return systems


# --------------------------------------------------------------------------- accuracy


def run_accuracy(setup: Setup, args: argparse.Namespace) -> dict:
    from tqdm import tqdm

    from training.depth_labels import DEFAULT_PRIOR, depth_labels
    from training.evaluate_depth import z_error
    from util.io import read_image
    from util.shape_prior import ShapePrior

    samples = load_annotated(args.data)
    if args.limit:
        samples = samples[: args.limit]
    if not samples:
        setup.notes.add(f"accuracy skipped: no annotated images in {args.data}")
        return {}
    systems = accuracy_systems(setup, args)
    prior = ShapePrior.load(DEFAULT_PRIOR) if DEFAULT_PRIOR.is_file() else None
    state = {s.name: {"io": [], "box": [], "misses": 0, "z": [], "seconds": 0.0} for s in systems}
    z_baseline: list[float] = []
    for sample in tqdm(samples, desc="accuracy", unit="img"):
        image = read_image(sample.image)
        io_norm, box_norm = inter_ocular(sample.points), box_size(sample.points)
        reference = depth_labels(prior, sample.points) if prior is not None else None
        if reference is not None:
            z_baseline.append(z_error(np.zeros(68), reference, box_norm))
        for system in systems:
            record = state[system.name]
            start = time.perf_counter()
            results = system.run(image)
            record["seconds"] += time.perf_counter() - start
            index = match_annotated([r[0] for r in results], sample.points)
            if index is None:
                record["misses"] += 1
                continue
            _, points, z = results[index]
            record["io"].append(nme(points, sample.points, io_norm))
            record["box"].append(nme(points, sample.points, box_norm))
            if z is not None and reference is not None:
                record["z"].append(z_error(z, reference, box_norm))
    out = {"data": str(args.data), "images": len(samples), "systems": []}
    for system in systems:
        record = state[system.name]
        metrics = summarise(record["io"], record["box"], record["misses"])
        out["systems"].append(
            {
                "name": system.name,
                "detector": system.detector,
                "note": system.note,
                "metrics": metrics,
                "errors_io": record["io"],
                "z_error_mean": float(np.mean(record["z"])) if record["z"] else None,
                "z_error_median": float(np.median(record["z"])) if record["z"] else None,
                "seconds_per_image": record["seconds"] / len(samples),
            }
        )
    if z_baseline:
        out["z_baseline_mean"] = float(np.mean(z_baseline))
        out["z_baseline_median"] = float(np.median(z_baseline))
    print(TABLE_HEADER)
    for entry in out["systems"]:
        print(format_row(entry["name"][:28], entry["metrics"]))
    curves = {e["name"]: np.asarray(e["errors_io"]) for e in out["systems"] if e["errors_io"]}
    ced_path = args.out / "ced.png"
    title = f"CED, end to end, {Path(args.data).name} ({len(samples)} images)"
    if curves and plot_ced(curves, ced_path, title):
        out["ced"] = ced_path.name
    else:
        setup.notes.add("CED plot not written (matplotlib not installed)")
    return out


# --------------------------------------------------------------------------- test media


def load_source(path: Path) -> np.ndarray:
    from util.io import read_image

    return read_image(path)


def find_face(detector, image: np.ndarray) -> np.ndarray | None:
    detections = detector.detect(image)
    return np.asarray(detections[0].bbox, np.float64) if detections else None


class MovingCrop:
    """640x480 frames cut from a (scaled) source photo, the window drifting slowly
    around the face: about 60 px sideways and 30 px up and down every 5 s at 30 fps."""

    def __init__(self, source: np.ndarray, face_box: np.ndarray | None) -> None:
        import cv2

        width, height = FRAME_SIZE
        h, w = source.shape[:2]
        scale = max(width / w, height / h) * 1.3
        self.image = cv2.resize(source, (round(w * scale), round(h * scale)), cv2.INTER_LINEAR)
        if face_box is None:
            centre = np.array([w / 2, h / 2]) * scale
        else:
            centre = np.array([(face_box[0] + face_box[2]) / 2, (face_box[1] + face_box[3]) / 2])
            centre = centre * scale
        self.centre = centre
        self.limit = np.array([self.image.shape[1] - width, self.image.shape[0] - height])

    def frame(self, index: int) -> np.ndarray:
        width, height = FRAME_SIZE
        phase = 2 * np.pi * index / 150.0
        offset = np.array([60 * np.sin(phase), 30 * np.sin(2 * phase)])
        x, y = np.clip(self.centre - [width / 2, height / 2] + offset, 0, self.limit).astype(int)
        return np.ascontiguousarray(self.image[y : y + height, x : x + width])


def write_video(crop: MovingCrop, frames: int, folder: Path) -> Path:
    """The test video, mp4 (mp4v) or, if that cannot be written here, avi (MJPG)."""
    import cv2

    for name, fourcc in (("moving_face.mp4", "mp4v"), ("moving_face.avi", "MJPG")):
        path = folder / name
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 30.0, FRAME_SIZE)
        if not writer.isOpened():
            continue
        for k in range(frames):
            writer.write(np.ascontiguousarray(crop.frame(k)[..., ::-1]))
        writer.release()
        capture = cv2.VideoCapture(str(path))
        ok = capture.isOpened() and capture.read()[0]
        capture.release()
        if ok:
            return path
    raise RuntimeError("OpenCV can write neither mp4v nor MJPG video here")


def write_folder(samples: list, count: int, folder: Path) -> list[Path]:
    """``count`` JPEGs made from the annotated images: copies, mirrors, smaller and
    rotated variants in turn, so the run is not the same few files over and over."""
    import cv2
    from tqdm import tqdm

    from util.io import read_image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in tqdm(range(count), desc="writing test folder", unit="img"):
        sample = samples[k % len(samples)]
        variant = (k // len(samples)) % 4
        path = folder / f"{k:05d}_{sample.image.stem}.jpg"
        if variant == 0:
            shutil.copyfile(sample.image, path)
        else:
            image = read_image(sample.image)
            if variant == 1:
                image = image[:, ::-1]
            elif variant == 2:
                image = cv2.resize(image, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
            else:
                h, w = image.shape[:2]
                matrix = cv2.getRotationMatrix2D((w / 2, h / 2), 10.0, 1.0)
                image = cv2.warpAffine(image, matrix, (w, h), borderMode=cv2.BORDER_REFLECT)
            cv2.imwrite(str(path), np.ascontiguousarray(image[..., ::-1]))
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- speed


@dataclass
class Timed:
    """A timed system: its stages' samples, and what to call each round."""

    name: str
    stage_source: object  # object with .seconds dict, e.g. FaceAligner.times
    call: object  # () -> None, one run
    every: int = 1  # run every N rounds (slow systems fewer times)
    stages: tuple[str, ...] = ("detect", "landmarks", "depth")  # the ones it really runs


def stage_timing(
    setup: Setup, args: argparse.Namespace, threads: int, frame: np.ndarray, fan4_path: Path | None
) -> dict:
    """Median ms per stage of every system at one thread count, interleaved rounds."""
    from tqdm import tqdm

    from benchmarks.peers import DlibPeer, MediaPipePeer, PeerUnavailable

    notes = setup.notes
    timed: list[Timed] = []
    box = None
    if setup.ours_2d:
        ours = make_aligner(setup, setup.model_2d, setup.model_depth, threads)
        faces = ours.align(frame)
        if faces:
            box = faces[0].bbox
        timed.append(Timed("ours", ours.times, lambda a=ours: a.align(frame)))
    detector = make_detector(setup, threads)
    detections = detector.detect(frame)
    if box is None and detections:
        box = np.asarray(detections[0].bbox, np.float64)
    if box is None:
        notes.add(f"speed ({threads} thread(s)): no face found in the test frame")
        return {}
    slow = max(1, args.reps // max(1, args.slow_reps))

    def on_box(aligner):
        return lambda: aligner.align(frame, bboxes=[box])

    on_box_stages = ("landmarks", "depth")  # given the box: no detection

    if fan4_path is not None:
        fan4 = make_aligner(setup, fan4_path, None, threads)
        timed.append(Timed("FAN-4 architecture", fan4.times, on_box(fan4), slow, on_box_stages))
    if setup.fan2d is not None or (setup.fan_depth is not None and setup.ours_2d):
        # --fan-depth alone: FAN's depth network is timed after our 2D model, whose own
        # landmark stage is then left out of this row.
        fan = make_aligner(setup, setup.fan2d or setup.model_2d, setup.fan_depth, threads)
        stages = on_box_stages if setup.fan2d is not None else ("depth",)
        timed.append(Timed("FAN original", fan.times, on_box(fan), slow, stages))
    try:
        hog = DlibPeer("hog", upsample=args.dlib_upsample)
        hog_boxes = hog.detect(frame)
        dlib_box = hog_boxes[0] if hog_boxes else box

        def dlib_round(peer=hog, dlib_box=dlib_box):
            peer.detect(frame)
            peer.predict(frame, dlib_box)

        timed.append(Timed("dlib", hog.times, dlib_round))
    except PeerUnavailable as exc:
        if threads == args.threads[0]:
            notes.add(f"dlib skipped: {exc}")
    try:
        mp = MediaPipePeer(detector, threads=threads)
        if detections:
            timed.append(
                Timed(
                    "MediaPipe face mesh",
                    mp.times,
                    lambda p=mp, d=detections[0]: p.predict(frame, d),
                )
            )
    except PeerUnavailable as exc:
        if threads == args.threads[0]:
            notes.add(f"MediaPipe face mesh skipped: {exc}")

    for system in timed:  # warm-up: first runs allocate
        for _ in range(2):
            system.call()
        system.stage_source.seconds.clear()
    for round_index in tqdm(range(args.reps), desc=f"stages, {threads} thread(s)", unit="round"):
        for system in timed:
            if round_index % system.every == 0:
                system.call()
    result = {}
    for system in timed:
        result[system.name] = {
            stage: {"median_ms": median_ms(values), "runs": len(values)}
            for stage, values in system.stage_source.seconds.items()
            if stage in system.stages
        }
    return result


def run_video_benchmark(
    setup: Setup, video: Path, threads: int, with_depth: bool, frames: int
) -> dict:
    """Frames per second through the video path the tool uses (util.tracker.FaceTracker
    with the command line's defaults, as `face_alignment.py -v FILE` runs it with no
    window and no output file): read frame, follow the faces from their landmarks with
    the detector every 10th frame for new ones, JSON record; models loaded beforehand."""
    import cv2

    from util.tracker import FaceTracker
    from util.video import read_frames

    aligner = make_aligner(
        setup, setup.model_2d, setup.model_depth if with_depth else None, threads
    )
    capture = cv2.VideoCapture(str(video))
    ok, first = capture.read()
    capture.release()
    if ok:
        for _ in range(3):  # warm-up: first runs allocate
            aligner.align(np.ascontiguousarray(first[..., ::-1]))
    aligner.times.seconds.clear()

    tracker = FaceTracker(aligner)  # the command line's defaults: --redetect 10, no smoothing
    capture = cv2.VideoCapture(str(video))
    done = 0
    start = time.perf_counter()
    try:
        for frame in read_frames(capture):
            record = [face.to_json() for face in tracker.process(frame)]
            json.dumps({"frame": done, "faces": record})
            done += 1
    finally:
        capture.release()
    elapsed = time.perf_counter() - start
    return {
        "threads": threads,
        "depth": with_depth,
        "frames": done,
        "faces": len(aligner.times.seconds.get("landmarks", [])),
        "seconds": elapsed,
        "fps": done / elapsed if elapsed > 0 else None,
        "status": 0 if done else 1,
    }


def run_folder_benchmark(setup: Setup, folder: Path, count: int) -> dict:
    """Throughput and memory on the folder, measured in a fresh process (worker below)."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--folder-worker",
        str(folder),
        "--threads",
        str(FOLDER_THREADS),
        "--model-2d",
        str(setup.model_2d),
    ]
    if setup.detector:
        cmd += ["--detector", str(setup.detector)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        setup.notes.add(f"folder benchmark failed (exit {proc.returncode})")
        return {}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["images_requested"] = count
    return result


def folder_worker(folder: Path, args: argparse.Namespace) -> int:
    """Child process: run the aligner over every image of ``folder`` as the CLI does
    (FaceAligner.iter_paths), sampling RSS after each image; print one JSON line."""
    from util.aligner import FaceAligner
    from util.io import expand_inputs

    rss_start = rss_bytes()
    aligner = FaceAligner(
        model_2d=args.model_2d,
        detector_model=args.detector,
        runtime="onnxruntime",
        threads=args.threads[0],
    )
    rss_loaded = rss_bytes()
    total = len(expand_inputs([str(folder)]))
    marks = {max(1, round(total * p / 100)): p for p in (10, 50, 100)}
    samples, at = [], {}
    faces = errors = 0
    start = time.perf_counter()
    for k, (_, _, found, error) in enumerate(
        aligner.iter_paths([str(folder)], show_progress_bar=True), start=1
    ):
        faces += len(found)
        errors += error is not None
        now = rss_bytes()
        samples.append(now or 0)
        if k in marks:
            at[f"{marks[k]}%"] = now
    elapsed = time.perf_counter() - start
    print(
        json.dumps(
            {
                "images": total,
                "faces": faces,
                "errors": errors,
                "seconds": elapsed,
                "images_per_s": total / elapsed if elapsed > 0 else None,
                "threads": args.threads[0],
                "rss_start": rss_start,
                "rss_models_loaded": rss_loaded,
                "rss_at": at,
                "rss_peak_sampled": max(samples) if samples else None,
                "rss_peak_process": peak_rss_bytes(),
            }
        )
    )
    return 0


def run_speed(setup: Setup, args: argparse.Namespace) -> dict:
    out: dict = {"threads": args.threads, "reps": args.reps, "dlib_upsample": args.dlib_upsample}
    notes = setup.notes
    fan4_path, fan4_gmacs = fan4_model(args.cache, notes)
    out["fan4"] = {"path": _rel(fan4_path) if fan4_path else None, "gmacs": fan4_gmacs}
    source = load_source(VIDEO_SOURCE)
    crop = MovingCrop(source, find_face(make_detector(setup), source))
    frame = crop.frame(0)
    out["stages"] = {str(t): stage_timing(setup, args, t, frame, fan4_path) for t in args.threads}
    out["ratio"] = {}
    for t in args.threads:
        stages = out["stages"][str(t)]
        ours = stages.get("ours", {}).get("landmarks", {}).get("median_ms")
        fan4 = stages.get("FAN-4 architecture", {}).get("landmarks", {}).get("median_ms")
        if ours and fan4:
            out["ratio"][str(t)] = {"ours_ms": ours, "fan4_ms": fan4, "ratio": fan4 / ours}
    if not setup.ours_2d:
        notes.add("video and folder benchmarks skipped: no 2D model of ours")
        return out
    with tempfile.TemporaryDirectory(prefix="fa_bench_") as tmp:
        video = write_video(crop, args.video_frames, Path(tmp))
        out["video"] = {
            "file": f"{args.video_frames} frames {FRAME_SIZE[0]}x{FRAME_SIZE[1]}, "
            f"{VIDEO_SOURCE.name}, moving crop",
            "runs": [],
        }
        runs = [(t, False) for t in args.threads]
        if setup.ours_3d:
            runs.append((max(args.threads), True))
        for t, depth in runs:
            out["video"]["runs"].append(
                run_video_benchmark(setup, video, t, depth, args.video_frames)
            )
        samples = load_annotated(args.data)
        if samples:
            folder = Path(tmp) / "images"
            write_folder(samples, args.folder_images, folder)
            out["folder"] = run_folder_benchmark(setup, folder, args.folder_images)
        else:
            notes.add(f"folder benchmark skipped: no annotated images in {args.data}")
    return out


# --------------------------------------------------------------------------- report


def machine_info() -> dict:
    import onnxruntime

    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "commit": commit or None,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def write_report(
    path: Path,
    info: dict,
    models: list[dict],
    accuracy: dict,
    speed: dict,
    notes: Notes,
    argv: list[str],
) -> None:
    from benchmarks.peers import MEDIAPIPE_MAPPING_SOURCE

    lines = ["# Face alignment benchmark", ""]
    load = info.get("load_average")
    lines += [
        "`" + " ".join(["python benchmarks/run.py", *argv]) + "`",
        "",
        f"- date {info['date']}, commit {info['commit'] or '?'}",
        f"- {info['cores']} cores ({info['processor']}), {info['platform']}, Python "
        f"{info['python']}, onnxruntime {info['onnxruntime']}",
    ]
    if load:
        lines.append(
            f"- load average at start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}: other "
            "work on the machine slows every absolute time; the ratios are measured in the "
            "same run, interleaved, and hold better"
        )
    lines += [
        "",
        "## Models",
        "",
        "| model | file | size MB | GMACs |",
        "| --- | --- | --- | --- |",
    ]
    for m in models:
        size = "-" if m["size_mb"] is None else f"{m['size_mb']:.1f}"
        gmacs = "-" if m["gmacs"] is None else f"{m['gmacs']:.2f}"
        lines.append(f"| {m['name']} | {m['path'] or 'not given'} | {size} | {gmacs} |")
    lines.append("")
    lines.append("GMACs are counted from each ONNX graph (Conv, Gemm, MatMul), one face.")

    if accuracy:
        lines += ["", f"## Accuracy: {accuracy['data']}", ""]
        lines += [
            f"{accuracy['images']} images, one annotated face each; every system runs end to "
            "end from the whole image with its own detector, and the detection matching the "
            "annotated face is scored (a miss when none does). NME io: mean point error over "
            "the outer-eye-corner distance; NMEbox: over sqrt of the landmark box area; FR and "
            f"AUC at {100 * FAILURE_THRESHOLD:.0f} % (io).",
            "",
            "```",
            TABLE_HEADER,
            *[format_row(e["name"][:28], e["metrics"]) for e in accuracy["systems"]],
            "```",
            "",
            "| system | detector | s / image | notes |",
            "| --- | --- | --- | --- |",
        ]
        for e in accuracy["systems"]:
            lines.append(
                f"| {e['name']} | {e['detector']} | {e['seconds_per_image']:.3f} | {e['note']} |"
            )
        if accuracy.get("ced"):
            lines += ["", f"![CED]({accuracy['ced']})"]
        if any(e["name"].startswith("MediaPipe") for e in accuracy["systems"]):
            lines += ["", f"MediaPipe 468 -> 68: {MEDIAPIPE_MAPPING_SOURCE}."]
        z_rows = [e for e in accuracy["systems"] if e["z_error_mean"] is not None]
        if z_rows:
            lines += [
                "",
                "### Depth (z)",
                "",
                "Mean |z error| over sqrt(box area), z zero-mean, against the shape prior "
                "fitted to the annotated 2D points (300-W has no 3D annotation; this is how "
                "our depth labels are made, so it favours our model).",
                "",
                "| system | mean % | median % |",
                "| --- | --- | --- |",
            ]
            for e in z_rows:
                lines.append(
                    f"| {e['name']} | {100 * e['z_error_mean']:.2f} | "
                    f"{100 * e['z_error_median']:.2f} |"
                )
            if "z_baseline_mean" in accuracy:
                lines.append(
                    f"| z = 0 (baseline) | {100 * accuracy['z_baseline_mean']:.2f} | "
                    f"{100 * accuracy['z_baseline_median']:.2f} |"
                )

    if speed:
        threads = speed["threads"]
        lines += ["", "## Speed", "", "### Per stage", ""]
        lines += [
            f"Median ms per call over up to {speed['reps']} interleaved rounds (slow systems "
            "fewer), after warm-up. Detection: one 640x480 frame with one face; landmarks and "
            "depth: one face (crop, network, decode). Threads: onnxruntime intra-op threads "
            "(MediaPipe: TFLite interpreter threads; dlib is single-threaded). MediaPipe's "
            "detection is our BlazeFace (the ours / detect row); dlib's is its HOG detector, "
            f"upsampled {speed.get('dlib_upsample', 1)}x.",
            "",
            "| system | stage | " + " | ".join(f"{t} thread(s) ms" for t in threads) + " |",
            "| --- | --- | " + " | ".join("---" for _ in threads) + " |",
        ]
        names: list[str] = []
        for t in threads:
            for name in speed["stages"].get(str(t), {}):
                if name not in names:
                    names.append(name)
        for name in names:
            stages: list[str] = []
            for t in threads:
                for stage in speed["stages"].get(str(t), {}).get(name, {}):
                    if stage not in stages:
                        stages.append(stage)
            for stage in stages:
                cells = [
                    fmt_ms(
                        speed["stages"]
                        .get(str(t), {})
                        .get(name, {})
                        .get(stage, {})
                        .get("median_ms")
                    )
                    for t in threads
                ]
                lines.append(f"| {name} | {stage} | " + " | ".join(cells) + " |")
        if speed.get("ratio"):
            lines += [
                "",
                "### Landmark step: ours vs the FAN-4 architecture",
                "",
                f"Same runtime, same thread count, same crop and decode code; FAN-4 has random "
                f"weights ({speed['fan4']['gmacs']:.1f} GMACs by training.model.count_macs). "
                f"Target: at least {LANDMARK_SPEEDUP_TARGET:.0f}x.",
                "",
                "| threads | ours ms | FAN-4 ms | FAN-4 / ours | target |",
                "| --- | --- | --- | --- | --- |",
            ]
            for t, r in speed["ratio"].items():
                ok = "met" if r["ratio"] >= LANDMARK_SPEEDUP_TARGET else "NOT met"
                lines.append(
                    f"| {t} | {fmt_ms(r['ours_ms'])} | {fmt_ms(r['fan4_ms'])} | "
                    f"{r['ratio']:.1f}x | {ok} |"
                )
        video = speed.get("video")
        if video:
            lines += [
                "",
                "### End to end, video",
                "",
                f"{video['file']}, through the video path of face_alignment.py (FaceTracker) "
                "with its defaults (`-v FILE`: read frame, the faces followed from their "
                "landmarks and BlazeFace every 10th frame for new ones, JSON record; no "
                "window, no "
                "output video), models "
                f"loaded and warmed up first. Target: {VIDEO_FPS_TARGET:.0f} fps with the 2D "
                "model on 2 threads.",
                "",
                "| model | threads | frames | faces | fps | target |",
                "| --- | --- | --- | --- | --- | --- |",
            ]
            for r in video["runs"]:
                target = ""
                if not r["depth"] and r["threads"] == 2 and r["fps"] is not None:
                    target = "met" if r["fps"] >= VIDEO_FPS_TARGET else "NOT met"
                lines.append(
                    f"| {'2D + depth' if r['depth'] else '2D'} | {r['threads']} | "
                    f"{r['frames']} | {r['faces']} | {r['fps']:.1f} | {target} |"
                )
        folder = speed.get("folder")
        if folder:
            at = folder.get("rss_at", {})
            lines += [
                "",
                "### Folder of images",
                "",
                f"{folder['images']} JPEGs made from the annotated images (copies, mirrors, "
                "0.6x, rotated 10 degrees), run by FaceAligner.iter_paths (the CLI's folder "
                f"path, 2D model, {folder['threads']} threads) in a fresh process.",
                "",
                "| images/s | faces | errors | RSS after load MiB | at 10 % | at 50 % | at 100 % "
                "| peak sampled | peak of the process |",
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
                f"| {folder['images_per_s']:.1f} | {folder['faces']} | {folder['errors']} | "
                f"{mib(folder['rss_models_loaded'])} | {mib(at.get('10%'))} | "
                f"{mib(at.get('50%'))} | {mib(at.get('100%'))} | "
                f"{mib(folder['rss_peak_sampled'])} | {mib(folder['rss_peak_process'])} |",
            ]
    if notes.lines:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes.lines]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="annotated images (NAME.jpg + NAME.pts)"
    )
    parser.add_argument("--model-2d", default=None, help="our 2D model (default: shipped)")
    parser.add_argument("--model-depth", default=None, help="our depth model (default: shipped)")
    parser.add_argument("--detector", default=None, help="BlazeFace ONNX (default: shipped)")
    parser.add_argument("--fan2d", default=None, metavar="PATH", help="original 2DFAN-4.onnx")
    parser.add_argument(
        "--fan-depth",
        default=None,
        metavar="PATH",
        help="original FAN depth ONNX (depth_estimation.onnx)",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="folder for report.md, ced.png, report.json"
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=DEFAULT_CACHE,
        help="where the FAN-4 ONNX is built (outside git)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 5 images, 3 rounds, 30 frames, 20 folder images",
    )
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--limit", type=int, default=None, help="accuracy: first N images")
    parser.add_argument("--reps", type=int, default=None, help="timing rounds (default 30)")
    parser.add_argument(
        "--slow-reps", type=int, default=None, help="rounds for FAN-size models (default 10)"
    )
    parser.add_argument("--threads", default="1,2", help="thread counts to time, e.g. 1,2")
    parser.add_argument("--video-frames", type=int, default=None, help="default 300")
    parser.add_argument("--folder-images", type=int, default=None, help="default 1000")
    parser.add_argument(
        "--dlib-upsample",
        type=int,
        default=1,
        help="dlib HOG detector upsampling (dlib's example uses 1)",
    )
    parser.add_argument("--folder-worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.threads = [int(t) for t in str(args.threads).split(",") if t.strip()]
    quick = args.quick
    defaults = {
        "limit": 5 if quick else None,
        "reps": 3 if quick else 30,
        "slow_reps": 2 if quick else 10,
        "video_frames": 30 if quick else 300,
        "folder_images": 20 if quick else 1000,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.folder_worker is not None:
        return folder_worker(args.folder_worker, args)
    started = time.perf_counter()
    info = machine_info()
    setup = resolve_setup(args)
    args.out.mkdir(parents=True, exist_ok=True)
    accuracy = {} if args.skip_accuracy else run_accuracy(setup, args)
    speed = {} if args.skip_speed else run_speed(setup, args)
    models = [
        model_row("ours 2D", setup.model_2d),
        model_row("ours depth", setup.model_depth),
        model_row("BlazeFace detector", setup.detector or _default_detector()),
        model_row("FAN original 2D", setup.fan2d),
        model_row("FAN original depth", setup.fan_depth),
    ]
    fan4 = speed.get("fan4", {}).get("path") if speed else None
    if fan4:
        models.append(model_row("FAN-4 architecture (random weights)", REPO / fan4))
    models = [m for m in models if m["path"] is not None]
    report = args.out / "report.md"
    write_report(report, info, models, accuracy, speed, setup.notes, argv)
    raw = {
        "machine": info,
        "argv": argv,
        "models": models,
        "accuracy": {k: v for k, v in accuracy.items()},
        "speed": speed,
        "notes": setup.notes.lines,
        "seconds": time.perf_counter() - started,
    }
    (args.out / "report.json").write_text(json.dumps(raw, indent=1, default=_json_default))
    print(f"report: {report} ({raw['seconds']:.0f} s)")
    return 0


def _default_detector() -> Path:
    from util.detect import default_detector_path

    return default_detector_path()


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


if __name__ == "__main__":
    sys.exit(main())
