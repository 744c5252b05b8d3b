"""Face alignment: the 68 iBUG landmarks, in 2D and 3D, of every face.

    python3 face_alignment.py                         # the bundled sample -> output.png
    python3 face_alignment.py -i photo.jpg -s out.png --active-3d
    python3 face_alignment.py -i folder/ -s results/ --json results.jsonl
    python3 face_alignment.py -v 0                    # webcam
    python3 face_alignment.py -v in.mp4 -s out.mp4 --smooth

A thin command line over util.aligner.FaceAligner, with the ailia sample's flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import TextIO

import numpy as np

from util.aligner import Face, FaceAligner
from util.io import InputError, expand_inputs, read_image, usual_mode, write_bytes_atomic
from util.landmarks import write_pts
from util.runtime import ModelError

REPO = Path(__file__).resolve().parent
SAMPLE_IMAGE = REPO / "samples" / "astronaut.png"
IMAGE_WRITE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}

__all__ = ["FaceAligner", "Face", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="face_alignment.py",
        description="68-point face landmarks (FAN) in 2D and 3D, with BlazeFace detection.",
    )
    parser.add_argument(
        "-i",
        "--input",
        nargs="+",
        default=None,
        metavar="PATH",
        help="image files, folders (recursed, sorted) or globs "
        "(default: the bundled sample samples/astronaut.png)",
    )
    parser.add_argument(
        "-s",
        "--savepath",
        default=None,
        metavar="PATH",
        help="output image (one input), folder (several inputs, or a name ending in / "
        "or without a suffix), or video file (with -v); default output.png unless --json "
        "is given",
    )
    parser.add_argument(
        "-v",
        "--video",
        default=None,
        metavar="SOURCE",
        help="webcam index (e.g. 0) or a video file",
    )
    parser.add_argument(
        "-3",
        "--active-3d",
        "--active_3d",
        dest="active_3d",
        action="store_true",
        help="also predict depth: 3D landmarks",
    )
    parser.add_argument(
        "--json",
        default=None,
        metavar="FILE",
        help="write JSON Lines, one object per image or frame ('-' = stdout)",
    )
    parser.add_argument(
        "--pts",
        action="store_true",
        help="also write NAME.pts (iBUG format) per face beside the output",
    )
    parser.add_argument(
        "--heatmaps",
        action="store_true",
        help="also save each face's 68 heatmaps as one grid image",
    )
    parser.add_argument(
        "--smooth", action="store_true", help="video: One Euro temporal filter against jitter"
    )
    parser.add_argument(
        "--redetect",
        type=int,
        default=10,
        metavar="N",
        help="video: run the detector every N frames and follow faces from their landmarks "
        "in between (1 = detect on every frame; a lost face is detected again at once)",
    )
    parser.add_argument(
        "--flip",
        choices=["auto", "on", "off"],
        default="auto",
        help="average each face with its mirror image: about 5%% lower error, twice the "
        "landmark cost (auto: on for images, off for video)",
    )
    parser.add_argument("--no-boxes", action="store_true", help="do not draw face boxes")
    parser.add_argument(
        "--model-2d",
        default=None,
        metavar="ONNX",
        help="FAN-format 2D model (e.g. the original 2DFAN-4.onnx)",
    )
    parser.add_argument(
        "--model-depth",
        default=None,
        metavar="ONNX",
        help="depth model (e.g. the original depth_estimation.onnx)",
    )
    parser.add_argument(
        "--detector",
        default=None,
        metavar="ONNX",
        help="BlazeFace model (default models/blazeface_back.onnx)",
    )
    parser.add_argument(
        "--min-score",
        type=float,
        default=None,
        help="detection score threshold (default from the detector spec)",
    )
    parser.add_argument(
        "--runtime",
        choices=["auto", "onnxruntime", "ailia"],
        default="auto",
        help="auto: ailia when installed and licensed, else onnxruntime",
    )
    parser.add_argument("--onnx", action="store_true", help="same as --runtime onnxruntime")
    parser.add_argument(
        "-e", "--env_id", type=int, default=-1, help="ailia environment id (ailia runtime only)"
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="onnxruntime threads (0 = all cores)"
    )
    parser.add_argument(
        "-b",
        "--benchmark",
        action="store_true",
        help="time each stage over --benchmark_count runs (median ms)",
    )
    parser.add_argument("-bc", "--benchmark_count", type=int, default=5)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress or info lines")
    scale = parser.add_argument_group(
        "scale-out (--engine ray; needs pip install -r requirements-ray.txt)"
    )
    scale.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local: this process; ray: a Ray Data job, on this machine or a cluster",
    )
    scale.add_argument(
        "--address",
        default=None,
        metavar="ADDRESS",
        help="join a Ray cluster (auto, or ray://HOST:PORT); default: start one on this machine",
    )
    scale.add_argument(
        "--workers", type=int, default=None, metavar="N", help="actors (default: one per CPU)"
    )
    scale.add_argument(
        "--parquet",
        default=None,
        metavar="DIR",
        help="write a Parquet dataset, one row per face, instead of --json",
    )
    scale.add_argument(
        "--resume",
        action="store_true",
        help="continue the --json file or --parquet folder of a stopped run",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.onnx:
        args.runtime = "onnxruntime"
    log = _Log(args.quiet)
    if args.engine == "ray":
        from util.ray_engine import run_ray  # imports Ray only when it runs

        return run_ray(args, log)
    if args.address or args.workers or args.parquet or args.resume:
        log.error("--address, --workers, --parquet and --resume need --engine ray")
        return 2
    clash = _json_clash(args)
    if clash is not None:
        log.error(clash)
        return 2
    try:
        aligner = FaceAligner(
            model_2d=args.model_2d,
            model_depth=args.model_depth,
            detector_model=args.detector,
            active_3d=args.active_3d,
            runtime=args.runtime,
            env_id=args.env_id,
            threads=args.threads,
            min_score=args.min_score,
            flip=args.flip == "on" or (args.flip == "auto" and args.video is None),
        )
    except (ModelError, InputError) as exc:
        log.error(str(exc))
        return 2
    log.info(
        f"runtime: {aligner.runtime}; 2D model: "
        f"{_name(aligner.landmark_model.model.path)}"
        + (f"; depth model: {_name(aligner.depth_model.model.path)}" if aligner.depth_model else "")
    )
    try:
        with _JsonLines(args.json) as sink:
            if args.video is not None:
                return run_video(aligner, args, sink, log)
            if args.benchmark:
                return run_benchmark(aligner, args, log)
            return run_images(aligner, args, sink, log)
    except KeyboardInterrupt:
        log.error("interrupted; outputs written so far are kept")
        return 130
    except OSError as exc:
        log.error(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "))
        return 2
    except InputError as exc:
        log.error(str(exc))
        return 2


def _json_clash(args: argparse.Namespace) -> str | None:
    """Why the --json file may not be written, if it names an input or the -s output."""
    if args.json in (None, "-"):
        return None
    target = Path(args.json).resolve()
    if args.video is not None:
        inputs = [] if args.video.isdigit() else [Path(args.video)]
    else:
        inputs = expand_inputs(args.input or [str(SAMPLE_IMAGE)])
    if any(p.exists() and p.resolve() == target for p in inputs):
        return f"{args.json}: refusing to overwrite an input file with --json"
    if args.savepath is not None and Path(args.savepath).resolve() == target:
        return f"{args.json}: --json and -s name the same file"
    return None


# -- images ---------------------------------------------------------------------------


def run_images(aligner: FaceAligner, args: argparse.Namespace, sink: _JsonLines, log: _Log) -> int:
    inputs = args.input or [str(SAMPLE_IMAGE)]
    paths = expand_inputs(inputs)
    if not paths:
        log.error(f"{' '.join(inputs)}: no images found")
        return 2
    save = _save_target(args, paths)
    as_folder = args.savepath is not None and args.savepath.endswith(("/", os.sep))
    failures = 0
    taken: set[Path] = set()
    protected = _protected_files(paths)
    for path, image, faces, error in aligner.iter_paths(
        inputs, show_progress_bar=not args.quiet, keep_heatmaps=args.heatmaps
    ):
        if error is None and not faces:
            log.warn(f"{path}: no face found")
        if error is None and save is not None:
            out = None
            try:
                out = _output_path(save, path, len(paths) > 1 or as_folder, taken, set(paths))
                _write_outputs(out, image, faces, args, protected)
            except InputError as exc:
                error = str(exc)
            except OSError as exc:
                error = f"{out or save}: cannot write ({exc.strerror or exc})"
        if error is not None:
            failures += 1
            log.error(error)
        sink.write(_record(path, faces, error, None if image is None else image.shape))
    if save is not None and failures < len(paths):
        log.info(f"saved to {save}")
    return 0 if failures == 0 else 1


def _save_target(args: argparse.Namespace, paths: list[Path]) -> Path | None:
    """Where drawn images go: None (nothing drawn), a file, or a folder."""
    if args.savepath is None:
        return None if args.json is not None else Path("output.png")
    return Path(args.savepath)


def _output_path(
    save: Path, source: Path, several: bool, taken: set[Path], inputs: set[Path]
) -> Path:
    """The output file for one input; never an input file, never reused in one run.

    ``save`` is a folder when there are several inputs, when it is an existing folder,
    or when it has no suffix (``-s results``); otherwise it is the image file itself.
    """
    if several or save.is_dir() or not save.suffix:
        _check_folder(save)
        out = save / f"{source.stem}.png"
        n = 1
        while out in taken:
            n += 1
            out = save / f"{source.stem}_{n}.png"
    else:
        out = save
        if out.suffix.lower() not in IMAGE_WRITE_SUFFIXES:
            raise InputError(f"{out}: unsupported output image format (use .png or .jpg)")
    if any(out.resolve() == p.resolve() for p in inputs if p.exists()):
        raise InputError(f"{out}: refusing to overwrite an input file")
    taken.add(out)
    return out


def _protected_files(paths: list[Path]) -> set[Path]:
    """Files no output may replace: the inputs, and the annotations (NAME.pts) beside them,
    which --pts would otherwise overwrite when -s is the input folder."""
    protected = set()
    for path in paths:
        for candidate in (path, path.with_suffix(".pts")):
            if candidate.exists():
                protected.add(candidate.resolve())
    return protected


def _write_outputs(
    out: Path,
    image: np.ndarray,
    faces: list[Face],
    args: argparse.Namespace,
    protected: set[Path] | frozenset[Path] = frozenset(),
) -> None:
    from util.draw import draw_faces, heatmap_grid, with_side_view

    extra: list[tuple[Path, str, Face]] = []
    for k, face in enumerate(faces):
        suffix = "" if len(faces) == 1 else f"_{k}"
        if args.pts:
            extra.append((out.with_name(f"{out.stem}{suffix}.pts"), "pts", face))
        if args.heatmaps and face.heatmaps is not None:
            extra.append((out.with_name(f"{out.stem}{suffix}_heatmaps.png"), "heatmaps", face))
    for path in [out, *(p for p, _, _ in extra)]:
        if path.resolve() in protected:
            raise InputError(f"{path}: refusing to overwrite an input file")
    drawn = draw_faces(image, faces, draw_boxes=not args.no_boxes)
    if args.active_3d:
        drawn = with_side_view(drawn, faces)
    write_image_atomic(out, drawn)
    for path, kind, face in extra:
        if kind == "pts":
            _check_folder(path.parent)
            write_pts(path, face.landmarks)
        else:
            write_image_atomic(path, heatmap_grid(face.heatmaps))


def write_image_atomic(path: Path, image_rgb: np.ndarray) -> None:
    """Encode, write to a temporary file in the same folder, then rename."""
    import cv2

    bgr = np.ascontiguousarray(image_rgb[..., ::-1])
    ok, data = cv2.imencode(path.suffix.lower() or ".png", bgr)
    if not ok:
        raise InputError(f"{path}: cannot encode image in this format")
    _check_folder(path.parent)
    write_bytes_atomic(path, data.tobytes())


def _check_folder(folder: Path) -> None:
    """Make ``folder`` (and its parents) or say in one line why it cannot be."""
    for parent in [folder, *folder.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{folder}: cannot write there ({parent} is a file)")
            break
    folder.mkdir(parents=True, exist_ok=True)


def _record(
    path: Path | str,
    faces: list[Face],
    error: str | None,
    image_shape: tuple[int, int] | None,
    frame: int | None = None,
) -> dict:
    record: dict = {"image": str(path)}
    if frame is not None:
        record["frame"] = frame
    record["width"] = image_shape[1] if image_shape else None
    record["height"] = image_shape[0] if image_shape else None
    record["faces"] = [face.to_json() for face in faces]
    record["error"] = error
    return record


# -- video ----------------------------------------------------------------------------


def run_video(aligner: FaceAligner, args: argparse.Namespace, sink: _JsonLines, log: _Log) -> int:
    """Webcam or video file: draw each frame, write the video when -s names one, show a
    window when a display exists (q or Esc quits)."""
    from tqdm import tqdm

    from util.draw import draw_faces, with_side_view
    from util.smooth import FaceSmoother
    from util.video import (
        VideoSink,
        display_available,
        frame_count,
        frame_rate,
        open_capture,
        read_frames,
    )

    capture = open_capture(args.video)
    fps = frame_rate(capture)
    writer = None
    if args.savepath is not None:
        out = Path(args.savepath)
        if not args.video.isdigit() and out.resolve() == Path(args.video).resolve():
            raise InputError(f"{out}: refusing to overwrite the input video")
        writer = VideoSink(out, fps)
    show = display_available()
    if not show:
        log.info(
            "no display: not showing a window"
            + ("" if writer else " (use -s out.mp4 to write the annotated video)")
        )
    smoother = FaceSmoother(rate=fps) if args.smooth else None
    frames = 0
    previous: list[Face] = []
    try:
        for frames, frame in enumerate(
            tqdm(
                read_frames(capture), total=frame_count(capture), unit="frame", disable=args.quiet
            ),
            start=1,
        ):
            followed = None
            if (frames - 1) % max(1, args.redetect) != 0:
                followed = aligner.follow(frame, previous)
            faces = aligner.align(frame) if followed is None else followed
            previous = [dataclasses.replace(face) for face in faces]  # unsmoothed
            if smoother is not None:
                faces = smoother(faces)
            sink.write(_record(args.video, faces, None, frame.shape, frame=frames - 1))
            if writer is None and not show:
                continue
            drawn = draw_faces(frame, faces, draw_boxes=not args.no_boxes)
            if args.active_3d:
                drawn = with_side_view(drawn, faces)
            if writer is not None:
                writer.write(drawn)
            if show and _show_frame(drawn):
                break
    except BaseException:
        if writer is not None:
            writer.discard() if frames == 0 else writer.close()
        raise
    finally:
        capture.release()
    if writer is not None:
        writer.close()
        log.info(f"saved {writer.frames} frames to {writer.path}")
    if frames == 0:
        log.error(f"{args.video}: no frames could be read (not a video, or an unsupported codec)")
        return 1
    return 0


def _show_frame(frame_rgb: np.ndarray) -> bool:
    """Show a frame; True when the user asked to quit (q or Esc)."""
    import cv2

    cv2.imshow("face_alignment (q or Esc quits)", np.ascontiguousarray(frame_rgb[..., ::-1]))
    return (cv2.waitKey(1) & 0xFF) in (ord("q"), 27)


# -- benchmark ------------------------------------------------------------------------


def run_benchmark(aligner: FaceAligner, args: argparse.Namespace, log: _Log) -> int:
    path = expand_inputs(args.input or [str(SAMPLE_IMAGE)])[0]
    image = read_image(path)
    aligner.align(image)  # warm-up: first runs allocate
    aligner.times.seconds.clear()
    for _ in range(max(1, args.benchmark_count)):
        faces = aligner.align(image)
    print(
        f"{path}: {image.shape[1]}x{image.shape[0]}, {len(faces)} face(s), "
        f"{args.benchmark_count} runs, runtime {aligner.runtime}, "
        f"flip {'on' if aligner.flip else 'off'}"
    )
    for stage in ("detect", "landmarks", "depth"):
        times = aligner.times.seconds.get(stage)
        if times:
            print(
                f"  {stage:<10} median {1000 * statistics.median(times):7.2f} ms"
                f"{' per face' if stage != 'detect' else ''}"
            )
    return 0


# -- small helpers --------------------------------------------------------------------


class _Log:
    """One-line messages on stderr, printed above a running progress bar."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    @staticmethod
    def _write(line: str) -> None:
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)

    def info(self, message: str) -> None:
        if not self.quiet:
            self._write(message)

    def warn(self, message: str) -> None:
        self._write(f"warning: {message}")

    def error(self, message: str) -> None:
        self._write(f"error: {message}")


class _JsonLines:
    """JSON Lines written as it goes, into a temporary file renamed on close."""

    def __init__(self, target: str | None) -> None:
        self.target = target
        self.handle: TextIO | None = None
        self.tmp: Path | None = None
        self.records = 0

    def __enter__(self) -> _JsonLines:
        if self.target == "-":
            self.handle = sys.stdout
        elif self.target is not None:
            path = Path(self.target)
            if path.is_dir():
                raise InputError(f"{path}: --json needs a file name, not a folder")
            if not path.parent.is_dir():
                problem = "is not a folder" if path.parent.exists() else "does not exist"
                raise InputError(f"{path}: folder {path.parent} {problem}")
            try:
                fd, tmp = tempfile.mkstemp(
                    prefix=f".{path.name}.", suffix=".partial", dir=path.parent
                )
            except OSError as exc:
                raise InputError(f"{path}: cannot write ({exc.strerror or exc})") from None
            usual_mode(tmp)
            self.tmp, self.handle = Path(tmp), os.fdopen(fd, "w", encoding="utf-8")
        return self

    def write(self, record: dict) -> None:
        if self.handle is not None:
            self.handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.handle.flush()
            self.records += 1

    def __exit__(self, exc_type: type | None, *exc_info: object) -> None:
        if self.tmp is not None and self.handle is not None:
            self.handle.close()
            if exc_type is not None and self.records == 0:
                self.tmp.unlink(missing_ok=True)  # a run that failed before any result
            else:
                os.replace(self.tmp, self.target)


def _name(path: Path) -> str:
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
