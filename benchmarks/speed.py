"""Speed: per-stage medians (detection on a 640x480 frame, 2D landmarks, depth) at each
onnxruntime thread count, every system in the same interleaved rounds (a busy machine
slows all alike, so the ratios hold where absolute times do not); each of our models at
fp32 and int8 beside FAN-4 at fp32 and int8; end-to-end frames per second on a 640x480
video through util.tracker.FaceTracker (the code path of `face_alignment.py -v`);
throughput and memory on a folder of N images in a separate process (so the memory is
the tool's alone).
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import (
    FOLDER_THREADS,
    FRAME_SIZE,
    REPO,
    VIDEO_SOURCE,
    VIDEO_THREADS,
    Setup,
    fan4_int8_model,
    fan4_model,
    make_aligner,
    make_detector,
    median_ms,
    peak_rss_bytes,
    rel,
    rss_bytes,
)
from training.evaluate import load_annotated
from util.aligner import FaceAligner
from util.face import StageTimes

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
    rotated variants, so the run is not the same few files over and over. The variants
    take turns image by image (not in blocks of the whole set), so that every stretch of
    the run holds the same mix of sizes and passes: in blocks, the memory of the run
    stepped up by 30 MiB where the blocks changed and read as growth over 1000 images,
    while over 2000 it was flat from the second block on."""
    import cv2
    from tqdm import tqdm

    from util.io import read_image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in tqdm(range(count), desc="writing test folder", unit="img"):
        sample = samples[(k // 4) % len(samples)]
        variant = k % 4
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


# --------------------------------------------------------------------------- timing


@dataclass
class Timed:
    """A timed system: its stages' samples, and what to call each round."""

    name: str
    stage_source: StageTimes  # or any object with a .seconds dict of lists
    call: Callable[[], object]  # one run
    every: int = 1  # run every N rounds (slow systems fewer times)
    stages: tuple[str, ...] = ("detect", "landmarks", "depth")  # the ones it really runs


def stage_timing(
    setup: Setup,
    args: argparse.Namespace,
    threads: int,
    frame: np.ndarray,
    fan4: dict[str, Path | None],
) -> dict:
    """Median ms per stage of every system at one thread count, interleaved rounds.
    ``fan4``: {precision: FAN-4 file or None}."""
    from benchmarks.peers import DlibPeer, MediaPipePeer, PeerUnavailable

    notes = setup.notes
    timed: list[Timed] = []
    box = None
    ours_aligners = []
    for precision, model_2d, model_depth in setup.ours():
        ours = make_aligner(setup, model_2d, model_depth, threads)
        ours_aligners.append((precision, ours))
        faces = ours.align(frame)
        if faces and box is None:
            box = faces[0].bbox
        timed.append(Timed(f"ours {precision}", ours.times, lambda a=ours: a.align(frame)))
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

    for precision, aligner in ours_aligners:
        step = StageTimes()  # apart from the aligner's own, which align() fills
        name = step_name(f"ours {precision}")
        timed.append(Timed(name, step, landmark_step(aligner, frame, box, step)))
    for precision, path in fan4.items():
        if path is not None:
            net = make_aligner(setup, path, None, threads)
            name = step_name(fan4_name(precision))
            timed.append(Timed(name, net.times, landmark_step(net, frame, box, net.times), slow))
    if getattr(args, "targets", False):  # the targets only: no peers
        return _time_rounds(timed, args, threads)
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

    return _time_rounds(timed, args, threads)


def _time_rounds(timed: list[Timed], args: argparse.Namespace, threads: int) -> dict:
    """Warm every system up, then time them in interleaved rounds: median ms per stage."""
    from tqdm import tqdm

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
    the detector every 10th frame for new ones, JSON record, two frames in flight on one
    onnxruntime thread each (util.cli.video_threads); models loaded beforehand."""
    import cv2

    from util.cli import video_threads
    from util.tracker import FaceTracker
    from util.video import READ_AHEAD_FRAMES, read_frames

    precision, model_2d, model_depth = setup.shipped
    # As `-v FILE --threads N` splits them: two frames in flight on one thread each.
    session_threads, workers = video_threads(threads, str(video), "onnxruntime")
    aligner = make_aligner(
        setup,
        model_2d if setup.model_2d_given else None,  # else what -v loads
        model_depth if with_depth else None,
        session_threads,
        running_mode="video",
    )
    # Warm-up on the path that is timed (first runs allocate, the more so with frames
    # side by side): 30 frames through a tracker of their own.
    capture = cv2.VideoCapture(str(video))
    warm = read_frames(capture, 0)
    stream = FaceTracker(aligner).process_frames(warm, workers=workers)
    for _ in itertools.islice(stream, 30):
        pass
    stream.close()
    warm.close()
    capture.release()
    aligner.times.seconds.clear()

    tracker = FaceTracker(aligner)  # the command line's defaults: --redetect 10, no smoothing
    capture = cv2.VideoCapture(str(video))
    done = 0
    start, cpu = time.perf_counter(), time.process_time()
    frames = read_frames(capture, READ_AHEAD_FRAMES)  # as the CLI reads them
    results = tracker.process_frames(frames, workers=workers)
    try:
        for _, faces in results:
            record = [face.to_json() for face in faces]
            json.dumps({"frame": done, "faces": record})
            done += 1
    finally:
        results.close()
        frames.close()
        capture.release()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {
        "threads": threads,
        "frames_in_flight": workers,
        "depth": with_depth,
        "precision": precision,
        "model": aligner.landmark_model.model.path.name,
        "frames": done,
        "faces": len(aligner.times.seconds.get("landmarks", [])),
        "seconds": elapsed,
        "fps": done / elapsed if elapsed > 0 else None,
        # CPU time of every thread of the process: on a busy machine the wall clock
        # says how much CPU we got, this says how much the work needs.
        "cpu_ms_per_frame": 1000.0 * cpu / done if done else None,
        "status": 0 if done else 1,
    }


def run_video_in_child(
    setup: Setup, video: Path, threads: int, with_depth: bool, frames: int, args
) -> dict:
    """run_video_benchmark in a fresh process (video_worker below), as `face_alignment.py
    -v FILE` runs: in the parent, after the stage timing had loaded FAN-4 and the other
    sessions, the same loop took 19.5-20.1 against 17.4-18.2 ms of CPU per frame."""
    cmd = ["--video-worker", str(video), "--threads", str(threads)]
    cmd += ["--video-frames", str(frames)]
    if setup.model_2d_given:
        cmd += ["--model-2d", str(args.model_2d)]
    if with_depth:
        cmd += ["--video-depth"] + (
            ["--model-depth", str(args.model_depth)] if args.model_depth else []
        )
    result, status = run_worker(setup, cmd, "video")
    if result is None:
        return {
            "threads": threads,
            "depth": with_depth,
            "frames": 0,
            "faces": 0,
            "fps": None,
            "status": status,
        }
    return result


def run_worker(setup: Setup, worker_args: list[str], name: str) -> tuple[dict | None, int]:
    """`python -m benchmarks.run WORKER_ARGS` (with the run's detector) in a fresh
    process: (its last line of output, a JSON object, or None and a note when it fails;
    its exit code)."""
    cmd = [sys.executable, "-m", "benchmarks.run", *worker_args]
    if setup.detector:
        cmd += ["--detector", str(setup.detector)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False, cwd=REPO)
    if proc.returncode != 0:
        setup.notes.add(f"{name} benchmark failed (exit {proc.returncode})")
        return None, proc.returncode
    return json.loads(proc.stdout.strip().splitlines()[-1]), 0


def video_worker(video: Path, args: argparse.Namespace) -> int:
    """Child process: one run_video_benchmark; print its JSON line."""
    from benchmarks.common import resolve_setup
    from util.runtime import limit_heap_growth

    limit_heap_growth()  # as the command line's process
    setup = resolve_setup(args)
    result = run_video_benchmark(setup, video, args.threads[0], args.video_depth, args.video_frames)
    print(json.dumps(result, default=str))
    return 0 if result.get("status") == 0 else 1


def run_folder_benchmark(
    setup: Setup,
    folder: Path,
    count: int,
    prefetch: int | None = None,
    workers: int | None = None,
    flip: str = "auto",
) -> dict:
    """Throughput and memory on the folder, measured in a fresh process (worker below),
    with the CLI's ``--flip`` ``flip``."""
    cmd = ["--folder-worker", str(folder), "--threads", str(FOLDER_THREADS)]
    cmd += ["--model-2d", str(setup.shipped[1])]
    if prefetch is not None:
        cmd += ["--prefetch", str(prefetch)]
    if workers is not None:
        cmd += ["--folder-workers", str(workers)]
    cmd += ["--folder-flip", flip]
    result, _ = run_worker(setup, cmd, "folder")
    if result is None:
        return {}
    result["images_requested"] = count
    result["precision"] = setup.shipped[0]
    return result


def folder_worker(folder: Path, args: argparse.Namespace) -> int:
    """Child process: run the aligner over every image of ``folder`` as the CLI does
    (FaceAligner.iter_paths, the threads split by util.cli.folder_threads), sampling RSS
    after each image; print one JSON line."""
    from util.aligner import PREFETCH_IMAGES, FaceAligner
    from util.cli import folder_threads
    from util.io import expand_inputs
    from util.run_options import flip_setting
    from util.runtime import limit_heap_growth

    limit_heap_growth()  # as the command line's process
    rss_start = rss_bytes()
    prefetch = PREFETCH_IMAGES if args.prefetch is None else args.prefetch
    paths = expand_inputs([str(folder)])
    session_threads, workers = folder_threads(args.threads[0], paths, "onnxruntime")
    if args.folder_workers:  # to compare with another split: N workers, N/workers threads
        workers = args.folder_workers
        session_threads = max(1, args.threads[0] // workers)
    aligner = FaceAligner(
        model_2d=args.model_2d,
        detector_model=args.detector,
        runtime="onnxruntime",
        threads=session_threads,
        flip=flip_setting(args.folder_flip),
    )
    rss_loaded = rss_bytes()
    total = len(paths)
    marks = {max(1, round(total * p / 100)): p for p in (10, 50, 100)}
    samples, at = [], {}
    faces = errors = 0
    start, cpu = time.perf_counter(), time.process_time()
    for k, (_, _, found, error) in enumerate(
        aligner.iter_paths(
            [str(folder)], show_progress_bar=True, prefetch=prefetch, workers=workers
        ),
        start=1,
    ):
        faces += len(found)
        errors += error is not None
        now = rss_bytes()
        samples.append(now or 0)
        if k in marks:
            at[f"{marks[k]}%"] = now
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(
        json.dumps(
            {
                "images": total,
                "faces": faces,
                "errors": errors,
                "seconds": elapsed,
                "images_per_s": total / elapsed if elapsed > 0 else None,
                "cpu_ms_per_image": 1000.0 * cpu / total if total else None,
                "threads": args.threads[0],
                "session_threads": session_threads,
                "workers": workers,
                "prefetch": prefetch,
                "flip": aligner.flip_mode,
                **rss_growth(samples),
                "rss_start": rss_start,
                "rss_models_loaded": rss_loaded,
                "rss_at": at,
                "rss_peak_sampled": max(samples) if samples else None,
                "rss_peak_process": peak_rss_bytes(),
            }
        )
    )
    return 0


def rss_growth(samples: list[int]) -> dict:
    """Median RSS of the second and the last quarter of a run's per-image samples, and
    the growth between them (MiB). Medians: single samples swing by +-15 MiB with the
    images in flight. The second quarter: over the first the process warms up (1000
    images, 2 workers: 86 MiB loaded, 160 after 50 images, about 190 from 150 on)."""
    if len(samples) < 8:
        return {}
    quarter = len(samples) // 4
    second = float(np.median(samples[quarter : 2 * quarter]))
    last = float(np.median(samples[-quarter:]))
    return {
        "rss_second_quarter": second,
        "rss_last_quarter": last,
        "rss_growth_mib": (last - second) / 2**20,
    }


def landmark_step(
    aligner: FaceAligner, frame: np.ndarray, box: np.ndarray, times: StageTimes
) -> Callable[[], None]:
    """One face's landmark step alone, the same for every model, into ``times``
    ("landmarks"): crop at the box, one model call, decode. align() would add the
    upside-down probe and, for FAN-4's random landmarks, a second crop at their roll:
    more model calls for FAN-4 than for ours, and a ratio that flatters ours."""
    model = aligner.landmark_model

    def step() -> None:
        start = time.perf_counter()
        crop = model.crop(frame, box)
        views, _ = model.run_crops([crop])[0]
        model.landmarks(views, crop)
        times.add("landmarks", time.perf_counter() - start)

    return step


def step_name(system: str) -> str:
    """The row of ``system``'s landmark step alone in the stage table."""
    return f"{system}, landmark step"


def fan4_name(precision: str) -> str:
    """The row name of FAN-4 at ``precision`` in the stage table."""
    return "FAN-4 architecture" + ("" if precision == "fp32" else f" {precision}")


def landmark_ratios(stages: dict, shipped: str) -> dict:
    """Landmark-step medians of one thread count and their ratios, all from the same
    interleaved rounds: FAN-4 fp32 against what the tool ships (the target), each model
    fp32 against int8, and FAN-4 int8 against ours int8 (the fair int8 comparison).
    Empty when ours at ``shipped`` or FAN-4 fp32 was not timed."""

    def ms(name: str) -> float | None:
        return stages.get(name, {}).get("landmarks", {}).get("median_ms")

    ours = {p: ms(step_name(f"ours {p}")) for p in ("fp32", "int8")}
    fan4 = {p: ms(step_name(fan4_name(p))) for p in ("fp32", "int8")}
    if not (ours[shipped] and fan4["fp32"]):
        return {}
    out = {
        "shipped": shipped,
        "ours_ms": ours[shipped],
        "fan4_ms": fan4["fp32"],
        "ratio": fan4["fp32"] / ours[shipped],
        "ours_fp32_ms": ours["fp32"],
        "ours_int8_ms": ours["int8"],
        "fan4_int8_ms": fan4["int8"],
    }

    def ratio(key: str, slow: float | None, fast: float | None) -> None:
        if slow and fast:
            out[key] = slow / fast

    ratio("ratio_fp32", fan4["fp32"], ours["fp32"])
    ratio("ratio_int8", fan4["int8"], ours["int8"])
    ratio("ours_int8_speedup", ours["fp32"], ours["int8"])
    ratio("fan4_int8_speedup", fan4["fp32"], fan4["int8"])
    return out


def run_speed(setup: Setup, args: argparse.Namespace) -> dict:
    """Stage timing at each thread count, then (with a 2D model of ours) the video and
    folder runs; the raw numbers of the report's speed section."""
    out: dict = {"threads": args.threads, "reps": args.reps, "dlib_upsample": args.dlib_upsample}
    notes = setup.notes
    fan4_path, fan4_gmacs = fan4_model(args.cache, notes)
    fan4 = {"fp32": fan4_path, "int8": fan4_int8_model(fan4_path, notes)}
    out["fan4"] = {
        "path": rel(fan4_path) if fan4_path else None,
        "int8_path": rel(fan4["int8"]) if fan4["int8"] else None,
        "gmacs": fan4_gmacs,
    }
    source = load_source(VIDEO_SOURCE)
    crop = MovingCrop(source, find_face(make_detector(setup), source))
    frame = crop.frame(0)
    # --targets: exactly what issue 11 measures: the landmark step on 1 thread, video
    # and folder on 2 threads; no peers, no depth, no other thread counts.
    targets = getattr(args, "targets", False)
    stage_threads = [1] if targets else args.threads
    out["threads"] = stage_threads
    out["stages"] = {str(t): stage_timing(setup, args, t, frame, fan4) for t in stage_threads}
    shipped = setup.shipped[0] if setup.ours_2d else "fp32"
    ratios = {str(t): landmark_ratios(out["stages"][str(t)], shipped) for t in stage_threads}
    out["ratio"] = {t: r for t, r in ratios.items() if r}
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
        if targets:
            runs = [(VIDEO_THREADS, False)]
        for t, depth in runs:
            out["video"]["runs"].append(
                run_video_in_child(setup, video, t, depth, args.video_frames, args)
            )
        samples = load_annotated(args.data)
        if samples:
            folder = Path(tmp) / "images"
            write_folder(samples, args.folder_images, folder)
            out["folder"] = run_folder_benchmark(
                setup, folder, args.folder_images, args.prefetch, args.folder_workers,
                args.folder_flip,
            )
        else:
            notes.add(f"folder benchmark skipped: no annotated images in {args.data}")
    return out
