"""The Ray engine (``face_alignment.py --engine ray``): the image pipeline as a Ray Data job.

    inputs (paths, or a Parquet dataset of image bytes)
      -> map_batches(AlignBatch, compute=ActorPoolStrategy(...))   decode, detect, landmarks
      -> the driver writes JSON Lines (the local engine's records) or Parquet (a row per face)

Each actor loads its ``FaceAligner`` once, with as many onnxruntime threads as it has
CPUs, and turns a batch of inputs into the very records the local engine writes (its
``iter_paths`` and the CLI's ``_record``): a bad file is an error record, never a failed
job. Results come back in input order (``preserve_order``) and the driver writes them
as they come, so a stopped run leaves a valid prefix that ``--resume`` continues.

Nothing lost, nothing twice: an actor that dies (killed, out of memory) is restarted and
its unfinished batches run again (Ray Data gives actor pools ``max_restarts=-1`` and
``max_task_retries=-1``); a batch's records reach the driver only once its task has
finished, and the driver writes each input index once. An input that killed its worker
every time would be retried without end; decoding refuses images past util.io's pixel
limit, the one such input known.

Importing this module needs no Ray; ``run_ray`` says what to install when Ray is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .aligned_crop import CropSettings, crop_stem, write_face_crops
from .io import InputError, expand_inputs, is_image_path, usual_mode
from .run_options import SAMPLE_IMAGE
from .schema import RECORD_FIELDS, parquet_schema

RECORD_NAMES = {f.name for f in RECORD_FIELDS}

# The folder that holds this package: a clone's root, or site-packages when installed.
REPO = Path(__file__).resolve().parent.parent
# A clone has the command beside the package; an installed package is in site-packages,
# already on every node of a cluster (README: the same packages everywhere).
IS_CLONE = (REPO / "face_alignment.py").is_file() and (REPO / "util").is_dir()
INSTALL_HINT = "pip install -r requirements-ray.txt"

MAX_ROWS_PER_BLOCK = 128  # a block is a unit of work and of retry
PARQUET_ROWS_PER_FILE = 5000
# Columns that name and hold the images of a Parquet input, by preference.
NAME_COLUMNS = ("path", "name", "filename", "file", "key", "image_path", "id", "image")
BYTES_COLUMNS = ("image", "bytes", "image_bytes", "content", "data", "jpg", "png")
# What a cluster's actors need of a clone (its runtime_env working_dir): the package and
# its models; everything else at the clone's top is left behind.
SHIPPED = ("util", "models", "face_alignment.py")


class EngineError(Exception):
    """A problem with the run as asked (exit 2), in one line."""


# -- inputs ---------------------------------------------------------------------------


@dataclass
class ParquetInput:
    """A Parquet dataset whose rows are images: a bytes column and a column naming them.

    ``row_groups``: (file, row group, rows) in the dataset's order; a row group is the
    unit of work (and of retry), read by the actor that works on it."""

    spec: str
    bytes_column: str
    name_column: str
    rows: int
    row_groups: list[tuple[str, int, int]] = field(default_factory=list)


@dataclass
class Inputs:
    paths: list[str] = field(default_factory=list)
    parquet: ParquetInput | None = None

    def __len__(self) -> int:
        return self.parquet.rows if self.parquet else len(self.paths)


def is_uri(spec: str) -> bool:
    return "://" in spec and not spec.startswith("file://")


def expand_specs(specs: list[str]) -> Inputs:
    """What to read: image files, folders (recursed, sorted), globs, text files listing
    one path a line (relative paths are relative to the list), URIs of any filesystem
    pyarrow reads (s3://, gs://, hdfs://: a file or a folder), or one Parquet dataset
    (a .parquet file or a folder of them) with a column of image bytes.

    Local specs expand exactly as the local engine's (util.io.expand_inputs).
    """
    inputs = Inputs()
    for spec in specs:
        if spec.startswith("file://"):
            spec = spec[len("file://") :]
        local = [] if is_uri(spec) or spec.endswith(".parquet") else expand_inputs([spec])
        if _is_parquet_spec(spec, local):
            if inputs.parquet is not None or len(specs) > 1:
                raise EngineError(f"{spec}: a Parquet input must be the only input")
            inputs.parquet = _parquet_input(spec)
        elif is_uri(spec):
            inputs.paths += _expand_uri(spec)
        elif spec.lower().endswith(".txt") and Path(spec).is_file():
            inputs.paths += _read_list(Path(spec))
        else:
            inputs.paths += [str(p) for p in local]
    return inputs


def _read_list(path: Path) -> list[str]:
    """The paths a text file lists, one a line (blank lines and # comments skipped)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise EngineError(f"{path}: cannot read the list ({exc})") from None
    paths: list[str] = []
    for line in lines:
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if is_uri(entry):
            paths.append(entry)
        else:
            local = entry if os.path.isabs(entry) else str(path.parent / entry)
            paths += [str(p) for p in expand_inputs([local])]
    return paths


def _expand_uri(spec: str) -> list[str]:
    """A remote file, or the images under a remote folder (sorted)."""
    from pyarrow import fs

    try:
        filesystem, root = fs.FileSystem.from_uri(spec)
        info = filesystem.get_file_info(root)
        if info.type != fs.FileType.Directory:
            return [spec]  # a file, or a missing one: reading it says which
        selector = fs.FileSelector(root, recursive=True)
        found = sorted(
            f.path
            for f in filesystem.get_file_info(selector)
            if f.type == fs.FileType.File and is_image_path(Path(f.path))
        )
    except (OSError, ValueError) as exc:
        raise EngineError(f"{spec}: cannot list ({exc})") from None
    base = spec.rstrip("/")
    return [base + "/" + p[len(root.rstrip("/")) + 1 :] for p in found]


def _is_parquet_spec(spec: str, images: list[Path]) -> bool:
    """A .parquet file or folder, or a local folder of Parquet files and no images."""
    if spec.rstrip("/").lower().endswith(".parquet"):
        return True
    path = Path(spec)
    return not is_uri(spec) and not images and path.is_dir() and any(path.rglob("*.parquet"))


def _parquet_input(spec: str) -> ParquetInput:
    """Find the bytes column and the name column of a Parquet dataset of images."""
    import pyarrow as pa
    import pyarrow.dataset as pds

    if not is_uri(spec):
        spec = str(Path(spec).resolve())  # the actors read it, wherever their cwd is
    try:
        dataset = pds.dataset(spec, format="parquet")
        schema = dataset.schema
        # Footers only: no image bytes are read here.
        row_groups = [
            (piece.path, group.id, group.num_rows)
            for fragment in dataset.get_fragments()
            for piece in fragment.split_by_row_group()
            for group in piece.row_groups
        ]
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise EngineError(f"{spec}: cannot read as Parquet ({exc})") from None
    binary = [
        f.name for f in schema if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)
    ]
    text = [
        f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
    ]
    if not binary:
        raise EngineError(f"{spec}: no binary column of image bytes")
    bytes_column = next((c for c in BYTES_COLUMNS if c in binary), binary[0])
    if len(binary) > 1 and bytes_column not in BYTES_COLUMNS:
        raise EngineError(
            f"{spec}: several binary columns ({', '.join(binary)}); name the image bytes "
            f"one of: {', '.join(BYTES_COLUMNS)}"
        )
    name_column = next((c for c in NAME_COLUMNS if c in text), None)
    if name_column is None:
        raise EngineError(
            f"{spec}: no string column naming each image (one of: {', '.join(NAME_COLUMNS)})"
        )
    rows = sum(n for _, _, n in row_groups)
    return ParquetInput(spec, bytes_column, name_column, rows, row_groups)


# -- the actor ------------------------------------------------------------------------


class AlignBatch:
    """The Ray Data callable class: one per actor, models loaded once.

    In: a batch with ``index`` and ``name`` (paths); for a Parquet input (``parquet``),
    with ``index`` (the number of its first row), ``file`` and ``row_group``: row groups
    the actor reads itself. Out: ``index`` (the input's place in input order) and
    ``record``, the local engine's JSON Lines record. Inputs named in ``skip`` are left
    out.
    """

    def __init__(
        self,
        options: dict,
        threads: int,
        cwd: str | None = None,
        skip: frozenset[str] = frozenset(),
        parquet: ParquetInput | None = None,
        crops: tuple[str, CropSettings] | None = None,
    ) -> None:
        from .aligner import FaceAligner
        from .runtime import limit_heap_growth

        limit_heap_growth()  # a worker process of ours, as the command line's
        if cwd and os.path.isdir(cwd):
            os.chdir(cwd)  # relative inputs mean what they meant on the driver
        self.aligner = FaceAligner(**options, threads=threads)
        self.skip = skip
        self.parquet = parquet
        # (folder, settings) of --crops: each actor writes its faces' crops there, at
        # the input's name below the folder (util.aligned_crop.crop_stem: never outside).
        self.crops = crops
        self.scratch = "/dev/shm" if os.path.isdir("/dev/shm") else None

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        from .schema import record_json as _record

        indexes, records = [], []
        for index, name, data in self._inputs(batch):
            if name in self.skip:
                continue
            if data is not None:
                faces, error, image = self._align_bytes(name, data)
            elif is_uri(name):
                faces, error, image = self._align_bytes(name, _read_uri(name))
            else:
                faces, error, image = self._align_path(name)
            if self.crops is not None and image is not None:
                folder, settings = self.crops
                write_face_crops(crop_stem(folder, name), image, faces, settings, None, [])
            record = _record(name, faces, error, None if image is None else image.shape)
            indexes.append(index)
            records.append(json.dumps(record, ensure_ascii=False))
        return {
            "index": np.asarray(indexes, dtype=np.int64),
            "record": np.asarray(records, dtype=object),
        }

    def _inputs(self, batch: dict):  # noqa: ANN202 - Iterator[tuple[int, str, object]]
        """(index, name, image bytes or None to read the named file) per input."""
        if self.parquet is None:
            for index, name in zip(batch["index"], batch["name"], strict=True):
                yield int(index), str(name), None
            return
        source = self.parquet
        for first, path, group in zip(
            batch["index"], batch["file"], batch["row_group"], strict=True
        ):
            table = _read_row_group(source, str(path), int(group))
            names = table[source.name_column].to_pylist()
            data = table[source.bytes_column].to_pylist()
            for k, (name, image) in enumerate(zip(names, data, strict=True)):
                index = int(first) + k
                name = f"{path}[{index}]" if name is None else str(name)
                yield index, name, InputError(f"{name}: no image data") if image is None else image

    def _align_path(self, name: str) -> tuple[list, str | None, object]:
        """(faces, error, the image or None)."""
        # One image, one thread: the actor holds its CPUs, no read-ahead thread beside it.
        for _, image, faces, error in self.aligner.iter_paths([name], prefetch=0):
            return faces, error, image
        return [], f"{name}: file not found", None

    def _align_bytes(self, name: str, data: object) -> tuple[list, str | None, object]:
        """Decode bytes exactly as a file is read (util.io.read_image, via iter_paths)."""
        if isinstance(data, InputError):
            return [], str(data), None
        suffix = Path(name).suffix if len(Path(name).suffix) <= 6 else ""
        fd, tmp = tempfile.mkstemp(prefix="face-alignment-", suffix=suffix, dir=self.scratch)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(bytes(data))
            faces, error, image = self._align_path(tmp)
        finally:
            os.unlink(tmp)
        return faces, None if error is None else error.replace(tmp, name), image


def _read_row_group(source: ParquetInput, path: str, group: int):  # noqa: ANN202 - pa.Table
    """The name and bytes columns of one row group of a Parquet input."""
    import pyarrow.parquet as pq
    from pyarrow import fs

    if is_uri(source.spec):
        filesystem = fs.FileSystem.from_uri(source.spec)[0]
    else:
        filesystem = fs.LocalFileSystem()
    with filesystem.open_input_file(path) as handle:
        return pq.ParquetFile(handle).read_row_group(
            group, columns=[source.name_column, source.bytes_column]
        )


def _read_uri(uri: str) -> bytes | InputError:
    from pyarrow import fs

    try:
        filesystem, path = fs.FileSystem.from_uri(uri)
        with filesystem.open_input_stream(path) as stream:
            return stream.readall()
    except FileNotFoundError:
        return InputError(f"{uri}: file not found")
    except (OSError, ValueError) as exc:
        return InputError(f"{uri}: cannot read ({exc})")


# -- outputs --------------------------------------------------------------------------


class JsonLinesSink:
    """JSON Lines written in place as results come (``-`` = stdout), so that a stopped
    run leaves every finished record; with ``resume`` the file is continued after its
    last complete line (a torn last line is dropped)."""

    def __init__(self, target: str, resume: bool) -> None:
        self.target = target
        self.done: Counter[str] = Counter()
        self.errors = 0
        if target == "-":
            if resume:
                raise EngineError("--resume needs an output file, not stdout")
            self.handle = sys.stdout
            return
        path = Path(target)
        if path.is_dir():
            raise EngineError(f"{path}: --json needs a file name, not a folder")
        if not path.parent.is_dir():
            raise EngineError(f"{path}: folder {path.parent} does not exist")
        continuing = resume and path.is_file()
        try:
            if continuing:
                keep = self._read_done(path)
                with open(path, "r+b") as handle:
                    handle.truncate(keep)
            self.handle = open(path, "a" if continuing else "w", encoding="utf-8")
        except OSError as exc:
            raise EngineError(f"{path}: cannot write ({exc.strerror or exc})") from None

    def _read_done(self, path: Path) -> int:
        """Count the inputs already written; the byte offset after the last good line."""
        good = 0
        with open(path, "rb") as handle:
            for line in handle:
                if not line.endswith(b"\n"):
                    break
                try:
                    record = json.loads(line)
                except ValueError:
                    break
                self.done[record["image"]] += 1
                self.errors += record.get("error") is not None
                good += len(line)
        return good

    def write(self, record: dict, line: str) -> None:
        self.handle.write(line + "\n")

    def flush(self) -> None:
        self.handle.flush()

    def sync(self) -> None:
        """After each batch: what is written reaches the file."""
        self.flush()

    def close(self) -> None:
        self.flush()
        if self.handle is not sys.stdout:
            self.handle.close()


class ParquetSink:
    """A Parquet dataset, one row per face (an image without faces, or that failed, is
    one row with ``face`` null), written as numbered part files, each renamed into
    place whole. ``resume`` adds parts after those already there."""

    def __init__(self, folder: str, resume: bool) -> None:
        import pyarrow as pa

        self.pa = pa
        self._schema = parquet_schema(pa)
        self._base = [name for name in self._schema.names if name in RECORD_NAMES]
        self.folder = Path(folder)
        self.done: Counter[str] = Counter()
        self.errors = 0
        self.rows: list[dict] = []
        if self.folder.exists() and not self.folder.is_dir():
            raise EngineError(f"{folder}: --parquet needs a folder")
        parts = sorted(self.folder.glob("part-*.parquet")) if self.folder.is_dir() else []
        if parts and not resume:
            raise EngineError(f"{folder}: already holds a Parquet dataset (--resume continues it)")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EngineError(f"{folder}: cannot write ({exc.strerror or exc})") from None
        self.next_part = 0
        if parts:
            self.next_part = 1 + max(int(p.stem.split("-")[1]) for p in parts)
            self._read_done(parts)
        self.last_flush = time.monotonic()

    def _read_done(self, parts: list[Path]) -> None:
        import pyarrow.parquet as pq

        table = pq.read_table(parts, columns=["image", "face", "error"])
        for image, face, error in zip(
            *(table[c].to_pylist() for c in ("image", "face", "error")), strict=True
        ):
            if face is None or face == 0:  # one row per image: its first face, or none
                self.done[image] += 1
                self.errors += error is not None

    def schema(self):  # noqa: ANN201 - pyarrow.Schema
        return self._schema

    def write(self, record: dict, line: str) -> None:
        base = {key: record.get(key) for key in self._base}
        faces = record["faces"]
        if not faces:
            self.rows.append(base | {"face": None})
        for k, face in enumerate(faces):
            unknown = set(face) - set(self._schema.names)
            if unknown:  # a field util.schema does not declare would be dropped
                raise EngineError(f"face fields {sorted(unknown)} are not in util/schema.py")
            self.rows.append(base | {"face": k} | face)
        if len(self.rows) >= PARQUET_ROWS_PER_FILE:
            self.flush()

    def sync(self) -> None:
        """After each batch: a part file once a minute at most, not one per batch (a
        dataset of many small files is slow to read)."""
        if time.monotonic() - self.last_flush > 60:
            self.flush()

    def flush(self) -> None:
        import pyarrow.parquet as pq

        self.last_flush = time.monotonic()
        if not self.rows:
            return
        table = self.pa.Table.from_pylist(self.rows, schema=self.schema())
        path = self.folder / f"part-{self.next_part:06d}.parquet"
        tmp = self.folder / f".{path.name}.tmp"
        pq.write_table(table, tmp)
        usual_mode(tmp)
        os.replace(tmp, path)
        self.next_part += 1
        self.rows = []

    def close(self) -> None:
        self.flush()


# -- the run --------------------------------------------------------------------------


def aligner_options(args: argparse.Namespace) -> dict:
    """FaceAligner keyword arguments from the CLI's flags, exactly as the local engine
    takes them (face_alignment.aligner_options), model paths made absolute for actors
    whose working directory is not the driver's."""
    from .run_options import aligner_options as cli_options

    options = cli_options(args)
    for key, value in options.items():
        if (key.startswith("model_") or key.endswith("_model")) and value:
            if Path(value).exists():
                options[key] = str(Path(value).resolve())
    return options


def start_local_runtime(num_cpus: int | None = None) -> None:
    """The embedded runtime: a Ray instance on this machine, for this process only,
    whose workers import this repository (code_search_path)."""
    import ray

    ray.init(
        # "local": a runtime of our own, never whatever cluster /tmp/ray names (a stale
        # file there, left by a head that died, made ray.init() hang).
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
        job_config=ray.job_config.JobConfig(code_search_path=[str(REPO)]),
    )


def _connect(address: str | None) -> bool:
    """Start or join Ray; True when this call started it (and so must stop it)."""
    import ray

    if ray.is_initialized():
        return False  # the caller's own runtime (a notebook, the tests)
    if address is None:
        start_local_runtime()
    else:
        ray.init(
            address=address,
            log_to_driver=False,
            logging_level=logging.ERROR,
            runtime_env=cluster_runtime_env(),
        )
    return True


def cluster_runtime_env() -> dict:
    """What a cluster's actors get shipped: nothing for an installed package (every
    node has it; shipping site-packages broke Ray's 512 MiB limit), and from a clone
    only the package and its models as the job's working directory."""
    if not IS_CLONE:
        return {}
    left_out = sorted(p.name for p in REPO.iterdir() if p.name not in SHIPPED)
    return {"working_dir": str(REPO), "excludes": left_out + ["__pycache__"]}


@contextlib.contextmanager
def _stderr_silenced(silent: bool) -> Iterator[None]:
    """With -q: the process's stderr (file descriptor 2) to /dev/null while Ray starts,
    which writes its C++ log lines there (logging.cc, core_worker.cc) whatever the log
    level; a failure is raised, and reported, after it is restored."""
    if not silent:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _check_args(args: argparse.Namespace) -> None:
    unsupported = [
        flag
        for flag, given in (
            ("-v/--video", args.video is not None),
            ("-s/--savepath", args.savepath is not None),
            ("--pts", args.pts),
            ("--heatmaps", args.heatmaps),
            ("-b/--benchmark", args.benchmark),
        )
        if given
    ]
    if unsupported:
        raise EngineError(
            f"--engine ray writes --json or --parquet only; {', '.join(unsupported)} "
            "need the local engine"
        )
    if (args.json is None) == (args.parquet is None):
        raise EngineError("--engine ray needs one output: --json FILE or --parquet DIR")
    if args.workers is not None and args.workers < 1:
        raise EngineError("--workers must be at least 1")


def run_ray(  # noqa: ANN001 - log: the CLI's logger
    args: argparse.Namespace,
    log,
    worker_class: type = AlignBatch,
    given: set[str] | None = None,
) -> int:
    """``--engine ray``: the exit code (0 all inputs done, 1 some failed, 2 the run could
    not be made, 130 interrupted). ``log`` is the CLI's one-line logger; ``given``, the
    options typed (face_alignment._given_options), for the local engine's warnings about
    options that do nothing."""
    try:
        import pyarrow  # noqa: F401
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        log.error(f"--engine ray needs Ray Data ({exc.name} is missing): {INSTALL_HINT}")
        return 2
    try:
        _check_args(args)
        inputs = expand_specs(args.input or [str(SAMPLE_IMAGE)])
        if not len(inputs):
            raise EngineError(f"{' '.join(args.input or [])}: no images found")
        if args.json not in (None, "-"):
            target = Path(args.json).resolve()
            if any(Path(p).resolve() == target for p in inputs.paths if not is_uri(p)):
                raise EngineError(f"{args.json}: refusing to overwrite an input file with --json")
        options = aligner_options(args)
        aligner = _check_models(options)
        sink = (
            JsonLinesSink(args.json, args.resume)
            if args.json is not None
            else ParquetSink(args.parquet, args.resume)
        )
    except EngineError as exc:
        log.error(str(exc))
        return 2
    from .run_options import describe, ignored_options

    for message in ignored_options(args, given or set(), None, aligner.runtime):
        log.warn(message)
    log.info(describe(aligner))
    started = False
    try:
        if args.quiet:
            # Ray's own C++ lines (core_worker.cc, raylet) below our errors: not with -q.
            os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        if args.address is None:
            log.info("starting the Ray runtime on this machine (about 10 s)")
        try:
            with _stderr_silenced(args.quiet):
                started = _connect(args.address)
        except Exception as exc:  # noqa: BLE001 - Ray raises plain Exceptions here
            where = args.address or "the local Ray runtime"
            log.error(f"cannot start or join {where}: {str(exc).splitlines()[0]}")
            return 2
        return _execute(ray, args, inputs, options, sink, log, worker_class)
    except ray.exceptions.RayError as exc:  # e.g. a batch past its retries
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        log.error(f"the Ray job failed: {first} (the records written are kept; --resume goes on)")
        return 2
    except KeyboardInterrupt:
        log.error("interrupted; the records written so far are kept (--resume goes on)")
        return 130
    finally:
        sink.close()
        if started:
            ray.shutdown()


def _check_models(options: dict):  # noqa: ANN202 - FaceAligner
    """Load the models once here: a bad model is a one-line error before any Ray work."""
    from .aligner import FaceAligner
    from .runtime import ModelError

    try:
        return FaceAligner(**options, threads=1)
    except (ModelError, InputError) as exc:
        raise EngineError(str(exc)) from None


def _execute(ray, args, inputs: Inputs, options: dict, sink, log, worker_class) -> int:  # noqa: ANN001
    from tqdm import tqdm

    threads = max(1, args.threads)
    capacity = max(1, int(ray.cluster_resources().get("CPU", 1)) // threads)
    workers = args.workers or capacity
    total = len(inputs)
    # Before any dataset is made: each one keeps a copy of the context it was made in.
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # output order = input order
    context.enable_progress_bars = False  # ours counts images
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its log is in the session dir
    skip: frozenset[str] = frozenset()
    parquet = None
    if inputs.parquet is not None:
        # The actors read the row groups themselves: a Ray Data read would start with a
        # listing task of one CPU, which never runs when the actors hold every CPU.
        skip = frozenset(sink.done)
        parquet = dataclasses.replace(inputs.parquet, row_groups=[])
        dataset = _row_groups_dataset(ray, inputs.parquet.row_groups)
        todo = total - sum(sink.done.values())
    else:
        remaining = sink.done.copy()
        kept = []
        for index, name in enumerate(inputs.paths):
            if remaining[name] > 0:
                remaining[name] -= 1
            else:
                kept.append((index, name))
        dataset, todo = _paths_dataset(ray, kept, workers), len(kept)
    if sink.done:
        log.info(f"resuming: {total - todo} of {total} inputs already written, {todo} to go")
    log.info(f"engine: ray, {workers} worker(s) of {threads} CPU(s) each, {todo} input(s)")
    if todo == 0:
        return 1 if sink.errors else 0

    size = {"size": workers} if args.workers else {"min_size": 1, "max_size": workers}
    results = dataset.map_batches(
        worker_class,
        batch_size=None,  # a block: some paths, or one row group
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(**size),
        num_cpus=threads,
        fn_constructor_kwargs={
            "options": options,
            "threads": threads,
            "cwd": os.getcwd(),
            "skip": skip,
            "parquet": parquet,
            "crops": None
            if args.crops is None
            else (os.path.abspath(args.crops), CropSettings.of(args.crop_template, args.crop_size)),
        },
        # Fault tolerance is Ray Data's default for actor pools, max_restarts=-1 and
        # max_task_retries=-1: a dead actor is restarted (its models loaded again) and
        # its unfinished batches rerun. Setting them here is deprecated (ray_remote_args).
    )
    seen = bytearray(total)
    written = failures = 0
    progress = tqdm(total=todo, unit="img", disable=args.quiet or todo < 2)
    try:
        for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
            for index, line in zip(batch["index"], batch["record"], strict=True):
                if seen[index]:
                    continue  # never twice, even if a retried batch came back twice
                seen[index] = 1
                record = json.loads(line)
                sink.write(record, line)
                written += 1
                progress.update()
                if record["error"] is not None:
                    failures += 1
                    progress.write(f"error: {record['error']}", file=sys.stderr)
                elif not record["faces"]:
                    progress.write(f"warning: {record['image']}: no face found", file=sys.stderr)
            sink.sync()
    finally:
        progress.close()
    if written != todo:
        log.error(f"{todo - written} input(s) missing from the output; run again with --resume")
        return 2
    return 1 if failures or sink.errors else 0


def _paths_dataset(ray, rows: list[tuple[int, str]], workers: int):  # noqa: ANN001, ANN202
    """Blocks of (index, name): enough of them for every worker to have several."""
    import pyarrow as pa

    per_block = max(1, min(MAX_ROWS_PER_BLOCK, math.ceil(len(rows) / (4 * workers))))
    table = pa.table(
        {
            "index": pa.array([i for i, _ in rows], pa.int64()),
            "name": pa.array([n for _, n in rows], pa.string()),
        }
    )
    blocks = [table.slice(start, per_block) for start in range(0, len(rows), per_block)]
    return ray.data.from_arrow(blocks or [table])


def _row_groups_dataset(ray, row_groups: list[tuple[str, int, int]]):  # noqa: ANN001, ANN202
    """A block per row group of a Parquet input: (index of its first row, file, row group)."""
    import pyarrow as pa

    starts, start = [], 0
    for _, _, rows in row_groups:
        starts.append(start)
        start += rows
    table = pa.table(
        {
            "index": pa.array(starts, pa.int64()),
            "file": pa.array([f for f, _, _ in row_groups], pa.string()),
            "row_group": pa.array([g for _, g, _ in row_groups], pa.int64()),
        }
    )
    return ray.data.from_arrow([table.slice(k, 1) for k in range(len(row_groups))] or [table])
