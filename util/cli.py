"""Face alignment: the 68 iBUG landmarks, in 2D and 3D, of every face.

    python3 face_alignment.py                         # the bundled sample -> output.png
    python3 face_alignment.py -i photo.jpg -s out.png --active-3d
    python3 face_alignment.py -i folder/ -s results/ --json results.jsonl
    python3 face_alignment.py -i folder/              # -> face_alignment_output/
    python3 face_alignment.py -v 0                    # webcam
    python3 face_alignment.py -v in.mp4 -s out.mp4 --smooth

A thin command line over FaceAligner, with the ailia sample's flags. Installed, it is
the ``face-alignment`` command; in a clone, ``face_alignment.py`` runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

import numpy as np

from . import __version__
from .aligned_crop import TEMPLATES, CropSettings, write_face_crops
from .aligner import FaceAligner
from .face import Face
from .io import (
    MAX_PIXELS,
    InputError,
    StagedFiles,
    expand_inputs,
    read_image,
    usual_mode,
    write_bytes_atomic,
)
from .landmarks import format_pts
from .prefetch import prefetched
from .run_options import SAMPLE_IMAGE, aligner_options, describe, ignored_options
from .runtime import ModelError, limit_heap_growth, resolve_runtime
from .schema import record_json
from .tracker import DEFAULT_REDETECT

IMAGE_WRITE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
# Where drawn images go without -s: one input -> a file, several (or a folder) -> a folder.
DEFAULT_OUTPUT_FILE = "output.png"
DEFAULT_OUTPUT_FOLDER = "face_alignment_output"
# Drawn images waiting to be encoded and written behind the landmark model (folders):
# at most this many decoded images more in memory.
WRITE_BEHIND_IMAGES = 2
# Images run side by side in a folder at most (folder_threads).
FOLDER_WORKERS = 4

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        # No prog: argparse takes the name it was run by (face_alignment.py, face-alignment).
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
        "or without a suffix), or video file (with -v); default: output.png for one image, "
        f"the folder {DEFAULT_OUTPUT_FOLDER}/ for several or a folder, nothing with --json",
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
        "--crops",
        default=None,
        metavar="DIR",
        help="write one aligned crop per face into DIR: NAME_0.png, NAME_1.png, ... at each "
        "image's place (as -s lays out a folder); video: FRAME_FACE.png",
    )
    parser.add_argument(
        "--crop-template",
        choices=TEMPLATES,
        default="arcface",
        help="with --crops: arcface (insightface's 5-point template), ffhq (NVlabs' "
        "ffhq-dataset alignment) or square (the landmark model's crop) (default arcface)",
    )
    parser.add_argument(
        "--crop-size",
        type=_positive_int,
        default=None,
        metavar="N",
        help="with --crops: crop side in pixels (default 112 arcface, 1024 ffhq, 256 square)",
    )
    parser.add_argument(
        "--smooth",
        action="store_true",
        help="video: One Euro temporal filter of points and box against jitter",
    )
    parser.add_argument(
        "--redetect",
        type=_positive_int,
        default=DEFAULT_REDETECT,
        metavar="N",
        help="video: follow faces from their landmarks, run the detector every N frames "
        f"to find new ones (a lost face is detected again at once; default {DEFAULT_REDETECT})",
    )
    parser.add_argument(
        "--frames-in-flight",
        type=_positive_int,
        default=None,
        metavar="N",
        help="video file: frames run side by side, each followed from the last two frames "
        "done (default 2 on two cores or more: about 1.3x the frame rate; 1: each frame "
        "follows the one before)",
    )
    parser.add_argument(
        "--flip",
        choices=["auto", "on", "off"],
        default="auto",
        help="average each face with its mirror image, about 4%% lower error: on, the 2D "
        "model reads both views of every face; auto (for images; off for video) as "
        "accurate at less cost, the faster model reading the mirror view (README)",
    )
    parser.add_argument("--no-boxes", action="store_true", help="do not draw face boxes")
    parser.add_argument(
        "--draw-pose",
        action="store_true",
        help="with -3: draw each face's head-pose axes at its nose tip (red: the head's "
        "x, green: up, blue: forward)",
    )
    parser.add_argument(
        "--model-2d",
        default=None,
        metavar="ONNX",
        help="FAN-format 2D model (default models/fan2d_compact; models/fan2d_fast.int8.onnx "
        "is 1.5x faster and slightly less accurate, e.g. for video on a slow machine; the "
        "original 2DFAN-4.onnx loads too)",
    )
    parser.add_argument(
        "--model-3d",
        default=None,
        metavar="ONNX",
        help="3D-convention landmark model for -3, giving the x, y of landmarks_3d "
        "(default models/fan3d_compact.onnx; e.g. the original 3DFAN-4.onnx)",
    )
    parser.add_argument(
        "--model-depth",
        default=None,
        metavar="ONNX",
        help="depth network for -3 (e.g. the original depth_estimation.onnx); without it "
        "z comes from the shape prior fitted to the 3D-convention points",
    )
    parser.add_argument(
        "--precision",
        choices=["int8", "fp32"],
        default="int8",
        help="int8: the default models' quantized versions (models/NAME.int8.onnx) when "
        "they are there, about 2x faster; fp32: the original files. --model-2d, "
        "--model-3d and --model-depth files are used as given",
    )
    parser.add_argument(
        "--detector",
        default=None,
        metavar="ONNX",
        help="BlazeFace model (default models/blazeface_back.onnx)",
    )
    parser.add_argument(
        "--min-score",
        type=_probability,
        default=None,
        help="detection score threshold, 0 to 1 (default from the models' specs)",
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
        "--threads",
        type=_non_negative_int,
        default=0,
        help="threads (default 0 = all cores): several images run N at a time on one "
        "onnxruntime thread each; a video file two frames at a time on N/2 threads each; "
        "one image or a camera gets N onnxruntime threads; with --engine ray, each actor's "
        "threads",
    )
    parser.add_argument(
        "--max-pixels",
        type=_positive_int,
        default=MAX_PIXELS,
        metavar="N",
        help=f"refuse images of more than N pixels (default {MAX_PIXELS}; decoding needs "
        "about 3 bytes per pixel)",
    )
    parser.add_argument(
        "-b",
        "--benchmark",
        action="store_true",
        help="time each stage over --benchmark_count runs (median ms) on the first input",
    )
    parser.add_argument(
        "-bc",
        "--benchmark_count",
        type=_positive_int,
        default=5,
        metavar="N",
        help="with -b: number of timed runs, after one warm-up run (default 5)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress or info lines")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
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
        "--workers",
        type=_positive_int,
        default=None,
        metavar="N",
        help="actors (default: one per CPU)",
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


def _whole_number(least: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``least``, or a one-line error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            bound = "0 or more" if least == 0 else f"at least {least}"
            raise argparse.ArgumentTypeError(f"{value} is not {bound}")
        return value

    return parse


_positive_int = _whole_number(1)
_non_negative_int = _whole_number(0)


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value:g} is not between 0 and 1")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block), and negative numbers taken as an
    option's value (``--min-score -1``: argparse reads ``-1`` as an option, since the
    parser has ``-3``)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")

    def parse_known_args(self, args=None, namespace=None):  # noqa: ANN001, ANN201
        args = list(sys.argv[1:] if args is None else args)
        valued = {
            flag
            for action in self._actions
            if action.type is not None and action.nargs is None
            for flag in action.option_strings
        }
        joined: list[str] = []
        for token in args:
            if joined and joined[-1] in valued and _is_number(token):
                joined[-1] = f"{joined[-1]}={token}"
            else:
                joined.append(token)
        return super().parse_known_args(joined, namespace)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.startswith("-")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.onnx:
        args.runtime = "onnxruntime"
    log = _Log(args.quiet)
    limit_heap_growth()  # this process is ours: memory stays flat over long runs
    if args.engine == "ray":
        from .ray_engine import run_ray  # imports Ray only when it runs

        return run_ray(args, log, given=_given_options(parser, argv))
    if args.address or args.workers or args.parquet or args.resume:
        log.error("--address, --workers, --parquet and --resume need --engine ray")
        return 2
    # Images: the input files, found once before any work (None with -v).
    paths = None if args.video is not None else expand_inputs(args.input or [str(SAMPLE_IMAGE)])
    problem = (
        _no_images(args.input, paths)
        or _json_clash(args, paths)
        or _savepath_problem(args, paths)
        or _crops_problem(args)
    )
    if problem is not None:
        log.error(problem)
        return 2
    session_threads, args.folder_workers = folder_threads(
        args.threads, None if args.benchmark else paths, resolve_runtime(args.runtime)
    )
    args.video_workers = 1
    if args.video is not None:
        session_threads, args.video_workers = video_threads(
            args.threads, args.video, resolve_runtime(args.runtime), args.frames_in_flight
        )
    try:
        # What loading warns of (an int8 file without its presence referee) comes out
        # as one "warning:" line, not Python's two-line warning with a source line.
        with warnings.catch_warnings(record=True) as caught:
            aligner = FaceAligner(**aligner_options(args), threads=session_threads)
    except (ModelError, InputError) as exc:
        log.error(str(exc))
        return 2
    for warning in caught:
        log.warn(str(warning.message))
    for message in ignored_options(args, _given_options(parser, argv), paths, aligner.runtime):
        log.warn(message)
    log.info(describe(aligner))
    try:
        if args.benchmark and args.video is None:
            return run_benchmark(aligner, args, log)  # writes nothing, not even --json
        with _JsonLines(args.json) as sink:
            if args.video is not None:
                return run_video(aligner, args, sink, log)
            return run_images(aligner, args, sink, log)
    except KeyboardInterrupt:
        log.error("interrupted; outputs written so far are kept")
        return 130
    except BrokenPipeError:
        # The reader of stdout has gone (--json - | head): end quietly, as Unix tools do,
        # with the status a shell reports for them (128 + SIGPIPE).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except OSError as exc:
        log.error(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "))
        return 2
    except (InputError, ModelError) as exc:
        # A model that loaded but fails to run stops the run: every input would fail.
        log.error(str(exc))
        return 2


def folder_threads(threads: int, paths: list[Path] | None, runtime: str) -> tuple[int, int]:
    """(onnxruntime threads per session, images run side by side) for ``--threads``.

    Several images with onnxruntime: each of the N threads (0 = every core) takes a
    whole image, read to landmarks, on sessions of one thread. The compact models are
    too small for onnxruntime to split one call well over two cores (fp32 20.0 ms on one
    thread, 16.5 on two, quiet machine), and the earlier split (read and detect ahead in
    one thread, the landmark model on two) left a core idle while the model ran; whole
    images side by side keep both busy and skip onnxruntime's per-operator hand-offs.
    One image, video (``paths`` None), ``-b`` and ailia: the sessions get the N threads.
    At most FOLDER_WORKERS images at a time, the other threads going to their sessions:
    a fifth of an image's CPU time is Python holding the GIL, so many more workers would
    queue on it (a guess past 2 cores: this machine has two).
    """
    if paths is None or len(paths) < 2 or runtime != "onnxruntime":
        return threads, 1
    cores = threads if threads > 0 else available_cores()
    if cores < 2:
        return threads, 1
    workers = min(cores, FOLDER_WORKERS)
    return max(1, cores // workers), workers


def video_threads(
    threads: int, source: str, runtime: str, in_flight: int | None = None
) -> tuple[int, int]:
    """(onnxruntime threads per session, frames in flight) for ``--threads`` on a video;
    ``in_flight`` (--frames-in-flight) overrides the choice below.

    A video file with onnxruntime on two cores or more: two frames at a time, each on
    sessions of one thread (util.tracker.FaceTracker.process_frames), as for folders:
    measured on the benchmark video (640x480, one face, 2 threads), 73-80 fps with one
    frame on two threads and 94-106 fps with two frames on one thread each, each
    followed from the mean of the last two finished frames (tracking error and jitter
    as one frame at a time or lower: util/tracker.py).
    A camera (a device number) gives its frames one at a time, well under that rate:
    one frame on every thread, and its crops follow the frame just before.
    """
    if runtime != "onnxruntime":
        return threads, 1
    cores = threads if threads > 0 else available_cores()
    if in_flight is None:
        in_flight = 1 if source.isdigit() or cores < 2 else 2
    if in_flight <= 1:
        return threads, 1
    return max(1, cores // in_flight), in_flight


def available_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _given_options(parser: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    """The options (dest names) given on the command line, defaults aside: the same
    parser again, with a marker for every default, keeps the marker where none was given.
    (Not argparse.SUPPRESS: argparse would convert that string with the option's type.)"""
    unset = object()
    probe = build_parser()
    probe.set_defaults(**dict.fromkeys(vars(parser.parse_args([])), unset))
    given = vars(probe.parse_args(sys.argv[1:] if argv is None else argv))
    return {dest for dest, value in given.items() if value is not unset}


def _crops_problem(args: argparse.Namespace) -> str | None:
    """Why --crops cannot take the crops, found before any work."""
    if args.crops is None or args.benchmark:
        return None
    blocker = _file_in_the_way(Path(args.crops))
    if blocker is not None:
        return f"{args.crops}: cannot write crops there ({blocker} is a file)"
    return None


def _no_images(inputs: list[str] | None, paths: list[Path] | None) -> str | None:
    """An empty folder, or globs that match nothing: nothing to do, found before the
    models load (a missing file named plainly is an error of that file, later)."""
    if paths is None or inputs is None:
        return None
    unmatched = [
        p for p in paths if glob.has_magic(str(p)) and not os.path.exists(p) and str(p) in inputs
    ]
    if not paths or len(unmatched) == len(paths):
        return f"{' '.join(inputs)}: no images found"
    return None


def _json_clash(args: argparse.Namespace, paths: list[Path] | None) -> str | None:
    """Why the --json file may not be written, if it names an input or the -s output."""
    if args.json in (None, "-"):
        return None
    target = Path(args.json).resolve()
    if args.video is not None:
        inputs = [] if args.video.isdigit() else [Path(args.video)]
    else:
        inputs = paths or []
    if any(os.path.exists(p) and p.resolve() == target for p in inputs):
        return f"{args.json}: refusing to overwrite an input file with --json"
    if args.savepath is not None and Path(args.savepath).resolve() == target:
        return f"{args.json}: --json and -s name the same file"
    for parent in Path(args.json).parents:
        if os.path.exists(parent):
            if not os.path.isdir(parent):
                return f"{args.json}: cannot write there ({parent} is a file)"
            break
    return None


# -- images ---------------------------------------------------------------------------


def run_images(aligner: FaceAligner, args: argparse.Namespace, sink: _JsonLines, log: _Log) -> int:
    inputs = args.input or [str(SAMPLE_IMAGE)]
    paths = expand_inputs(inputs)
    if not paths:
        log.error(f"{' '.join(inputs)}: no images found")
        return 2
    save, as_folder = _save_target(args, paths)
    outputs = _output_paths(save, as_folder, inputs) if save is not None else {}
    failures = saved = 0
    protected = _protected_files(paths)
    results = aligner.iter_paths(
        inputs,
        show_progress_bar=not args.quiet,
        keep_heatmaps=args.heatmaps,
        workers=getattr(args, "folder_workers", 1),
    )

    staged = StagedFiles()
    crop_dir = None if args.crops is None else Path(args.crops)
    crop_outputs = _output_paths(crop_dir, True, inputs) if crop_dir is not None else {}
    upsampled: list[Path] = []  # faces smaller than their crop (one warning per run)

    def draw_and_save(result: tuple) -> tuple[Path, tuple | None, list[Face], str | None, list]:
        """In the writer thread: the drawn image encoded and written under a temporary
        name (the PNG encoding was a quarter of the time per image, and OpenCV releases
        the GIL meanwhile); the loop below renames it into place with its record."""
        path, image, faces, error = result
        if error is not None:
            return path, None if image is None else image.shape, faces, error, []
        pairs = []
        if crop_dir is not None:
            stem = crop_outputs[path].with_suffix("")
            pairs += write_face_crops(stem, image, faces, crop_settings(args), staged, upsampled)
        if save is None:
            return path, image.shape, faces, None, pairs
        out = outputs[path]
        try:
            pairs += _write_outputs(out, image, faces, args, protected, staged)
        except InputError as exc:
            return path, image.shape, faces, str(exc), pairs
        except OSError as exc:
            return path, image.shape, faces, f"{out}: cannot write ({exc.strerror or exc})", pairs
        return path, image.shape, faces, None, pairs

    written = prefetched(draw_and_save, results, WRITE_BEHIND_IMAGES if save else 0)
    # closing: on Ctrl-C or an error here, the reading and writing threads stop first;
    # then what they staged and nobody committed is removed.
    try:
        with contextlib.closing(results), contextlib.closing(written):
            for path, shape, faces, error, pairs in written:
                if shape is not None and not faces:  # read, and no face in it
                    log.warn(f"{path}: no face found")
                _say_upsampled_once(upsampled, log)
                with interrupt_deferred():  # an output and its record, both or neither
                    if pairs:
                        try:
                            staged.commit(pairs)
                            saved += save is not None and error is None
                        except OSError as exc:
                            error = f"{pairs[0][1]}: cannot write ({exc.strerror or exc})"
                    if error is not None:
                        failures += 1
                        log.error(error)
                    sink.write(_record(path, faces, error, shape))
    finally:
        staged.discard()
    if saved and as_folder:
        log.info(f"saved {saved} image{'s' if saved > 1 else ''} to {save}{os.sep}")
    elif saved:
        log.info(f"saved to {save}")
    return 0 if failures == 0 else 1


@contextlib.contextmanager
def interrupt_deferred() -> Iterator[None]:
    """Ctrl-C inside the block takes effect at its end (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: caught.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            raise KeyboardInterrupt


def _save_target(args: argparse.Namespace, paths: list[Path]) -> tuple[Path | None, bool]:
    """Where drawn images go: (None, False) when nothing is drawn, else (path, is it a
    folder). -s is a folder for several inputs, a name ending in /, an existing folder or
    a name without a suffix; without -s, several inputs or a folder go to a new folder."""
    if args.savepath is None:
        if args.json is not None:
            return None, False
        several = len(paths) > 1 or any(os.path.isdir(spec) for spec in args.input or [])
        return (
            (Path(DEFAULT_OUTPUT_FOLDER), True) if several else (Path(DEFAULT_OUTPUT_FILE), False)
        )
    save = Path(args.savepath)
    folder = args.savepath.endswith(("/", os.sep)) or os.path.isdir(save) or not save.suffix
    return save, folder or len(paths) > 1


def _savepath_problem(args: argparse.Namespace, paths: list[Path] | None) -> str | None:
    """Why -s cannot take the images, found before any work: a file name (or a file)
    given for several inputs is never silently turned into a folder, and a file name
    needs a format we can write."""
    if paths is None or args.savepath is None or args.benchmark:
        return None
    save, as_folder = _save_target(args, paths)
    name = args.savepath
    blocker = _file_in_the_way(save.parent)
    if blocker is not None:
        return f"{name}: cannot write there ({blocker} is a file)"
    if not as_folder:
        if save.suffix.lower() not in IMAGE_WRITE_SUFFIXES:
            known = ", ".join(sorted(IMAGE_WRITE_SUFFIXES))
            return f"{name}: unsupported output image format (use one of {known})"
        return None
    # os.path, not pathlib: a name too long for the file system is then just not there.
    exists = os.path.exists(save)
    if name.endswith(("/", os.sep)) or os.path.isdir(save) or not (exists or save.suffix):
        return None
    what = "is a file" if exists else "names one file"
    return (
        f"{name}: -s {what}, but there are {len(paths)} images to save; "
        f"give a folder (e.g. -s {save.with_suffix('')}{os.sep}), or one input"
    )


def _output_paths(save: Path, as_folder: bool, inputs: list[str]) -> dict[Path, Path]:
    """The output file of every input image.

    Into a folder, each image keeps its place below the folder it was found in (the
    common folder of all inputs), as NAME.png: sub-folders are kept, so two inputs never
    share a name. Only images that differ by suffix alone (a.jpg, a.png) get it in the
    name (a_jpg.png, a_png.png).
    """
    found = [(path, _base_folder(spec)) for spec in inputs for path in expand_inputs([spec])]
    if not as_folder:
        return {path: save for path, _ in found}
    try:
        common = Path(os.path.commonpath([os.path.abspath(base) for _, base in found]))
        relative = {path: Path(os.path.abspath(path)).relative_to(common) for path, _ in found}
    except ValueError:  # no common folder (Windows drives): names only
        relative = {path: Path(path.name) for path, _ in found}
    stems: dict[Path, set[Path]] = {}
    for path, rel in relative.items():
        stems.setdefault(rel.with_suffix(""), set()).add(Path(os.path.abspath(path)))
    outputs: dict[Path, Path] = {}
    used: set[Path] = set()
    for path, rel in relative.items():
        stem = rel.with_suffix("")
        if len(stems[stem]) > 1:
            stem = stem.with_name(f"{stem.name}_{rel.suffix.lstrip('.').lower()}")
        out, n = save / stem.with_name(stem.name + ".png"), 1
        while out in used:  # only if a.JPG meets a.jpg, or a_jpg.png meets a.jpg
            n += 1
            out = save / stem.with_name(f"{stem.name}_{n}.png")
        outputs[path] = out
        used.add(out)
    return outputs


def _base_folder(spec: str) -> Path:
    """The folder an input spec names images below: the folder itself, the fixed start
    of a glob, or a file's folder."""
    path = Path(spec)
    if os.path.isdir(path):
        return path
    if not os.path.exists(path) and glob.has_magic(spec):
        fixed = next(i for i, part in enumerate(path.parts) if glob.has_magic(part))
        return Path(*path.parts[:fixed]) if fixed else Path(".")
    return path.parent


def _protected_files(paths: list[Path]) -> set[Path]:
    """Files no output may replace: the inputs, and the annotations (NAME.pts) beside them,
    which --pts would otherwise overwrite when -s is the input folder."""
    protected = set()
    for path in paths:
        for candidate in (path, path.with_suffix(".pts")):
            if os.path.exists(candidate):
                protected.add(candidate.resolve())
    return protected


def _write_outputs(
    out: Path,
    image: np.ndarray,
    faces: list[Face],
    args: argparse.Namespace,
    protected: set[Path] | frozenset[Path] = frozenset(),
    staged: StagedFiles | None = None,
) -> list[tuple[Path, Path]]:
    """Draw and write one image's outputs; with ``staged``, written under temporary
    names only (the caller commits them with the record), and their pairs returned."""
    from .draw import draw_faces, heatmap_grid, with_side_view

    pairs: list[tuple[Path, Path]] = []

    def put(path: Path, data: bytes) -> None:
        _check_folder(path.parent)
        if staged is None:
            write_bytes_atomic(path, data)
        else:
            pairs.append(staged.stage(path, data))

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
    drawn = draw_faces(image, faces, draw_boxes=not args.no_boxes, draw_pose=args.draw_pose)
    if args.active_3d:
        drawn = with_side_view(drawn, faces)
    put(out, encode_image(out, drawn))
    for path, kind, face in extra:
        if kind == "pts":
            put(path, format_pts(face.landmarks).encode("utf-8"))
        else:
            put(path, encode_image(path, heatmap_grid(face.heatmaps)))
    return pairs


def crop_settings(args: argparse.Namespace) -> CropSettings:
    return CropSettings.of(args.crop_template, args.crop_size)


def encode_image(path: Path, image_rgb: np.ndarray) -> bytes:
    """The image encoded in the format of ``path``'s suffix."""
    import cv2

    bgr = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)  # faster than [..., ::-1]
    ok, data = cv2.imencode(path.suffix.lower() or ".png", bgr)
    if not ok:
        raise InputError(f"{path}: cannot encode image in this format")
    return data.tobytes()


def _file_in_the_way(folder: Path) -> Path | None:
    """The nearest of ``folder`` and its parents that exists, when it is a file (so no
    folder can be made there), else None. os.path, not pathlib: a name too long for the
    file system is then just not there."""
    for parent in [folder, *folder.parents]:
        if os.path.exists(parent):
            return None if os.path.isdir(parent) else parent
    return None


def _check_folder(folder: Path) -> None:
    """Make ``folder`` (and its parents) or say in one line why it cannot be."""
    blocker = _file_in_the_way(folder)
    if blocker is not None:
        raise InputError(f"{folder}: cannot write there ({blocker} is a file)")
    folder.mkdir(parents=True, exist_ok=True)


def _say_upsampled_once(upsampled: list, log: _Log) -> None:
    """The run's one warning that faces smaller than their crop are up-sampled
    (``upsampled``: the first such crop, set by write_face_crops; None once said)."""
    if upsampled and upsampled[0] is not None:
        log.warn(f"{upsampled[0]}: a face smaller than its --crop-size crop is "
                 "up-sampled (said once per run)")  # fmt: skip
        upsampled[0] = None


_record = record_json  # the name the engines and tests use


# -- video ----------------------------------------------------------------------------


def run_video(aligner: FaceAligner, args: argparse.Namespace, sink: _JsonLines, log: _Log) -> int:
    """Webcam or video file: draw each frame, write the video when -s names one, show a
    window when a display exists (q or Esc quits)."""
    from tqdm import tqdm

    from .draw import draw_faces, with_side_view
    from .tracker import FaceTracker
    from .video import (
        READ_AHEAD_FRAMES,
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
    tracker = FaceTracker(aligner, redetect=args.redetect, smooth=args.smooth, rate=fps)
    frames = 0
    source = read_frames(capture, READ_AHEAD_FRAMES)
    results = tracker.process_frames(
        tqdm(source, total=frame_count(capture), unit="frame", disable=args.quiet),
        workers=args.video_workers,
    )
    upsampled: list = []
    try:
        for frames, (frame, faces) in enumerate(results, start=1):
            if args.crops is not None:  # FRAME_FACE.png
                with interrupt_deferred():  # each crop with its record
                    stem = Path(args.crops) / f"{frames - 1:06d}"
                    write_face_crops(stem, frame, faces, crop_settings(args), None, upsampled)
                    sink.write(_record(args.video, faces, None, frame.shape, frame=frames - 1))
                _say_upsampled_once(upsampled, log)
            else:
                sink.write(_record(args.video, faces, None, frame.shape, frame=frames - 1))
            if writer is None and not show:
                continue
            drawn = draw_faces(
                frame, faces, draw_boxes=not args.no_boxes, draw_pose=args.draw_pose
            )
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
        results.close()  # the frames under way finish first
        source.close()  # stops the reading thread before the capture goes
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

    cv2.imshow("face_alignment (q or Esc quits)", cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR))
    return (cv2.waitKey(1) & 0xFF) in (ord("q"), 27)


# -- benchmark ------------------------------------------------------------------------


def run_benchmark(aligner: FaceAligner, args: argparse.Namespace, log: _Log) -> int:
    paths = expand_inputs(args.input or [str(SAMPLE_IMAGE)])
    if not paths:
        log.error(f"{' '.join(args.input)}: no images found")
        return 2
    path = paths[0]
    image = read_image(path, aligner.max_pixels)
    aligner.align(image)  # warm-up: first runs allocate
    aligner.times.seconds.clear()
    for _ in range(args.benchmark_count):  # at least 1: the parser sees to it
        faces = aligner.align(image)
    print(
        f"{path}: {image.shape[1]}x{image.shape[0]}, {len(faces)} face(s), "
        f"{args.benchmark_count} runs, runtime {aligner.runtime}, "
        f"flip {aligner.flip_mode}"
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
            _check_folder(path.parent)  # made when missing, as -s makes its folders
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
